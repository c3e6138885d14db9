//! `layerctl tag IMAGE NAME` (prints the image id) and `layerctl untag NAME` (prints
//! `Untagged: <name>`; the image stays, even without names).

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn tag(cfg: &Settings, image: &str, name: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let id = store.tag_image(image, name)?;
    line(id)?;
    Ok(())
}

pub fn untag(cfg: &Settings, name: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let (_, removed) = store.untag_image(name)?;
    line(format!("Untagged: {removed}"))?;
    Ok(())
}
