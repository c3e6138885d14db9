//! moby's graphdriver benchmarks (daemon/graphdriver/graphtest/graphbench_unix.go), for
//! every driver (vfs, overlay2, aufs): Exists, GetEmpty, DiffBase, DiffN (10x10,
//! 10x10000, 10000x10), DiffApplyN(100), DeepLayerDiff(20), DeepLayerRead(20).
//!
//! Same fixtures as moby's testutil.go: `addFiles` (file-a 64 B, dir-b/file-b 128 B,
//! file-c 16 KiB of seeded random bytes), `addManyFiles` (directory-<i> per 100 files,
//! file-<n> of 64 B), `addManyLayers` (each layer writes top-id, layer-<i>/layer-id,
//! layer-<i>/parent-id). Files are written through the layer's mount, as moby's Get.
//! What is timed matches moby's: GetEmpty times the mount only (the unmount is outside
//! the timer); DiffApplyN times diff + apply_diff into a fresh layer and leaves creating
//! and checking that layer outside. One difference: moby calls `Diff(id, "")` (overlay2
//! then exports the layer's own changes, vfs its whole tree); we pass the layer's real
//! parent, which is what commit and save do on every driver.
//!
//! Needs root (mounts). The aufs driver's userspace server is the `layerctl` binary
//! (`cargo build --release -p layerctl` first; `$LAYERCTL_BIN` overrides). Layers live
//! under `$LAYERCTL_BENCH_DIR` (default /var/tmp).
//!
//! Run: `cargo bench -p layerctl-tests --bench graphtest` (filter: `-- DiffN/overlay2`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use driver_core::naive::MountGuard;
use driver_core::{CreateOpts, Driver, DriverOptions, LayerId, MountOpts};

const DRIVERS: [&str; 3] = ["vfs", "overlay2", "aufs"];

fn bench_dir() -> PathBuf {
    std::env::var_os("LAYERCTL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// A driver in a temp home that goes away with it.
struct Home {
    d: Box<dyn Driver>,
    _tmp: tempfile::TempDir,
    next: std::cell::Cell<u32>,
}

impl Home {
    fn new(name: &str) -> Option<Home> {
        let tmp = tempfile::Builder::new()
            .prefix("layerctl-graphbench-")
            .tempdir_in(bench_dir())
            .expect("bench temp dir");
        let home = tmp.path().join(name);
        let opts = DriverOptions::new();
        let d: Box<dyn Driver> = match name {
            "vfs" => Box::new(driver_vfs::VfsDriver::new(&home, &opts).ok()?),
            "overlay2" => Box::new(driver_overlay2::Overlay2Driver::new(&home, &opts).ok()?),
            "aufs" => {
                let server = driver_aufs::options::ServerCommand {
                    program: layerctl_tests::harness::layerctl_bin(),
                    args: vec!["__aufs-server".into()],
                };
                Box::new(driver_aufs::AufsDriver::with_server(&home, &opts, Some(server)).ok()?)
            }
            other => panic!("unknown driver {other}"),
        };
        Some(Home {
            d,
            _tmp: tmp,
            next: std::cell::Cell::new(0),
        })
    }

    /// A fresh layer id (moby: stringid.GenerateRandomID()).
    fn id(&self) -> LayerId {
        let n = self.next.get();
        self.next.set(n + 1);
        LayerId::new(format!("l{n:06}")).unwrap()
    }

    /// Creates a layer that files are then written into through its mount.
    fn create(&self, parent: Option<&LayerId>) -> LayerId {
        let id = self.id();
        self.d
            .create(&id, parent, &CreateOpts::read_write())
            .unwrap_or_else(|e| panic!("create {id}: {e}"));
        id
    }

    fn mount(&self, id: &LayerId) -> MountGuard<&dyn Driver> {
        MountGuard::mount(&*self.d, id).unwrap_or_else(|e| panic!("mount {id}: {e}"))
    }
}

/// moby's randomContent: `size` bytes from a seeded generator.
fn random_content(size: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// moby's addFiles.
fn add_files(h: &Home, id: &LayerId, seed: u64) {
    let m = h.mount(id);
    let r = m.path();
    write(&r.join("file-a"), &random_content(64, seed));
    fs::create_dir_all(r.join("dir-b")).unwrap();
    write(&r.join("dir-b/file-b"), &random_content(128, seed + 1));
    write(&r.join("file-c"), &random_content(128 * 128, seed + 2));
}

/// moby's addManyFiles: `count` files of 64 bytes, 100 per directory.
fn add_many_files(h: &Home, id: &LayerId, count: usize, seed: u64) {
    let m = h.mount(id);
    for i in (0..count).step_by(100) {
        let dir = m.path().join(format!("directory-{i}"));
        fs::create_dir_all(&dir).unwrap();
        for j in 0..100.min(count - i) {
            write(
                &dir.join(format!("file-{}", i + j)),
                &random_content(64, seed + (i + j) as u64),
            );
        }
    }
}

/// moby's checkManyFiles.
fn check_many_files(h: &Home, id: &LayerId, count: usize, seed: u64) {
    let m = h.mount(id);
    for i in (0..count).step_by(100) {
        for j in 0..100.min(count - i) {
            let p = m.path().join(format!("directory-{i}/file-{}", i + j));
            let got = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            assert_eq!(
                got,
                random_content(64, seed + (i + j) as u64),
                "{}",
                p.display()
            );
        }
    }
}

/// moby's addManyLayers: `count` layers on `base`; returns the top one and its parent.
fn add_many_layers(h: &Home, base: &LayerId, count: usize) -> (LayerId, LayerId) {
    let mut last = base.clone();
    let mut parent = base.clone();
    for i in 1..=count {
        let next = h.create(Some(&last));
        {
            let m = h.mount(&next);
            let r = m.path();
            write(&r.join("top-id"), next.as_str().as_bytes());
            let dir = r.join(format!("layer-{i}"));
            fs::create_dir_all(&dir).unwrap();
            write(&dir.join("layer-id"), next.as_str().as_bytes());
            write(&dir.join("parent-id"), last.as_str().as_bytes());
        }
        parent = std::mem::replace(&mut last, next);
    }
    (last, parent)
}

/// Reads a layer's diff to the end (moby: io.Copy(ioutil.Discard, arch)).
fn drain(h: &Home, id: &LayerId, parent: Option<&LayerId>) -> u64 {
    let mut r = h.d.diff(id, parent).expect("diff");
    io::copy(&mut r, &mut io::sink()).expect("read diff")
}

fn homes() -> Vec<(&'static str, Home)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("graphtest benches: need root (mounts); nothing done");
        return Vec::new();
    }
    DRIVERS
        .iter()
        .filter_map(|n| match Home::new(n) {
            Some(h) => Some((*n, h)),
            None => {
                eprintln!("graphtest benches: {n} not supported here, skipped");
                None
            }
        })
        .collect()
}

fn exists(c: &mut Criterion) {
    let mut g = c.benchmark_group("Exists");
    for (name, h) in homes() {
        let base = h.create(None);
        g.bench_function(name, |b| b.iter(|| assert!(h.d.exists(&base))));
    }
}

fn get_empty(c: &mut Criterion) {
    let mut g = c.benchmark_group("GetEmpty");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, h) in homes() {
        let base = h.create(None);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let s = Instant::now();
                    h.d.mount(&base, &MountOpts::default()).expect("mount");
                    t += s.elapsed();
                    h.d.unmount(&base).expect("unmount");
                }
                t
            })
        });
    }
}

fn diff_base(c: &mut Criterion) {
    let mut g = c.benchmark_group("DiffBase");
    for (name, h) in homes() {
        let base = h.create(None);
        add_files(&h, &base, 3);
        g.bench_function(name, |b| b.iter(|| drain(&h, &base, None)));
    }
}

fn diff_n(c: &mut Criterion) {
    let mut g = c.benchmark_group("DiffN");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, h) in homes() {
        for (bottom, top) in [(10usize, 10usize), (10, 10_000), (10_000, 10)] {
            let base = h.create(None);
            add_many_files(&h, &base, bottom, 3);
            let upper = h.create(Some(&base));
            add_many_files(&h, &upper, top, 6);
            g.bench_with_input(
                BenchmarkId::new(name, format!("{bottom}x{top}")),
                &(),
                |b, _| b.iter(|| drain(&h, &upper, Some(&base))),
            );
        }
    }
}

fn diff_apply_n(c: &mut Criterion) {
    const FILES: usize = 100;
    let mut g = c.benchmark_group("DiffApplyN");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, h) in homes() {
        let base = h.create(None);
        add_many_files(&h, &base, FILES, 3);
        let upper = h.create(Some(&base));
        add_many_files(&h, &upper, FILES, 6);
        g.bench_with_input(BenchmarkId::new(name, FILES), &(), |b, _| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let diff = h.id();
                    h.d.create(&diff, Some(&base), &CreateOpts::default())
                        .expect("create");
                    let s = Instant::now();
                    let mut arch = h.d.diff(&upper, Some(&base)).expect("diff");
                    h.d.apply_diff(&diff, Some(&base), &mut arch)
                        .expect("apply_diff");
                    t += s.elapsed();
                    drop(arch);
                    check_many_files(&h, &diff, FILES, 6);
                    h.d.remove(&diff).expect("remove");
                }
                t
            })
        });
    }
}

fn deep_layer_diff(c: &mut Criterion) {
    const LAYERS: usize = 20;
    let mut g = c.benchmark_group("DeepLayerDiff");
    g.sample_size(20);
    for (name, h) in homes() {
        let base = h.create(None);
        add_files(&h, &base, 50);
        let (top, parent) = add_many_layers(&h, &base, LAYERS);
        g.bench_with_input(BenchmarkId::new(name, LAYERS), &(), |b, _| {
            b.iter(|| drain(&h, &top, Some(&parent)))
        });
    }
}

fn deep_layer_read(c: &mut Criterion) {
    const LAYERS: usize = 20;
    let content = b"test content";
    let mut g = c.benchmark_group("DeepLayerRead");
    for (name, h) in homes() {
        let base = h.create(None);
        {
            let m = h.mount(&base);
            write(&m.path().join("testfile.txt"), content);
        }
        let (top, _) = add_many_layers(&h, &base, LAYERS);
        let m = h.mount(&top);
        let p = m.path().join("testfile.txt");
        g.bench_with_input(BenchmarkId::new(name, LAYERS), &(), |b, _| {
            b.iter(|| {
                let got = fs::read(&p).expect("read testfile.txt");
                assert_eq!(got, content);
            })
        });
    }
}

criterion_group!(
    benches,
    exists,
    get_empty,
    diff_base,
    diff_n,
    diff_apply_n,
    deep_layer_diff,
    deep_layer_read
);
criterion_main!(benches);
