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
