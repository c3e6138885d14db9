//! `layerctl mount CONTAINER` (prints the root path) and `layerctl umount CONTAINER`.

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::path_line;

pub fn mount(cfg: &Settings, container: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let path = store.mount_container(container)?;
    path_line(&path)?;
    Ok(())
}

pub fn umount(cfg: &Settings, container: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let left = store.unmount_container(container)?;
    tracing::debug!(container, left, "unmounted one reference");
    Ok(())
}
