//! `layerctl info`: root, driver, backing filesystem, drivers this kernel supports.

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::open::{open_store, registry};
use crate::output::{json as print_json, line};

pub fn run(cfg: &Settings) -> anyhow::Result<()> {
    let store = open_store(cfg, LockMode::Shared)?;
    let reg = registry();
    let probes: Vec<(String, bool, Option<String>)> = reg
        .probe_all(store.root())
        .into_iter()
        .map(|(name, r)| (name.to_owned(), r.is_ok(), r.err().map(|e| e.to_string())))
        .collect();
    let status = store.driver().status();
    let fs = store.backing_filesystem();
    if cfg.json {
        let v = json!({
            "root": store.root().to_string_lossy(),
            "driver": store.driver().name(),
            "backing_filesystem": fs,
            "drivers": probes.iter().map(|(n, ok, why)| json!({"name": n, "supported": ok, "reason": why})).collect::<Vec<_>>(),
            "status": status.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        });
        print_json(&v)?;
        return Ok(());
    }
    line(format!("Root: {}", store.root().display()))?;
    line(format!("Driver: {}", store.driver().name()))?;
    line(format!("Backing filesystem: {fs}"))?;
    line("Drivers:")?;
    for (n, ok, why) in &probes {
        match why {
            Some(w) if !ok => line(format!("  {n}: not supported: {w}"))?,
            _ => line(format!("  {n}: supported"))?,
        }
    }
    line("Status:")?;
    for (k, v) in &status {
        line(format!("  {k}: {v}"))?;
    }
    Ok(())
}
