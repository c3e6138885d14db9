//! Mount benchmarks (moby graphtest style): mount + unmount of a container (read-write
//! layer) on a 1/10/100/400-layer image, and the mount alone on a 128-layer image.
//! Needs root; prints a note and does nothing otherwise.

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
    unmount_all_below(tmp.path());
}

criterion_group!(mount, benches);
criterion_main!(mount);
