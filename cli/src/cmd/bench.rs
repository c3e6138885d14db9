//! `layerctl bench FILE [--runs N] [--dir DIR]`: times import, create, mount and
//! unmount of FILE with every driver this kernel supports, each in a fresh store under
//! DIR (default: the system temp dir), and prints a table of medians. The stores are
//! removed afterwards. Not a substitute for hyperfine, but a quick side-by-side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driver_core::id::random_hex;
use layerstore::{ImportOptions, ImportSource, LayerStore, LockMode};
use serde_json::json;

use crate::config::Settings;
use crate::open::registry;
use crate::output::{json as print_json, table};

/// Step names, in order.
const STEPS: [&str; 5] = ["import", "create", "mount", "umount", "rm+rmi"];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn one_run(
    driver: &str,
    cfg: &Settings,
    base: &Path,
    file: &Path,
) -> anyhow::Result<Vec<Duration>> {
    let root = base.join(format!("{driver}-{}", random_hex(4)));
    let reg = registry();
    let result = (|| -> anyhow::Result<Vec<Duration>> {
        let d = reg.open(driver, &root, &cfg.options_for(driver))?;
        let store = LayerStore::open(&root, d, LockMode::Exclusive)?;
        let mut times = Vec::new();
        let t = Instant::now();
        let rep = store.import(ImportSource::Path(file), &ImportOptions::default())?;
        times.push(t.elapsed());
        let img = rep
            .images
            .last()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no image imported"))?;
        let t = Instant::now();
        store.create_container("bench", img.as_str())?;
        times.push(t.elapsed());
        let t = Instant::now();
        store.mount_container("bench")?;
        times.push(t.elapsed());
        let t = Instant::now();
        store.unmount_container("bench")?;
        times.push(t.elapsed());
        let t = Instant::now();
        store.remove_container("bench", true)?;
        store.remove_image(img.as_str())?;
        times.push(t.elapsed());
        Ok(times)
    })();
    if let Err(e) = std::fs::remove_dir_all(&root) {
        tracing::warn!(root = %root.display(), error = %e, "removing bench store");
    }
    result
}

pub fn run(cfg: &Settings, file: &Path, runs: usize, dir: Option<&Path>) -> anyhow::Result<()> {
    let base: PathBuf = dir
        .map(Path::to_owned)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("layerctl-bench-{}", random_hex(4)));
    std::fs::create_dir_all(&base)?;
    let reg = registry();
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for (name, probe) in reg.probe_all(&base) {
        if let Err(e) = probe {
            rows.push(vec![name.to_owned(), format!("not supported: {e}")]);
            continue;
        }
        let mut per_step: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
        for _ in 0..runs.max(1) {
            let times = one_run(name, cfg, &base, file)?;
            for (i, t) in times.into_iter().enumerate() {
                per_step[i].push(t);
            }
        }
        let medians: Vec<Duration> = per_step.into_iter().map(median).collect();
        let mut row = vec![name.to_owned()];
        row.extend(medians.iter().map(|d| ms(*d)));
        rows.push(row);
        out.push(json!({
            "driver": name,
            "runs": runs.max(1),
            "median_ms": STEPS.iter().zip(&medians).map(|(s, d)| (s.to_string(), json!(d.as_secs_f64() * 1000.0))).collect::<serde_json::Map<_, _>>(),
        }));
    }
    if let Err(e) = std::fs::remove_dir_all(&base) {
        tracing::warn!(dir = %base.display(), error = %e, "removing bench dir");
    }
    if cfg.json {
        print_json(&serde_json::Value::Array(out))?;
    } else {
        let mut header = vec!["DRIVER"];
        header.extend(STEPS);
        for r in &mut rows {
            r.resize(header.len(), String::new());
        }
        table(&header, &rows)?;
    }
    Ok(())
}
