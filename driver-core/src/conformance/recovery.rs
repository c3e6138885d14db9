//! Recovery cases: a mount that dies under the driver ([`Driver::crash_mount`]: a
//! userspace server killed, a kernel mount lazily detached) and a driver reopened on the
//! same home by a fresh instance, as a new `layerctl` process opens it. Every driver
//! runs them; a driver with nothing to break (vfs) checks that nothing changed instead.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::{lid, Factory, Harness, TarBuilder};
use crate::driver::Driver;
use crate::id::LayerId;
use crate::mountinfo::is_mount_root;
use crate::naive::MountGuard;

/// Writes `content` to `p` and fsyncs it and its directory (what a container that
/// wants its data to survive does).
fn write_synced(p: &Path, content: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(content).unwrap();
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", p.display()));
    let dir = p.parent().expect("a file has a parent");
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", dir.display()));
}

/// An image layer `lower` (`etc/conf` = "lower", `keep` = "keep") and a container
/// layer `c` on it; `c` mounted once, with `new/synced` written, `etc/conf` rewritten
/// (a copy-up) and both fsynced. Returns the mount path.
fn mounted_with_synced_data(h: &Harness) -> (LayerId, std::path::PathBuf) {
    let (lower, c) = (lid("lower"), lid("c"));
    let tar = TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/conf", b"lower", 0o644)
        .file("keep", b"keep", 0o644)
        .finish();
    h.create_applied(&lower, None, &tar);
    h.create_rw(&c, Some(&lower));
    let p = h.d().mount(&c, &Default::default()).expect("mount c");
    fs::create_dir(p.join("new")).unwrap();
    write_synced(&p.join("new/synced"), b"synced data");
    write_synced(&p.join("etc/conf"), b"changed on top");
    (c, p)
}

/// What the mount must show after recovery: the fsynced data and the lower file.
fn assert_data_kept(root: &Path) {
    assert_eq!(
        fs::read(root.join("new/synced")).expect("read new/synced"),
        b"synced data",
        "data fsynced before the crash is lost"
    );
    assert_eq!(
        fs::read(root.join("etc/conf")).unwrap(),
        b"changed on top",
        "a fsynced copy-up is lost"
    );
    assert_eq!(fs::read(root.join("keep")).unwrap(), b"keep");
}

/// Breaks `c`'s mount at `p`; checks the broken mount answers an error (userspace) or
/// is gone (kernel), and that the driver counts it as 0. Returns whether it broke.
fn crash(d: &dyn Driver, c: &LayerId, p: &Path) -> bool {
    let mounted = is_mount_root(p).unwrap();
    let broke = d.crash_mount(c, p).expect("crash_mount");
    assert_eq!(
        broke, mounted,
        "crash_mount breaks a mount exactly when there is one"
    );
    if broke {
        assert!(
            fs::read(p.join("keep")).is_err() || !is_mount_root(p).unwrap(),
            "the crashed mount still serves"
        );
        assert_eq!(
            d.mount_count(c).unwrap(),
            0,
            "a dead mount counts no references"
        );
    } else {
        assert_eq!(d.mount_count(c).unwrap(), 1, "nothing broke: count kept");
    }
    broke
}

/// A mount that died under the driver: the next `mount` detaches it and mounts afresh
/// (same path, count 1), with the data fsynced before the crash.
pub fn dead_mount_then_mount(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (c, p) = mounted_with_synced_data(&h);
    let broke = crash(d, &c, &p);
    {
        let m = MountGuard::mount(d, &c).expect("mount after a crash");
        assert_eq!(m.path(), p, "same mount path");
        assert_eq!(d.mount_count(&c).unwrap(), if broke { 1 } else { 2 });
        assert_data_kept(m.path());
        fs::write(m.path().join("after"), b"works").expect("write after recovery");
    }
    if !broke {
        d.unmount(&c).unwrap();
    }
    assert_eq!(d.mount_count(&c).unwrap(), 0);
    let m = MountGuard::mount(d, &c).unwrap();
    assert_eq!(fs::read(m.path().join("after")).unwrap(), b"works");
    drop(m);
    d.remove(&c).expect("remove after recovery");
}

/// A mount that died under the driver: `unmount` succeeds, leaves nothing mounted, and
/// the layer mounts again with its data.
pub fn dead_mount_then_unmount(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (c, p) = mounted_with_synced_data(&h);
    let broke = crash(d, &c, &p);
    d.unmount(&c).expect("unmount of a dead mount");
    assert_eq!(d.mount_count(&c).unwrap(), 0);
    if broke {
        assert!(!is_mount_root(&p).unwrap(), "the dead mount is still there");
    }
    let m = MountGuard::mount(d, &c).unwrap();
    assert_data_kept(m.path());
    drop(m);
    d.remove(&c).expect("remove after recovery");
}

/// A mount that died under the driver: `cleanup` (what `layerctl check --repair` and a
/// store opening run) detaches it; the layer is then neither mounted nor busy, and its
/// data is intact.
pub fn dead_mount_then_cleanup(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (c, p) = mounted_with_synced_data(&h);
    let broke = crash(d, &c, &p);
    d.cleanup().expect("cleanup with a dead mount");
    if broke {
        assert!(!is_mount_root(&p).unwrap(), "cleanup left the dead mount");
        assert_eq!(d.mount_count(&c).unwrap(), 0);
        assert!(d.leftovers().unwrap().is_empty(), "{:?}", d.leftovers());
    } else {
        d.unmount(&c).unwrap();
    }
    {
        let m = MountGuard::mount(d, &c).unwrap();
        assert_data_kept(m.path());
    }
    d.remove(&c).expect("remove after cleanup");
    assert!(!d.exists(&c));
}

/// A second driver instance on the same home (a new process) sees everything the
/// first one left: layers, stacks, mount counts, mounts; it takes over the counts and
/// unmounts for real on the last reference.
pub fn reopened_driver_recovers_state(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d1 = h.d();
    let (c, p) = mounted_with_synced_data(&h);
    let lower = lid("lower");
    assert_eq!(d1.mount(&c, &Default::default()).unwrap(), p);
    let was_mount = is_mount_root(&p).unwrap();
    let layers1 = d1.layers().unwrap();
    let changes1 = d1.changes(&c, Some(&lower)).unwrap();

    let d2 = h.reopen(factory);
    let d2 = &*d2;
    assert_eq!(d2.layers().unwrap(), layers1, "layers");
    assert!(d2.exists(&c) && d2.exists(&lower));
    assert_eq!(
        d2.stack(&c).unwrap().branches(),
        d1.stack(&c).unwrap().branches(),
        "stack"
    );
    assert_eq!(d2.mount_count(&c).unwrap(), 2, "counts recovered from disk");
    assert_eq!(d2.changes(&c, Some(&lower)).unwrap(), changes1, "changes");
    assert!(matches!(
        d2.remove(&c),
        Err(crate::DriverError::Busy { .. })
    ));
    assert_eq!(d2.mount(&c, &Default::default()).unwrap(), p, "same path");
    assert_eq!(d2.mount_count(&c).unwrap(), 3);
    assert_eq!(d1.mount_count(&c).unwrap(), 3, "one count for both");
    assert_data_kept(&p);
    for left in [2, 1, 0] {
        d2.unmount(&c).unwrap();
        assert_eq!(d2.mount_count(&c).unwrap(), left);
        if left > 0 {
            assert_data_kept(&p);
        }
    }
    if was_mount {
        assert!(
            !is_mount_root(&p).unwrap(),
            "the last unmount of the new instance unmounted"
        );
    }
    d2.cleanup().unwrap();
    assert!(d2.leftovers().unwrap().is_empty());
    d2.remove(&c).unwrap();
    assert!(!d1.exists(&c), "removed for both instances");
}
