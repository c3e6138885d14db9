//! `layerctl rmi IMAGE`: Docker's rmi. Prints `Untagged: <name>` per name taken away,
//! then, when the image itself went, `Deleted: <image id>` and `Deleted layer: <chain
//! id>` per freed layer. A name of an image with other names only untags it.

use layerstore::LockMode;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, image: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let removed = store.remove_image(image)?;
    for n in &removed.untagged {
        line(format!("Untagged: {n}"))?;
    }
    if removed.deleted {
        line(format!("Deleted: {}", removed.id))?;
        for l in &removed.layers {
            line(format!("Deleted layer: {l}"))?;
        }
    }
    Ok(())
}
