//! `layerctl images`: NAME/ID/LAYERS/SIZE, one row per name (`<none>` when unnamed).

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{human_size, json as print_json, table};

pub fn run(cfg: &Settings) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let images = store.images()?;
    if cfg.json {
        let mut arr = Vec::new();
        for i in &images {
            arr.push(json!({
                "id": i.id.as_str(),
                "names": i.names,
                "top_layer": i.top_layer().map(|c| c.as_str()),
                "layers": i.chain.len(),
                "size": store.image_size(i)?,
            }));
        }
        print_json(&serde_json::Value::Array(arr))?;
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in &images {
        let size = human_size(store.image_size(i)?);
        let names: Vec<&str> = if i.names.is_empty() {
            vec!["<none>"]
        } else {
            i.names.iter().map(String::as_str).collect()
        };
        for n in names {
            rows.push(vec![
                n.to_owned(),
                i.id.short().to_owned(),
                i.chain.len().to_string(),
                size.clone(),
            ]);
        }
    }
    table(&["NAME", "ID", "LAYERS", "SIZE"], &rows)?;
    Ok(())
}
