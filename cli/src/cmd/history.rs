//! `layerctl history IMAGE`: the config's history entries matched to the image's
//! layers, bottom to top: `LAYER  DIFF ID  SIZE  CREATED  CREATED BY  COMMENT` (LAYER
//! is the layer's index from 0, `-` for an entry that made no layer).
//!
//! `--json`: `{"id", "layers": [{"chain_id","diff_id","size"}], "history":
//! [{"created","created_by","comment","empty_layer","layer": N|null}]}` (absent
//! fields are null).

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{human_size, json as print_json, table};

pub fn run(cfg: &Settings, image: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let h = store.image_history(image)?;
    if cfg.json {
        let layers: Vec<_> = h
            .layers
            .iter()
            .map(|l| {
                json!({
                    "chain_id": l.chain_id.as_str(),
                    "diff_id": l.diff_id.as_str(),
                    "size": l.size,
                })
            })
            .collect();
        let history: Vec<_> = h
            .entries
            .iter()
            .map(|e| {
                json!({
                    "created": e.created,
                    "created_by": e.created_by,
                    "comment": e.comment,
                    "empty_layer": e.empty_layer,
                    "layer": e.layer,
                })
            })
            .collect();
        print_json(&json!({"id": h.id.as_str(), "layers": layers, "history": history}))?;
        return Ok(());
    }
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let rows: Vec<Vec<String>> = h
        .entries
        .iter()
        .map(|e| {
            let (idx, diff, size) = match e.layer.and_then(|i| h.layers.get(i).map(|l| (i, l))) {
                Some((i, l)) => (i.to_string(), l.diff_id.to_string(), human_size(l.size)),
                None => ("-".into(), "-".into(), "0B".into()),
            };
            vec![
                idx,
                diff,
                size,
                opt(&e.created),
                opt(&e.created_by),
                opt(&e.comment),
            ]
        })
        .collect();
    table(
        &[
            "LAYER",
            "DIFF ID",
            "SIZE",
            "CREATED",
            "CREATED BY",
            "COMMENT",
        ],
        &rows,
    )?;
    Ok(())
}
