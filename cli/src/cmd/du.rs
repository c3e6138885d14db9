//! `layerctl du`: disk usage from recorded layer sizes plus the containers' changes.
//! Text: an IMAGES table (NAME/ID/SIZE/UNIQUE/SHARED/CONTAINERS, one row per name), a
//! CONTAINERS table (NAME/IMAGE/RW SIZE) and a totals line.
//!
//! `--json`: `{"images": [{"id","names","size","unique_size","shared_size",
//! "containers"}], "containers": [{"name","image","rw_size"}], "totals": {"layers",
//! "layers_size","rw_size","total"}}` (sizes in bytes).

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{human_size, json as print_json, line, table};

pub fn run(cfg: &Settings) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let du = store.disk_usage()?;
    if cfg.json {
        let images: Vec<_> = du
            .images
            .iter()
            .map(|i| {
                json!({
                    "id": i.id.as_str(),
                    "names": i.names,
                    "size": i.size,
                    "unique_size": i.unique_size,
                    "shared_size": i.shared_size,
                    "containers": i.containers,
                })
            })
            .collect();
        let containers: Vec<_> = du
            .containers
            .iter()
            .map(|c| json!({"name": c.name.as_str(), "image": c.image.as_str(), "rw_size": c.rw_size}))
            .collect();
        print_json(&json!({
            "images": images,
            "containers": containers,
            "totals": {
                "layers": du.layers,
                "layers_size": du.layers_size,
                "rw_size": du.rw_size,
                "total": du.layers_size + du.rw_size,
            },
        }))?;
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in &du.images {
        let names: Vec<&str> = if i.names.is_empty() {
            vec!["<none>"]
        } else {
            i.names.iter().map(String::as_str).collect()
        };
        for n in names {
            rows.push(vec![
                n.to_owned(),
                i.id.short().to_owned(),
                human_size(i.size),
                human_size(i.unique_size),
                human_size(i.shared_size),
                i.containers.to_string(),
            ]);
        }
    }
    table(
        &["NAME", "ID", "SIZE", "UNIQUE", "SHARED", "CONTAINERS"],
        &rows,
    )?;
    line("")?;
    let rows: Vec<Vec<String>> = du
        .containers
        .iter()
        .map(|c| {
            vec![
                c.name.to_string(),
                c.image.short().to_owned(),
                human_size(c.rw_size),
            ]
        })
        .collect();
    table(&["CONTAINER", "IMAGE", "RW SIZE"], &rows)?;
    line("")?;
    line(format!(
        "Total: {} in {} layer(s), {} in container changes, {} in all",
        human_size(du.layers_size),
        du.layers,
        human_size(du.rw_size),
        human_size(du.layers_size + du.rw_size)
    ))?;
    Ok(())
}
