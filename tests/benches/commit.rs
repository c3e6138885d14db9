//! `commit` of a container with 10 added files, on two image sizes: busybox (~290
//! entries, 2 MB) and the Debian rootfs (~6,800 entries, 200 MB), per driver. overlay2
//! and aufs read the changes from the container's own upper dir / rw branch, so their
//! cost must not grow with the image; vfs compares the whole tree with its parent (the
//! shared naive diff), so it does.
//!
//! One container per driver and image stays mounted. Each iteration writes 10 new files
//! of 4 KiB in /tmp (not timed), commits (timed: changes, layer tar, DiffID, apply into a
//! new layer, syncfs, publish), then deletes the 10 files again and removes the new image
//! (not timed), so every commit sees the same changes: the 10 files and /tmp itself.
//! (A fresh container per iteration would cost a full copy of Debian on vfs each time.)
//!
//! Inputs: busybox.tar is built with scripts/make-busybox-tar.sh (needs busybox-static).
//! The Debian tar is `$LAYERCTL_BENCH_DEBIAN_TAR`, else /var/tmp/layerctl-bench/debian.tar,
//! else built there with the shared fixture script (`../shared/fixtures/
//! make-debian-rootfs-tar.sh` beside the workspace) when present; otherwise that size is
//! skipped with a printed reason. Needs root; the aufs server is the `layerctl` binary.
//!
//! Run: `cargo build --release -p layerctl && cargo bench -p layerctl-tests --bench commit`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use driver_core::{Driver, DriverOptions};
use layerstore::{CommitOptions, ImportOptions, ImportSource, LayerStore, LockMode};

const DRIVERS: [&str; 3] = ["vfs", "overlay2", "aufs"];

fn bench_dir() -> PathBuf {
    std::env::var_os("LAYERCTL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn busybox_tar(dir: &Path) -> Result<PathBuf, String> {
    let out = dir.join("busybox.tar");
    let st = Command::new("bash")
        .arg(workspace().join("scripts/make-busybox-tar.sh"))
        .arg(&out)
        .status()
        .map_err(|e| format!("run make-busybox-tar.sh: {e}"))?;
    if !st.success() {
        return Err(format!("make-busybox-tar.sh failed: {st}"));
    }
    Ok(out)
}

fn debian_tar() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LAYERCTL_BENCH_DEBIAN_TAR") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from("/var/tmp/layerctl-bench/debian.tar");
    if p.is_file() {
        return Ok(p);
    }
    let script = workspace().join("../shared/fixtures/make-debian-rootfs-tar.sh");
    if !script.is_file() {
        return Err(format!(
            "no Debian rootfs tar: set LAYERCTL_BENCH_DEBIAN_TAR, or put one at {}, or provide {}",
            p.display(),
            script.display()
        ));
    }
    std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| e.to_string())?;
    let st = Command::new("bash")
        .arg(&script)
        .arg(&p)
        .status()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !st.success() {
        return Err(format!("{} failed: {st}", script.display()));
    }
    Ok(p)
}

fn open(driver: &str, root: &Path) -> Option<LayerStore> {
    let home = root.join(driver);
    let opts = DriverOptions::new();
    let d: Box<dyn Driver> = match driver {
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
    LayerStore::open(root, d, LockMode::Exclusive).ok()
}

fn commit_10(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("commit bench: needs root (mounts); nothing done");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("layerctl-commitbench-")
        .tempdir_in(bench_dir())
        .expect("bench temp dir");
    let mut inputs = Vec::new();
    match busybox_tar(tmp.path()) {
        Ok(p) => inputs.push(("busybox", p)),
        Err(e) => eprintln!("commit bench: busybox size skipped: {e}"),
    }
    match debian_tar() {
        Ok(p) => inputs.push(("debian", p)),
        Err(e) => eprintln!("commit bench: debian size skipped: {e}"),
    }
    let mut g = c.benchmark_group("commit_10_files");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(criterion::SamplingMode::Flat);
    for driver in DRIVERS {
        for (size, tar) in &inputs {
            let root = tmp.path().join(format!("{driver}-{size}"));
            let Some(store) = open(driver, &root) else {
                eprintln!("commit bench: {driver} not supported here, skipped");
                break;
            };
            let rep = store
                .import(ImportSource::Path(tar), &ImportOptions::default())
                .expect("import");
            let image = rep.images.last().unwrap().as_str().to_owned();
            store.create_container("c", &image).expect("create");
            let mnt = store.mount_container("c").expect("mount");
            let tmpdir = mnt.join("tmp");
            std::fs::create_dir_all(&tmpdir).expect("mkdir tmp");
            let data = vec![b'x'; 4096];
            g.bench_with_input(BenchmarkId::new(driver, size), &(), |b, _| {
                b.iter_custom(|iters| {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        for k in 0..10 {
                            std::fs::write(tmpdir.join(format!("changed-{k}")), &data)
                                .expect("write file");
                        }
                        let s = Instant::now();
                        let rep = store
                            .commit("c", &CommitOptions::default())
                            .expect("commit");
                        t += s.elapsed();
                        assert!(rep.layer.size >= 10 * 4096, "{:?}", rep.layer);
                        for k in 0..10 {
                            std::fs::remove_file(tmpdir.join(format!("changed-{k}")))
                                .expect("remove file");
                        }
                        store.remove_image(rep.image.as_str()).expect("rmi");
                    }
                    t
                })
            });
            store.remove_container("c", true).expect("rm");
        }
    }
}

criterion_group!(benches, commit_10);
criterion_main!(benches);
