//! `layerctl layers [IMAGE]`: all layers, or the image's chain bottom to top.

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{human_size, json as print_json, table};

pub fn run(cfg: &Settings, image: Option<&str>) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let layers = match image {
        None => store.layers()?,
        Some(r) => {
            let id = store.resolve_image(r)?;
            let img = store.image(&id)?;
            match img.top_layer() {
                Some(top) => store.layer_chain(top)?,
                None => Vec::new(),
            }
        }
    };
    if cfg.json {
        let arr: Vec<_> = layers
            .iter()
            .map(|l| {
                json!({
                    "chain_id": l.chain_id.as_str(),
                    "diff_id": l.diff_id.as_str(),
                    "cache_id": l.cache_id.as_str(),
                    "parent": l.parent.as_ref().map(|p| p.as_str()),
                    "size": l.size,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(arr))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = layers
        .iter()
        .map(|l| {
            vec![
                l.chain_id.short().to_owned(),
                l.diff_id.short().to_owned(),
                l.cache_id.as_str().chars().take(12).collect(),
                l.parent
                    .as_ref()
                    .map(|p| p.short().to_owned())
                    .unwrap_or_else(|| "-".into()),
                human_size(l.size),
            ]
        })
        .collect();
    table(
        &["CHAIN ID", "DIFF ID", "CACHE ID", "PARENT", "SIZE"],
        &rows,
    )?;
    Ok(())
}
