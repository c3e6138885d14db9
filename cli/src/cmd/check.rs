//! `layerctl check [--repair]`: exit 0 when consistent (after repair), else 8 listing
//! the problems (one a line on stdout; `--json`: `{"problems":[..],"repaired":[..]}`).

use layerstore::LockMode;
use serde_json::json;

use crate::config::Settings;
use crate::exit::CheckFailed;
use crate::open::open_store;
use crate::output::{json as print_json, line};

pub fn run(cfg: &Settings, repair: bool) -> anyhow::Result<()> {
    let report = if repair {
        // The exclusive open itself finishes interrupted work (tmp/, driver cleanup).
        open_store(cfg, LockMode::Exclusive)?.repair()?
    } else {
        open_store(cfg, LockMode::Shared)?.check()?
    };
    if cfg.json {
        print_json(&json!({
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
    if report.is_clean() {
        Ok(())
    } else {
        Err(CheckFailed(report.problems.len()).into())
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
