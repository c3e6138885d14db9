//! vfs-specific behaviour beyond the shared conformance suite: layout, options,
//! crash leftovers, status and the registry entry.

use std::collections::BTreeMap;
use std::fs;

use driver_core::{CreateOpts, Driver, DriverError, LayerId, Registry};
use driver_vfs::VfsDriver;

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn driver() -> (tempfile::TempDir, VfsDriver) {
    let t = tempfile::tempdir().unwrap();
    let d = VfsDriver::new(&t.path().join("vfs"), &Default::default()).unwrap();
    (t, d)
}

#[test]
fn unknown_driver_and_storage_options_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let opts = BTreeMap::from([("size".to_owned(), "10G".to_owned())]);
    assert!(matches!(
        VfsDriver::new(t.path(), &opts),
        Err(DriverError::InvalidOption { key, .. }) if key == "size"
    ));
    let (_t, d) = driver();
    let create = CreateOpts {
        storage_opt: opts,
        ..Default::default()
    };
    assert!(matches!(
        d.create(&id("a"), None, &create),
        Err(DriverError::InvalidOption { .. })
    ));
    assert!(!d.exists(&id("a")));
}

#[test]
fn layout_is_dir_per_layer_and_child_is_an_independent_copy() {
    let (t, d) = driver();
    d.create(&id("p"), None, &CreateOpts::default()).unwrap();
    let pdir = t.path().join("vfs/dir/p");
    assert_eq!(d.layer_dir(&id("p")).unwrap(), pdir);
    fs::write(pdir.join("f"), b"parent").unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .unwrap();
    let cdir = d.mount(&id("c"), &Default::default()).unwrap();
    assert_eq!(cdir, t.path().join("vfs/dir/c"));
    assert_eq!(fs::read(cdir.join("f")).unwrap(), b"parent");
    fs::write(cdir.join("f"), b"child").unwrap();
    assert_eq!(
        fs::read(pdir.join("f")).unwrap(),
        b"parent",
        "parent untouched"
    );
    assert_eq!(
        fs::read_to_string(t.path().join("vfs/refs/c")).unwrap(),
        format!("1 {}", boot_id().trim()),
        "count and the boot it belongs to"
    );
    d.unmount(&id("c")).unwrap();
    assert!(
        !t.path().join("vfs/refs/c").exists(),
        "count file gone at 0"
    );
    // Only layers in dir/: no temp leftovers after successful creates.
    let mut names: Vec<_> = fs::read_dir(t.path().join("vfs/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["c", "p"]);
}

#[test]
fn cleanup_finishes_interrupted_create_and_remove() {
    let (t, d) = driver();
    d.create(&id("keep"), None, &CreateOpts::default()).unwrap();
    let dir = t.path().join("vfs/dir");
    // What a crash mid-create and mid-remove leave behind.
    fs::create_dir_all(dir.join(".new-tmp-0a1b2c/usr/bin")).unwrap();
    fs::write(dir.join(".new-tmp-0a1b2c/usr/bin/sh"), b"x").unwrap();
    fs::create_dir_all(dir.join(".old-removing/etc")).unwrap();
    // A stale count for a layer that no longer exists.
    fs::write(t.path().join("vfs/refs/old"), b"2").unwrap();
    assert!(!d.exists(&id("new")) && !d.exists(&id("old")));
    assert_eq!(d.status()[1], ("Layers".to_owned(), "1".to_owned()));
    d.cleanup().unwrap();
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["keep"]);
    assert!(!t.path().join("vfs/refs/old").exists());
    assert!(d.exists(&id("keep")));
}

#[test]
fn remove_while_counted_by_another_process_is_busy() {
    let (t, d) = driver();
    d.create(&id("x"), None, &CreateOpts::default()).unwrap();
    // Another process's mount, as persisted in this boot.
    fs::write(
        t.path().join("vfs/refs/x"),
        format!("1 {}", boot_id().trim()),
    )
    .unwrap();
    assert_eq!(d.mount_count(&id("x")).unwrap(), 1);
    assert!(matches!(d.remove(&id("x")), Err(DriverError::Busy { .. })));
    d.unmount(&id("x")).unwrap();
    d.remove(&id("x")).unwrap();
    assert!(matches!(
        d.unmount(&id("x")),
        Err(DriverError::NotFound { .. })
    ));
    assert!(matches!(
        d.mount_count(&id("x")),
        Err(DriverError::NotFound { .. })
    ));
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap()
}

#[test]
fn counts_from_an_earlier_boot_are_stale() {
    let (t, d) = driver();
    d.create(&id("x"), None, &CreateOpts::default()).unwrap();
    d.mount(&id("x"), &Default::default()).unwrap();
    assert_eq!(d.mount_count(&id("x")).unwrap(), 1);
    // Simulate a reboot: the count's recorded boot id no longer matches.
    fs::write(t.path().join("vfs/refs/x"), "3 some-earlier-boot").unwrap();
    assert_eq!(d.mount_count(&id("x")).unwrap(), 0);
    d.cleanup().unwrap();
    assert!(
        !t.path().join("vfs/refs/x").exists(),
        "cleanup drops stale counts"
    );
    d.remove(&id("x")).unwrap();
}

#[test]
fn status_names_backing_filesystem() {
    let (_t, d) = driver();
    let st = d.status();
    assert_eq!(st[0].0, "Backing Filesystem");
    assert!(
        !st[0].1.is_empty() && !st[0].1.starts_with("unknown ("),
        "{st:?}"
    );
    assert_eq!(d.name(), "vfs");
}

#[test]
fn registry_entry_probes_and_builds() {
    let t = tempfile::tempdir().unwrap();
    let mut r = Registry::new();
    r.register(driver_vfs::entry());
    let e = r.get("vfs").unwrap();
    assert_eq!(e.priority, 100);
    assert!(r.probe_all(t.path())[0].1.is_ok());
    assert_eq!(r.best(t.path()).unwrap().name, "vfs");
    let d = r.open("vfs", t.path(), &Default::default()).unwrap();
    assert_eq!(d.home(), t.path().join("vfs"));
    d.create(&id("a"), None, &CreateOpts::default()).unwrap();
    assert!(t.path().join("vfs/dir/a").is_dir());
    // Leaves no probe files behind.
    let names: Vec<_> = fs::read_dir(t.path().join("vfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".probe")), "{names:?}");
}

#[test]
fn diff_of_child_is_streamed_and_unmounts_when_dropped() {
    let (_t, d) = driver();
    d.create(&id("p"), None, &CreateOpts::default()).unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .unwrap();
    let dir = d.layer_dir(&id("c")).unwrap();
    fs::write(dir.join("big"), vec![9u8; 1 << 20]).unwrap();
    let mut r = d.diff(&id("c"), Some(&id("p"))).unwrap();
    assert_eq!(d.mount_count(&id("c")).unwrap(), 1, "held while streaming");
    assert_eq!(d.mount_count(&id("p")).unwrap(), 1);
    let mut buf = [0u8; 4096];
    std::io::Read::read_exact(&mut r, &mut buf).unwrap();
    drop(r);
    assert_eq!(d.mount_count(&id("c")).unwrap(), 0);
    assert_eq!(d.mount_count(&id("p")).unwrap(), 0);
}
