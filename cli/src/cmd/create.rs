//! `layerctl create CONTAINER IMAGE`: prints the container name.

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, container: &str, image: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let rec = store.create_container(container, image)?;
    line(&rec.name)?;
    Ok(())
}
