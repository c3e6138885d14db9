//! `remove` asks "is it mounted?" of the layer's paths (statx), not of the whole mount
//! table: on a machine with thousands of mounts each read of /proc/self/mountinfo is
//! hundreds of KB parsed, and a removal used to read it four times (BENCHMARKS.md, the
//! rm step of `layerctl bench`). It still refuses a layer that is mounted, also when
//! the mount count says 0.

mod common;

use common::{can_mount, id, ro_layer, Env};
use driver_core::mountinfo::reads_by_this_thread;
use driver_core::{CreateOpts, Driver, DriverError, MountOpts};

#[test]
fn remove_reads_no_mount_table_and_still_refuses_a_mounted_layer() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let base = ro_layer(&d, "base", None, &[("f", "base")]);
    let top = ro_layer(&d, "top", Some(&base), &[("g", "top")]);
    let rw = id("rw");
    d.create(&rw, Some(&top), &CreateOpts::default()).unwrap();

    // Mounted through the driver: busy.
    let m = d.mount(&rw, &MountOpts::default()).unwrap();
    assert!(matches!(d.remove(&rw), Err(DriverError::Busy { .. })));
    d.unmount(&rw).unwrap();
    // Something mounted on `merged` that the driver did not count (a mount made by
    // hand, a count lost to a crash): busy too, seen from the path itself.
    nix::mount::mount(
        Some("stray"),
        &m,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let r = d.remove(&rw);
    assert!(matches!(r, Err(DriverError::Busy { .. })), "{r:?}");
    nix::mount::umount(&m).unwrap();

    let before = reads_by_this_thread();
    for l in [&rw, &top, &base] {
        d.remove(l).unwrap();
        assert!(!d.exists(l), "{l} still exists");
    }
    assert_eq!(
        reads_by_this_thread() - before,
        0,
        "removing three layers read /proc/self/mountinfo"
    );
    assert!(env.mounts().is_empty());
}
