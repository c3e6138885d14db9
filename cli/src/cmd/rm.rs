//! `layerctl rm [--force] CONTAINER`: prints the removed container's name. A container
//! a live `layerctl run` runs is refused, even with `--force` (exit 4): its process
//! uses the mounted root ([`crate::runtime::live_run_of`]).

use layerstore::{LockMode, StoreError};

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, container: &str, force: bool) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let running = store
        .container_status(container)?
        .mountpoint
        .and_then(|root| crate::runtime::live_run_of(container, &root));
    if let Some(pid) = running {
        return Err(StoreError::ContainerRunning {
            name: container.to_owned(),
            pid,
        }
        .into());
    }
    let rec = store.remove_container(container, force)?;
    line(&rec.name)?;
    Ok(())
}
