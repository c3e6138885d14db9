//! `layerctl bench`: the same scenario on the same input with every driver this kernel
//! supports (and, with `--peers`, the tools users would pick instead), in throwaway
//! stores of its own, never the user's root.
//!
//! Scenario (one run): import, create, mount, cold full read, warm full read, stat walk,
//! small-file writes, copy-up of large files, commit, umount, rm. Each target runs N
//! times; the targets are interleaved run by run (and their order rotates) so machine
//! drift hits all alike. Output: a table with ratios to the fastest per step,
//! `results.json` ([`report`] documents the schema), a chart (`chart.svg`, `chart.png`).
//!
//! Files: [`input`] (generated input), [`work`] (what runs inside the mount),
//! [`targets`] (drivers and peers), [`report`] (statistics, table, JSON), [`chart`].

pub mod chart;
pub mod input;
pub mod report;
pub mod targets;
pub mod work;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use driver_core::id::random_hex;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Settings;
use crate::open::registry;
use targets::{RunCtx, Target};

/// The scenario's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Import the input tar as an image (DiffID computed).
    Import,
    /// Create a container of the image.
    Create,
    /// Mount the container's root filesystem.
    Mount,
    /// Read every regular file to the end after dropping the page cache.
    ColdRead,
    /// The same read again, from the cache.
    WarmRead,
    /// `lstat` of every entry.
    StatWalk,
    /// Write N new 4 KiB files.
    SmallWrites,
    /// Append one byte to each of the 8 largest files (copies them up).
    CopyUp,
    /// Commit the container's changes as a new image.
    Commit,
    /// Unmount the container.
    Umount,
    /// Remove the container and the images.
    Rm,
}

impl Step {
    /// Every step, in scenario order.
    pub const ALL: [Step; 11] = [
        Step::Import,
        Step::Create,
        Step::Mount,
        Step::ColdRead,
        Step::WarmRead,
        Step::StatWalk,
        Step::SmallWrites,
        Step::CopyUp,
        Step::Commit,
        Step::Umount,
        Step::Rm,
    ];

    /// Name in the table, JSON and chart.
    pub fn name(self) -> &'static str {
        match self {
            Step::Import => "import",
            Step::Create => "create",
            Step::Mount => "mount",
            Step::ColdRead => "cold read",
            Step::WarmRead => "warm read",
            Step::StatWalk => "stat walk",
            Step::SmallWrites => "small writes",
            Step::CopyUp => "copy-up",
            Step::Commit => "commit",
            Step::Umount => "umount",
            Step::Rm => "rm",
        }
    }
}

/// Options of `layerctl bench` (see the clap struct in lib.rs).
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Drivers to run (None: every driver compiled in).
    pub drivers: Option<Vec<String>>,
    /// The input tar (None: generate one).
    pub image: Option<PathBuf>,
    /// Runs per target (None: 3, or 1 with `quick`).
    pub runs: Option<usize>,
    /// Where results.json and the charts go.
    pub out: PathBuf,
    /// Where the throwaway stores go (None: /var/tmp).
    pub dir: Option<PathBuf>,
    /// Also run the peers.
    pub peers: bool,
    /// Tiny generated input, one run.
    pub quick: bool,
}

/// Timings collected, per target and step: milliseconds of each run.
#[derive(Debug)]
pub struct Sink {
    times: BTreeMap<(String, Step), Vec<f64>>,
    pb: ProgressBar,
}

impl Sink {
    /// Runs `f` and records its wall time for (`t`, `step`).
    pub fn time<T>(
        &mut self,
        t: &Target,
        step: Step,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.pb
            .set_message(format!("{}: {}", t.name(), step.name()));
        let start = Instant::now();
        let v = f().with_context(|| format!("bench {}: {}", t.name(), step.name()))?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        self.times.entry((t.name(), step)).or_default().push(ms);
        self.pb.inc(1);
        Ok(v)
    }
}

/// Finds `program` in `$PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The `n` largest regular files of the input tar (paths relative to the root).
fn largest_files(tar_path: &Path, n: usize) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let f =
        std::fs::File::open(tar_path).with_context(|| format!("open {}", tar_path.display()))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut all = Vec::new();
    for e in ar.entries().context("read input tar")? {
        let e = e.context("read input tar entry")?;
        if e.header().entry_type() == tar::EntryType::Regular {
            all.push((e.path().context("tar entry path")?.into_owned(), e.size()));
        }
    }
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    Ok(all)
}

/// Runs the benchmark (see the module doc).
pub fn run(cfg: &Settings, opts: &BenchOpts) -> anyhow::Result<()> {
    let base = opts
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join(format!("layerctl-bench-{}", random_hex(4)));
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let res = run_in(cfg, opts, &base);
    work::remove_scratch(&base);
    res
}

fn run_in(cfg: &Settings, opts: &BenchOpts, base: &Path) -> anyhow::Result<()> {
    let load_start = report::loadavg();
    let runs = opts.runs.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
    // Input.
    let input = match &opts.image {
        Some(p) => input::stats(p, "file", None)?,
        None => {
            let shape = if opts.quick {
                input::Shape::QUICK
            } else {
                input::Shape::DEFAULT
            };
            let p = base.join("generated.tar");
            input::generate(&shape, &p)?;
            input::stats(&p, "generated", Some(shape))?
        }
    };
    let large = if input.image_archive {
        Vec::new()
    } else {
        largest_files(&input.path, 8)?
    };
    let small_writes = if opts.quick { 50 } else { 1000 };

    // Targets, and what is skipped with why.
    let reg = registry();
    let mut targets = Vec::new();
    let mut skipped: Vec<(String, &'static str, String)> = Vec::new();
    let probe_dir = base.join("probe");
    for (name, probe) in reg.probe_all(&probe_dir) {
        if let Some(want) = &opts.drivers {
            if !want.iter().any(|w| w == name) {
                continue;
            }
        }
        match probe {
            Ok(()) => targets.push(Target::Driver(name)),
            Err(e) => skipped.push((
                name.to_owned(),
                "driver",
                format!("not supported here: {e}"),
            )),
        }
    }
    if let Some(want) = &opts.drivers {
        for w in want {
            reg.get(w)?;
        }
    }
    work::remove_scratch(&probe_dir);
    if opts.peers {
        let mut peers = vec![Target::TarX];
        for d in ["overlay", "vfs"] {
            peers.push(Target::ContainersStorage(d));
        }
        peers.push(Target::KernelOverlay);
        peers.push(Target::FuseOverlayfs);
        for p in peers {
            let prog = p.program().unwrap_or_default();
            if input.image_archive {
                skipped.push((
                    p.name(),
                    "peer",
                    "the input is an image archive, not a flat root filesystem tar".into(),
                ));
            } else if which(prog).is_none() {
                let how = match p {
                    Target::FuseOverlayfs => " (apt-get install fuse-overlayfs)",
                    Target::ContainersStorage(_) => " (apt-get install containers-storage)",
                    _ => "",
                };
                skipped.push((p.name(), "peer", format!("`{prog}` not found in PATH{how}")));
            } else {
                targets.push(p);
            }
        }
    }
    anyhow::ensure!(
        !targets.is_empty(),
        "nothing to benchmark: no driver is supported here"
    );

    // Can we drop the page cache (cold read)?
    let cold = match work::drop_caches() {
        Ok(()) => true,
        Err(e) => {
            skipped.push((
                Step::ColdRead.name().into(),
                "step",
                format!("not measured: {e:#} (needs root)"),
            ));
            false
        }
    };
    let total: u64 = targets
        .iter()
        .map(|t| {
            t.steps()
                .iter()
                .filter(|s| cold || **s != Step::ColdRead)
                .count() as u64
        })
        .sum::<u64>()
        * runs as u64;
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  run {prefix}  {msg}",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let mut sink = Sink {
        times: BTreeMap::new(),
        pb,
    };
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for r in 0..runs {
        sink.pb.set_prefix(format!("{}/{runs}", r + 1));
        // Rotate the order each run: no target always goes first (cold disk, fresh
        // allocator) or last.
        let n = targets.len();
        for k in 0..n {
            let t = &targets[(k + r) % n];
            if failed.contains_key(&t.name()) {
                continue;
            }
            let ctx = RunCtx {
                cfg,
                input: &input.path,
                large: &large,
                small_writes,
                cold,
                scratch: base,
                run: r,
            };
            if let Err(e) = targets::run_one(t, &ctx, &mut sink) {
                match t {
                    // A driver failing is a bug: stop.
                    Target::Driver(_) => return Err(e),
                    // A peer failing (not set up for this kernel, say) is reported.
                    _ => {
                        tracing::warn!(peer = %t.name(), error = %format!("{e:#}"), "bench: peer failed");
                        failed.insert(t.name(), format!("failed: {e:#}"));
                    }
                }
            }
        }
    }
    sink.pb.finish_and_clear();
    for (name, why) in &failed {
        sink.times.retain(|(t, _), _| t != name);
        skipped.push((name.clone(), "peer", why.clone()));
    }
    targets.retain(|t| !failed.contains_key(&t.name()));

    let results = report::Results::new(
        &targets,
        sink.times,
        &skipped,
        runs,
        &input,
        base,
        &load_start,
    );
    let json_path = opts.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    chart::draw(
        &results,
        &opts.out.join("chart.svg"),
        &opts.out.join("chart.png"),
    )?;
    if cfg.json {
        crate::output::json(&serde_json::to_value(&results)?)?;
    } else {
        report::print_table(&results)?;
        crate::output::line(format_args!(
            "results: {}, chart: {}, {}",
            json_path.display(),
            opts.out.join("chart.svg").display(),
            opts.out.join("chart.png").display()
        ))?;
    }
    Ok(())
}
