//! `layerctl diff CONTAINER`: `docker diff`-style changes of the read-write layer
//! against the init layer (so the init files never show).
//!
//! Text: one `A|C|D PATH` line per change, the path escaped as GNU `ls -b` does
//! (`driver_core::escape`: `\\`, `\n`, `\377` for a byte 0xff that is not UTF-8), so
//! two different names never print the same and a name never spans lines.
//!
//! `--json`: `[{"kind":"A|C|D","path"}]`; `path` is the exact name when it is UTF-8.
//! A name that is not UTF-8 has `path` in the text form above and also
//! `"path_hex"`: its exact bytes in lowercase hex (`/x\377` -> `"2f78ff"`).

use std::os::unix::ffi::OsStrExt;

use driver_core::escape::escape_path;
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
                match c.path.to_str() {
                    Some(p) => serde_json::json!({"kind": kind, "path": p}),
                    None => serde_json::json!({
                        "kind": kind,
                        "path": escape_path(&c.path),
                        "path_hex": hex_of(c.path.as_os_str().as_bytes()),
                    }),
                }
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

/// Lowercase hex of `bytes`.
fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
