//! Creating a vfs child layer (a full copy of its parent) versus `cp -a` of the same
//! tree. The parent is a synthetic tree of about 5,000 files built here, or, when
//! `LAYERCTL_BENCH_DEBIAN_TAR` names a root-filesystem tar, that tar applied to a layer.
//! Only the copy is timed; removing it between iterations is not.
//!
//! `LAYERCTL_BENCH_DIR` picks where the trees live (default: the system temp dir).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use driver_core::{CreateOpts, Driver, LayerId};
use driver_vfs::VfsDriver;

/// Directories in the synthetic tree.
const DIRS: usize = 100;
/// Files per directory (DIRS * FILES = 5,000 files).
const FILES: usize = 50;

/// A tree shaped like a small distribution: mostly small files, a few large ones,
/// symlinks, a hard link per directory, nested directories.
fn build_tree(root: &Path) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for d in 0..DIRS {
        let dir = root.join(format!("usr/share/d{:02}/sub{d:03}", d % 10));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES {
            let size = match next() % 100 {
                0 => 256 * 1024,
                1..=10 => 32 * 1024 + (next() % 32_768) as usize,
                _ => 200 + (next() % 8_000) as usize,
            };
            let data: Vec<u8> = (0..size).map(|i| (i as u64 ^ next()) as u8).collect();
            fs::write(dir.join(format!("f{f:03}")), data).unwrap();
        }
        std::os::unix::fs::symlink("f000", dir.join("link")).unwrap();
        fs::hard_link(dir.join("f001"), dir.join("hard")).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let base_dir = std::env::var_os("LAYERCTL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("layerctl-bench-copy-")
        .tempdir_in(base_dir)
        .unwrap();
    let driver = VfsDriver::new(&tmp.path().join("vfs"), &Default::default()).unwrap();
    let base = LayerId::new("base").unwrap();
    driver.create(&base, None, &CreateOpts::default()).unwrap();
    let label = match std::env::var_os("LAYERCTL_BENCH_DEBIAN_TAR") {
        Some(tar) if Path::new(&tar).is_file() => {
            let mut f = fs::File::open(&tar).unwrap();
            driver.apply_diff(&base, None, &mut f).unwrap();
            "debian"
        }
        _ => {
            build_tree(&driver.layer_dir(&base).unwrap());
            "synthetic-5k"
        }
    };
    let src = driver.layer_dir(&base).unwrap();

    let mut g = c.benchmark_group(format!("create_child/{label}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.bench_function("vfs_create", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let id = LayerId::new(format!("child{i}")).unwrap();
                let t = Instant::now();
                driver
                    .create(&id, Some(&base), &CreateOpts::read_write())
                    .unwrap();
                total += t.elapsed();
                driver.remove(&id).unwrap();
            }
            total
        })
    });
    g.bench_function("cp_a", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dst = tmp.path().join("cp-copy");
                let t = Instant::now();
                let st = Command::new("cp")
                    .arg("-a")
                    .arg(&src)
                    .arg(&dst)
                    .status()
                    .unwrap();
                total += t.elapsed();
                assert!(st.success());
                fs::remove_dir_all(&dst).unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
