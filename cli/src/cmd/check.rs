//! `layerctl check [--repair]`: lists problems one a line on stdout (`problem: ...`,
//! after a repair first `repaired: ...` for everything fixed or removed; `--json`:
//! `{"status":"clean|repaired|damaged","problems":[..],"repaired":[..]}`).
//!
//! Exit codes: 0 clean (nothing found); 9 repaired (`--repair` found problems and fixed
//! them all: the store is consistent now); 8 damaged (problems remain: without
//! `--repair`, any problem; with it, what it could not fix).

use layerstore::{CheckStatus, LockMode};
use serde_json::json;

use crate::config::Settings;
use crate::exit::{CheckFailed, CheckRepaired};
use crate::open::{open_store, open_store_for_repair};
use crate::output::{json as print_json, line};

pub fn run(cfg: &Settings, repair: bool) -> anyhow::Result<()> {
    let report = if repair {
        open_store_for_repair(cfg)?.repair()?
    } else {
        open_store(cfg, LockMode::Shared)?.check()?
    };
    let status = report.status();
    if cfg.json {
        print_json(&json!({
            "status": match status {
                CheckStatus::Clean => "clean",
                CheckStatus::Repaired => "repaired",
                CheckStatus::Damaged => "damaged",
            },
            "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "repaired": report.repaired.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }))?;
    } else {
        for p in &report.repaired {
            line(format!("repaired: {p}"))?;
        }
        for p in &report.problems {
            line(format!("problem: {p}"))?;
        }
    }
    match status {
        CheckStatus::Clean => Ok(()),
        CheckStatus::Repaired => Err(CheckRepaired(report.repaired.len()).into()),
        CheckStatus::Damaged => Err(CheckFailed(report.problems.len()).into()),
    }
}

/// `check --verify-content`: the check above, then every layer's DiffID recomputed from
/// its content (tar-split reassembly or the exporter, streaming), one
/// `problem: layer <chain> changed on disk: ...` line per changed layer (`--json`: a
/// second document `{"changed_layers":[{"layer","error"}]}`). Exit 8 when either part
/// found problems.
pub fn run_verifying_content(cfg: &Settings, repair: bool) -> anyhow::Result<()> {
    let first = run(cfg, repair);
    let failed = match first {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<CheckFailed>() {
            Some(CheckFailed(n)) => *n,
            None => return Err(e),
        },
    };
    let store = open_store(cfg, LockMode::Shared)?;
    let changed = store.verify_contents()?;
    if cfg.json {
        print_json(&json!({
            "changed_layers": changed.iter().map(|(c, e)| json!({
                "layer": c.as_str(),
                "error": e.to_string(),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for (_, e) in &changed {
            line(format!("problem: {e}"))?;
        }
    }
    match failed + changed.len() {
        0 => Ok(()),
        n => Err(CheckFailed(n).into()),
    }
}
