//! `layerctl gc [--dry-run]`: removes unused layers, orphan driver layers and leftovers
//! of interrupted work. Prints `Deleted layer: <chain id>`, `Deleted orphan layer:
//! <cache id>`, `Deleted leftover: <path>` (dry run: `Would delete ...`), then
//! `Total reclaimed space: <N> bytes` (dry run: `Would reclaim: <N> bytes`).
//!
//! `--json`: `{"dry_run", "layers": [chain id], "orphans": [cache id], "leftovers":
//! [path], "bytes"}`.

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::open_store;
use crate::output::{json as print_json, line};

pub fn run(cfg: &Settings, dry_run: bool) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Exclusive)?;
    let r = store.gc(dry_run)?;
    if cfg.json {
        print_json(&json!({
            "dry_run": r.dry_run,
            "layers": r.layers.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "orphans": r.orphans.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "leftovers": r.leftovers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "bytes": r.bytes,
        }))?;
        return Ok(());
    }
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    for c in &r.layers {
        line(format!("{verb} layer: {c}"))?;
    }
    for id in &r.orphans {
        line(format!("{verb} orphan layer: {id}"))?;
    }
    for p in &r.leftovers {
        line(format!("{verb} leftover: {}", p.display()))?;
    }
    if dry_run {
        line(format!("Would reclaim: {} bytes", r.bytes))?;
    } else {
        line(format!("Total reclaimed space: {} bytes", r.bytes))?;
    }
    Ok(())
}
