//! Mount benchmarks (moby graphtest style): mount + unmount of a container (read-write
//! layer) on a 1/10/100/400-layer image, and the mount alone on a 128-layer image;
//! deep stacks: a container as the store makes it (init layer + read-write layer) on a
//! 100/500/2,000-layer image, alone and while a second container of the same image is
//! mounted (its internal mounts shared). Needs root; prints a note and does nothing
//! otherwise. `LAYERCTL_BENCH_DEEP=0` skips the deep group (building 2,000 layers takes
//! a while).

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use driver_core::{CreateOpts, Driver, LayerId, MountOpts};
use driver_overlay2::Overlay2Driver;

/// Creates an image of `depth` read-only layers (layer k holds `layer<k>`) and a
/// container layer on top; returns the container id.
fn stack(d: &Overlay2Driver, tag: &str, depth: usize) -> LayerId {
    let mut parent: Option<LayerId> = None;
    for k in 0..depth {
        let id = LayerId::new(format!("{tag}-{k}")).unwrap();
        d.create(&id, parent.as_ref(), &CreateOpts::default())
            .unwrap();
        std::fs::write(
            d.layer_dir(&id).unwrap().join(format!("layer{k}")),
            k.to_string(),
        )
        .unwrap();
        parent = Some(id);
    }
    let c = LayerId::new(format!("{tag}-ctr")).unwrap();
    d.create(&c, parent.as_ref(), &CreateOpts::read_write())
        .unwrap();
    c
}

/// A container as the store makes it: `<tag>-init` (read-write) on `top`, and the
/// container's read-write layer on that.
fn container_on(d: &Overlay2Driver, top: &LayerId, tag: &str) -> LayerId {
    let init = LayerId::new(format!("{tag}-init")).unwrap();
    d.create(&init, Some(top), &CreateOpts::read_write())
        .unwrap();
    let c = LayerId::new(tag).unwrap();
    d.create(&c, Some(&init), &CreateOpts::read_write())
        .unwrap();
    c
}

fn deep(c: &mut Criterion, d: &Overlay2Driver) {
    let opts = MountOpts::default();
    let mut g = c.benchmark_group("deep_container_mount_unmount");
    g.sample_size(20).measurement_time(Duration::from_secs(6));
    for depth in [100usize, 500, 2000] {
        let first = stack(d, &format!("d{depth}"), depth);
        // The image's top layer: the first container's parent.
        let top = LayerId::new(format!("d{depth}-{}", depth - 1)).unwrap();
        d.remove(&first).unwrap();
        let a = container_on(d, &top, &format!("d{depth}-a"));
        let b = container_on(d, &top, &format!("d{depth}-b"));
        g.bench_with_input(BenchmarkId::new("alone", depth), &a, |bch, a| {
            bch.iter_batched(
                nix::unistd::sync,
                |()| {
                    d.mount(a, &opts).unwrap();
                    d.unmount(a).unwrap();
                },
                BatchSize::PerIteration,
            )
        });
        d.mount(&b, &opts).unwrap();
        g.bench_with_input(BenchmarkId::new("second", depth), &a, |bch, a| {
            bch.iter_batched(
                nix::unistd::sync,
                |()| {
                    d.mount(a, &opts).unwrap();
                    d.unmount(a).unwrap();
                },
                BatchSize::PerIteration,
            )
        });
        d.unmount(&b).unwrap();
    }
    g.finish();
}

fn unmount_all_below(p: &Path) {
    let mut ms: Vec<_> = driver_core::mountinfo::read()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(p))
        .collect();
    ms.reverse();
    for m in ms {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn benches(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("overlay2 mount benchmarks need root; skipping");
        return;
    }
    let base = std::env::var_os("LAYERCTL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("ov2-bench-")
        .tempdir_in(base)
        .unwrap();
    let d = Overlay2Driver::new(&tmp.path().join("overlay2"), &Default::default()).unwrap();
    let opts = MountOpts::default();

    let mut g = c.benchmark_group("mount_unmount_container");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    for depth in [1usize, 10, 100, 400] {
        let ctr = stack(&d, &format!("s{depth}"), depth);
        g.bench_with_input(BenchmarkId::from_parameter(depth), &ctr, |b, ctr| {
            // sync (untimed) first: unmounting an overlay with an upper layer syncs the
            // whole upper filesystem, i.e. waits for other processes' dirty pages.
            b.iter_batched(
                nix::unistd::sync,
                |()| {
                    d.mount(ctr, &opts).unwrap();
                    d.unmount(ctr).unwrap();
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    // The same with `volatile`: unmount then skips overlay's sync of the whole upper
    // filesystem, which otherwise waits for every dirty page on it (of any process).
    let mut vo = driver_core::DriverOptions::new();
    vo.insert("mountopt".into(), "volatile".into());
    let dv = Overlay2Driver::new(&tmp.path().join("overlay2"), &vo).unwrap();
    let mut g = c.benchmark_group("mount_unmount_container_volatile");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    for depth in [1usize, 10, 100, 400] {
        let ctr = LayerId::new(format!("s{depth}-ctr")).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(depth), &ctr, |b, ctr| {
            b.iter_batched(
                nix::unistd::sync,
                |()| {
                    dv.mount(ctr, &opts).unwrap();
                    dv.unmount(ctr).unwrap();
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let ctr = stack(&d, "m128", 128);
    let mut g = c.benchmark_group("mount_only");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    g.bench_function("128", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                d.mount(&ctr, &opts).unwrap();
                total += t.elapsed();
                d.unmount(&ctr).unwrap();
            }
            total
        })
    });
    g.finish();
    if std::env::var("LAYERCTL_BENCH_DEEP").as_deref() != Ok("0") {
        deep(c, &d);
    }
    unmount_all_below(tmp.path());
}

criterion_group!(mount, benches);
criterion_main!(mount);
