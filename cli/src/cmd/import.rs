//! `layerctl import FILE|- [--name NAME]`: prints the imported image id(s), the image
//! last. A progress bar (bytes of input) is drawn on stderr when it is a terminal.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use layerstore::{ImportOptions, ImportSource, LockMode};

use crate::config::Settings;
use crate::open::open_store;
use crate::output::line;

pub fn run(cfg: &Settings, file: &str, name: Option<&str>) -> anyhow::Result<()> {
    // Staged: the store lock is taken only to publish, so other commands (and other
    // imports) do not wait for this one.
    let store = open_store(cfg, LockMode::Staged)?;
    let bar = if std::io::stderr().is_terminal() {
        let total = if file == "-" {
            None
        } else {
            std::fs::metadata(file)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        };
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        Some(bar)
    } else {
        None
    };
    let progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let opts = ImportOptions {
        name: name.map(str::to_owned),
        progress: bar.as_ref().map(|_| &progress as &dyn Fn(u64)),
        limits: cfg.limits,
    };
    let report = if file == "-" {
        let mut stdin = std::io::stdin().lock();
        store.import(ImportSource::Reader(&mut stdin), &opts)
    } else {
        store.import(ImportSource::Path(Path::new(file)), &opts)
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = report?;
    tracing::debug!(
        format = ?report.format,
        new = report.new_layers,
        existing = report.existing_layers,
        "imported"
    );
    for id in &report.images {
        line(id)?;
    }
    Ok(())
}
