//! `layerctl rmi IMAGE`: removes the image under all its names; prints
//! `Deleted: <image id>` then `Deleted layer: <chain id>` per freed layer.

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, image: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let removed = store.remove_image(image)?;
    line(format!("Deleted: {}", removed.id))?;
    for l in &removed.layers {
        line(format!("Deleted layer: {l}"))?;
    }
    Ok(())
}
