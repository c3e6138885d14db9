//! `layerctl diff CONTAINER`: `docker diff`-style changes of the read-write layer
//! against the init layer (so the init files never show).

use layerstore::{ContainerName, LockMode};

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, container: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let rec = store.container(&ContainerName::new(container)?)?;
    for c in store.driver().changes(&rec.mount_id, Some(&rec.init_id))? {
        line(c)?;
    }
    Ok(())
}
