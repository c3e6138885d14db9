//! `layerctl commit CONTAINER [--name NAME] [--message M]`: the container's changes
//! become a new layer on top of its image; prints the new image id (`sha256:<hex>`).
//! With `--json`: `{"image", "layer": {"chain_id", "diff_id", "size"}, "new_layer"}`.

use layerstore::{CommitOptions, LockMode};
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{json as print_json, line};

pub fn run(
    cfg: &Settings,
    container: &str,
    name: Option<&str>,
    message: Option<&str>,
) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let opts = CommitOptions {
        name: name.map(str::to_owned),
        message: message.map(str::to_owned),
    };
    let r = store.commit(container, &opts)?;
    if cfg.json {
        print_json(&json!({
            "image": r.image.as_str(),
            "layer": {
                "chain_id": r.layer.chain_id.as_str(),
                "diff_id": r.layer.diff_id.as_str(),
                "size": r.layer.size,
            },
            "new_layer": r.new_layer,
        }))?;
    } else {
        line(r.image)?;
    }
    Ok(())
}
