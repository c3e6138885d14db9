//! `layerctl diff CONTAINER`: `docker diff`-style changes of the read-write layer
//! against the init layer (so the init files never show). `--json`:
//! `[{"kind":"A|C|D","path"}]` (a path that is not UTF-8 has U+FFFD for its bad bytes).

use layerstore::{ContainerName, LockMode};

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{json as print_json, line};

pub fn run(cfg: &Settings, container: &str) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let rec = store.container(&ContainerName::new(container)?)?;
    let changes = store.driver().changes(&rec.mount_id, Some(&rec.init_id))?;
    if cfg.json {
        let arr: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| {
                // Display is "<kind> <path>": its first character is the kind.
                let kind = c.to_string().chars().next().unwrap_or('?').to_string();
                serde_json::json!({"kind": kind, "path": c.path.to_string_lossy()})
            })
            .collect();
        print_json(&serde_json::Value::Array(arr))?;
        return Ok(());
    }
    for c in changes {
        line(c)?;
    }
    Ok(())
}
