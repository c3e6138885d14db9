//! `layerctl rm [--force] CONTAINER`: prints the removed container's name.

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, container: &str, force: bool) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let rec = store.remove_container(container, force)?;
    line(&rec.name)?;
    Ok(())
}
