//! Statistics, the terminal table and `results.json`.
//!
//! ## `results.json` schema (`"schema": "layerctl-bench/1"`)
//! ```text
//! {
//!   "schema": "layerctl-bench/1",
//!   "unix_time": 1764560000,                 when the run finished (seconds)
//!   "command": ["layerctl", "bench", ...],   argv
//!   "machine": { "hostname", "cpu" (model name), "cpus", "memory_bytes",
//!                "kernel" (uname -r), "load_start", "load_end" (/proc/loadavg's three
//!                load averages when the run started and ended) },
//!   "filesystem": { "dir" (where the throwaway stores were), "type" (statfs name,
//!                   e.g. "ext4", "tmpfs") },
//!   "input": { "path", "origin" ("file" | "generated"), "shape" (generator's, or null),
//!              "tar_bytes", "content_bytes", "files", "dirs", "symlinks",
//!              "hard_links", "other", "image_archive" },
//!   "runs": 3,                               runs per target
//!   "steps": ["import", "create", ...],      scenario order
//!   "targets": [ { "name": "overlay2", "kind": "driver" | "peer",
//!                  "steps": ["import", ...] } ],          what was measured
//!   "skipped": [ { "name", "kind": "driver" | "peer" | "step", "reason" } ],
//!   "results": [ { "step", "target", "runs_ms": [..], "median_ms", "min_ms",
//!                  "max_ms", "ratio_to_fastest" } ]       per step, per target
//! }
//! ```
//! Times are wall-clock milliseconds of one step; `ratio_to_fastest` is this target's
//! median over the smallest median of the step (1.0 for the fastest).

use std::path::Path;

use serde::Serialize;

use super::input::InputStats;
use super::targets::Target;
use super::Step;

/// The machine the run was on.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub hostname: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    /// /proc/loadavg when the run started and when it ended (a busy machine is noisy).
    pub load_start: String,
    pub load_end: String,
}

/// Where the stores were.
#[derive(Debug, Serialize)]
pub struct Filesystem {
    pub dir: String,
    #[serde(rename = "type")]
    pub fstype: String,
}

/// A measured target.
#[derive(Debug, Serialize)]
pub struct TargetInfo {
    pub name: String,
    pub kind: &'static str,
    pub steps: Vec<&'static str>,
}

/// Something not measured, and why.
#[derive(Debug, Serialize)]
pub struct Skipped {
    pub name: String,
    pub kind: &'static str,
    pub reason: String,
}

/// One step of one target.
#[derive(Debug, Serialize)]
pub struct StepResult {
    pub step: &'static str,
    pub target: String,
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub ratio_to_fastest: f64,
}

/// Everything `results.json` holds (schema in the module doc).
#[derive(Debug, Serialize)]
pub struct Results {
    pub schema: &'static str,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub machine: Machine,
    pub filesystem: Filesystem,
    pub input: InputStats,
    pub runs: usize,
    pub steps: Vec<&'static str>,
    pub targets: Vec<TargetInfo>,
    pub skipped: Vec<Skipped>,
    pub results: Vec<StepResult>,
}

/// Median of a non-empty list (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn first_line(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn machine(load_start: &str) -> Machine {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        hostname: read("/proc/sys/kernel/hostname"),
        cpu: first_line("/proc/cpuinfo", "model name").unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_bytes: first_line("/proc/meminfo", "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
            .unwrap_or(0),
        kernel: read("/proc/sys/kernel/osrelease"),
        load_start: load_start.to_owned(),
        load_end: loadavg(),
    }
}

/// The three load averages of /proc/loadavg ("1.00 0.80 0.50").
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn fstype(dir: &Path) -> String {
    driver_core::fsutil::filesystem_name(dir)
}

impl Results {
    /// Builds the report from the raw timings.
    pub fn new(
        targets: &[Target],
        times: std::collections::BTreeMap<(String, Step), Vec<f64>>,
        skipped: &[(String, &'static str, String)],
        runs: usize,
        input: &InputStats,
        base: &Path,
        load_start: &str,
    ) -> Results {
        let mut results = Vec::new();
        for step in Step::ALL {
            let rows: Vec<(String, &Vec<f64>)> = targets
                .iter()
                .filter_map(|t| times.get(&(t.name(), step)).map(|v| (t.name(), v)))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            let fastest = rows
                .iter()
                .map(|(_, v)| median(v))
                .fold(f64::INFINITY, f64::min);
            for (name, v) in rows {
                let m = median(v);
                results.push(StepResult {
                    step: step.name(),
                    target: name,
                    runs_ms: v.clone(),
                    median_ms: m,
                    min_ms: v.iter().copied().fold(f64::INFINITY, f64::min),
                    max_ms: v.iter().copied().fold(0.0, f64::max),
                    ratio_to_fastest: if fastest > 0.0 { m / fastest } else { 1.0 },
                });
            }
        }
        Results {
            schema: "layerctl-bench/1",
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            command: std::env::args().collect(),
            machine: machine(load_start),
            filesystem: Filesystem {
                dir: base.display().to_string(),
                fstype: fstype(base),
            },
            input: input.clone(),
            runs,
            steps: Step::ALL.iter().map(|s| s.name()).collect(),
            targets: targets
                .iter()
                .map(|t| TargetInfo {
                    name: t.name(),
                    kind: t.kind(),
                    steps: t.steps().iter().map(|s| s.name()).collect(),
                })
                .collect(),
            skipped: skipped
                .iter()
                .map(|(n, k, r)| Skipped {
                    name: n.clone(),
                    kind: k,
                    reason: r.clone(),
                })
                .collect(),
            results,
        }
    }
}

/// Milliseconds with 3 significant digits.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

/// The terminal table: one row per step and target, grouped by step, fastest first.
pub fn print_table(r: &Results) -> std::io::Result<()> {
    use crate::output::line;
    line(format_args!(
        "{} runs per target, targets interleaved; input {} ({} files, {} MB in a {} MB tar); stores on {} ({})",
        r.runs,
        r.input.path.display(),
        r.input.files,
        r.input.content_bytes / 1_000_000,
        r.input.tar_bytes / 1_000_000,
        r.filesystem.dir,
        r.filesystem.fstype
    ))?;
    let header = [
        "STEP",
        "TARGET",
        "MEDIAN ms",
        "MIN ms",
        "MAX ms",
        "x FASTEST",
    ];
    let mut rows = Vec::new();
    for step in &r.steps {
        let mut of: Vec<&StepResult> = r.results.iter().filter(|x| x.step == *step).collect();
        of.sort_by(|a, b| a.median_ms.total_cmp(&b.median_ms));
        for (i, x) in of.iter().enumerate() {
            rows.push(vec![
                if i == 0 {
                    (*step).to_owned()
                } else {
                    String::new()
                },
                x.target.clone(),
                fmt_ms(x.median_ms),
                fmt_ms(x.min_ms),
                fmt_ms(x.max_ms),
                format!("{:.2}x", x.ratio_to_fastest),
            ]);
        }
    }
    crate::output::table(&header, &rows)?;
    for s in &r.skipped {
        line(format_args!("skipped {} {}: {}", s.kind, s.name, s.reason))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratios_are_to_the_fastest_median_of_each_step() {
        let targets = [
            Target::Driver("vfs"),
            Target::Driver("overlay2"),
            Target::TarX,
        ];
        let mut times = std::collections::BTreeMap::new();
        times.insert(("vfs".to_owned(), Step::Import), vec![30.0, 10.0, 20.0]);
        times.insert(
            ("overlay2".to_owned(), Step::Import),
            vec![40.0, 40.0, 40.0],
        );
        times.insert(("tar -x".to_owned(), Step::Import), vec![5.0, 50.0, 10.0]);
        times.insert(("vfs".to_owned(), Step::Mount), vec![1.0]);
        let input = InputStats::default();
        let r = Results::new(&targets, times, &[], 3, &input, Path::new("/"), "0 0 0");
        let get = |t: &str, s: &str| {
            r.results
                .iter()
                .find(|x| x.target == t && x.step == s)
                .unwrap()
        };
        assert_eq!(get("tar -x", "import").ratio_to_fastest, 1.0);
        assert_eq!(get("vfs", "import").ratio_to_fastest, 2.0);
        assert_eq!(get("overlay2", "import").ratio_to_fastest, 4.0);
        assert_eq!(get("tar -x", "import").min_ms, 5.0);
        assert_eq!(get("tar -x", "import").max_ms, 50.0);
        assert_eq!(get("vfs", "mount").ratio_to_fastest, 1.0);
        assert_eq!(r.results.len(), 4);
    }
}
