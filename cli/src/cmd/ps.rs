//! `layerctl ps`: containers with their mount state.

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{json as print_json, table};

pub fn run(cfg: &Settings) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let list = store.container_statuses()?;
    if cfg.json {
        let arr: Vec<_> = list
            .iter()
            .map(|c| {
                json!({
                    "name": c.record.name.as_str(),
                    "image": c.record.image.as_str(),
                    "mount_id": c.record.mount_id.as_str(),
                    "init_id": c.record.init_id.as_str(),
                    "mount_count": c.mount_count,
                    "mountpoint": c.mountpoint.as_ref().map(|p| p.to_string_lossy()),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(arr))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.record.name.to_string(),
                c.record.image.short().to_owned(),
                c.record.mount_id.as_str().chars().take(12).collect(),
                c.mount_count.to_string(),
                c.mountpoint
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["NAME", "IMAGE", "MOUNT ID", "MOUNTS", "MOUNTPOINT"],
        &rows,
    )?;
    Ok(())
}
