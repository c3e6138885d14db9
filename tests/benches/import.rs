//! Import benchmark: `LayerStore::import` of a realistic root filesystem tar (DiffID
//! computed while streaming) against plain `tar -x` of the same file into the same
//! filesystem, side by side. The tar comes from `$LAYERCTL_BENCH_TAR` (scripts/bench-import.sh
//! builds a Debian minbase tar, ~200 MB); without it the benchmark says so and does nothing.
//! Targets live under `$LAYERCTL_BENCH_DIR` (default /var/tmp), so both write to one fs.
//!
//! Run: `LAYERCTL_BENCH_TAR=/var/tmp/debian.tar cargo bench -p layerctl-tests --bench import`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use driver_core::{Driver, DriverOptions};
use layerstore::{ImportOptions, ImportSource, LayerStore, LockMode};

fn bench_dir() -> PathBuf {
    std::env::var_os("LAYERCTL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("layerctl-bench-")
        .tempdir_in(bench_dir())
        .expect("bench temp dir")
}

fn open(driver: &str, root: &Path) -> LayerStore {
    let home = root.join(driver);
    let opts = DriverOptions::new();
    let d: Box<dyn Driver> = match driver {
        "vfs" => Box::new(driver_vfs::VfsDriver::new(&home, &opts).expect("vfs driver")),
        "overlay2" => {
            Box::new(driver_overlay2::Overlay2Driver::new(&home, &opts).expect("overlay2 driver"))
        }
        other => panic!("unknown driver {other}"),
    };
    LayerStore::open(root, d, LockMode::Exclusive).expect("open store")
}

/// Times `iters` runs of `f(fresh dir)`; creating and deleting the dir is not timed.
fn timed(iters: u64, mut f: impl FnMut(&Path)) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = scratch();
        let t = Instant::now();
        f(dir.path());
        total += t.elapsed();
        drop(dir);
    }
    total
}

fn import_vs_tar(c: &mut Criterion) {
    let Some(tar) = std::env::var_os("LAYERCTL_BENCH_TAR").map(PathBuf::from) else {
        eprintln!("import bench: set LAYERCTL_BENCH_TAR to a root filesystem tar (scripts/bench-import.sh does)");
        return;
    };
    assert!(
        tar.is_file(),
        "LAYERCTL_BENCH_TAR={} is not a file",
        tar.display()
    );
    let size = std::fs::metadata(&tar).expect("stat tar").len();
    let mut g = c.benchmark_group("import");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(criterion::Throughput::Bytes(size));

    g.bench_function("tar -x", |b| {
        b.iter_custom(|iters| {
            timed(iters, |dir| {
                let st = Command::new("tar")
                    .arg("-xf")
                    .arg(&tar)
                    .arg("-C")
                    .arg(dir)
                    .arg("--numeric-owner")
                    .status()
                    .expect("spawn tar");
                assert!(st.success(), "tar -x failed");
            })
        })
    });
    // tar -x does not flush; layerctl import syncfs()es before publishing metadata.
    // This variant shows what the flush alone costs.
    g.bench_function("tar -x + sync -f", |b| {
        b.iter_custom(|iters| {
            timed(iters, |dir| {
                let st = Command::new("sh")
                    .arg("-c")
                    .arg("tar -xf \"$1\" -C \"$2\" --numeric-owner && sync -f \"$2\"")
                    .arg("sh")
                    .arg(&tar)
                    .arg(dir)
                    .status()
                    .expect("spawn tar");
                assert!(st.success(), "tar -x failed");
            })
        })
    });
    let mut drivers = vec!["vfs"];
    if std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("overlay")
    {
        drivers.push("overlay2");
    }
    for driver in drivers {
        g.bench_function(format!("layerctl import ({driver})"), |b| {
            b.iter_custom(|iters| {
                timed(iters, |dir| {
                    let store = open(driver, &dir.join("root"));
                    let report = store
                        .import(ImportSource::Path(&tar), &ImportOptions::default())
                        .expect("import");
                    assert_eq!(report.images.len(), 1);
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, import_vs_tar);
criterion_main!(benches);
