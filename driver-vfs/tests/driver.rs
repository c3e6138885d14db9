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
    // A dead process's create (pid 0 never runs a create), and this live one's, which
    // cleanup must leave alone: imports create without the store lock.
    fs::create_dir_all(dir.join(".dead-tmp-0-0a1b2c/etc")).unwrap();
    let live = format!(".live-tmp-{}-0a1b2c", std::process::id());
    fs::create_dir_all(dir.join(&live)).unwrap();
    assert_eq!(d.leftovers().unwrap().len(), 3, "{:?}", d.leftovers());
    // A stale count for a layer that no longer exists.
    fs::write(t.path().join("vfs/refs/old"), b"2").unwrap();
    assert!(!d.exists(&id("new")) && !d.exists(&id("old")));
    assert_eq!(d.status()[1], ("Layers".to_owned(), "1".to_owned()));
    d.cleanup().unwrap();
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, vec![live.clone(), "keep".to_owned()]);
    assert!(d.leftovers().unwrap().is_empty());
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

/// A diff streams (1 MiB file, read in part, dropped early) and takes no mount
/// reference: a process killed mid-diff must leave no stale count in vfs's count file.
#[test]
fn diff_of_child_is_streamed_without_mount_references() {
    let (_t, d) = driver();
    d.create(&id("p"), None, &CreateOpts::default()).unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .unwrap();
    let dir = d.layer_dir(&id("c")).unwrap();
    fs::write(dir.join("big"), vec![9u8; 1 << 20]).unwrap();
    let mut r = d.diff(&id("c"), Some(&id("p"))).unwrap();
    assert_eq!(
        d.mount_count(&id("c")).unwrap(),
        0,
        "no reference while streaming"
    );
    assert_eq!(d.mount_count(&id("p")).unwrap(), 0);
    let mut buf = [0u8; 4096];
    std::io::Read::read_exact(&mut r, &mut buf).unwrap();
    assert_eq!(&buf[..3], b"big", "first entry streamed");
    drop(r);
    d.changes(&id("c"), Some(&id("p"))).unwrap();
    assert_eq!(d.diff_size(&id("c"), Some(&id("p"))).unwrap(), 1 << 20);
    assert_eq!(d.mount_count(&id("c")).unwrap(), 0);
    assert_eq!(d.mount_count(&id("p")).unwrap(), 0);
    // A missing layer or parent is NotFound, as before.
    assert!(matches!(
        d.diff(&id("nope"), None).map(drop).unwrap_err(),
        DriverError::NotFound { .. }
    ));
    assert!(matches!(
        d.changes(&id("c"), Some(&id("nope"))).unwrap_err(),
        DriverError::NotFound { .. }
    ));
}

/// Non-directory paths of `root` grouped by inode (each group sorted), with each path's
/// link count.
fn link_groups(
    root: &std::path::Path,
) -> (
    std::collections::BTreeSet<Vec<String>>,
    BTreeMap<String, u64>,
) {
    use std::os::unix::fs::MetadataExt;
    let mut by_ino: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut nlink = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let md = e.path().symlink_metadata().unwrap();
        if md.is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        nlink.insert(rel.clone(), md.nlink());
        by_ino.entry((md.dev(), md.ino())).or_default().push(rel);
    }
    let groups = by_ino
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    (groups, nlink)
}

/// Fault 8: a tar (GNU tar) with `sl -> target.txt` and a hard link `hl` to `sl` (and
/// hard-linked regular files, fifos and, as root, char devices) imports with the groups
/// GNU tar gives (tar stores no hard links for fifos and devices), and a child layer
/// (the vfs tree copy) keeps them: same groups, same link counts. The copy itself keeps
/// groups of every type (fifos, devices, sockets too): see copy's unit tests.
#[test]
fn hard_links_between_symlinks_survive_the_child_copy() {
    use std::os::unix::fs::symlink;
    let t = tempfile::tempdir().unwrap();
    let stage = t.path().join("stage");
    fs::create_dir_all(stage.join("d")).unwrap();
    fs::write(stage.join("target.txt"), b"target").unwrap();
    symlink("target.txt", stage.join("sl")).unwrap();
    let link = |a: &str, b: &str| {
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            &stage.join(a),
            nix::fcntl::AT_FDCWD,
            &stage.join(b),
            nix::fcntl::AtFlags::empty(),
        )
        .unwrap()
    };
    link("sl", "hl");
    fs::write(stage.join("f"), b"f").unwrap();
    link("f", "d/f2");
    nix::unistd::mkfifo(
        &stage.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    link("fifo", "d/fifo2");
    if nix::unistd::geteuid().is_root() {
        nix::sys::stat::mknod(
            &stage.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        link("null", "d/null2");
    } else if driver_core::privileged_required() {
        panic!("LAYERCTL_REQUIRE_PRIVILEGED=1 but not root");
    }
    let tar = t.path().join("layer.tar");
    let st = std::process::Command::new("tar")
        .args(["--format=posix", "--numeric-owner", "-C"])
        .arg(&stage)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let d = VfsDriver::new(&t.path().join("vfs"), &Default::default()).unwrap();
    d.create(&id("p"), None, &CreateOpts::default()).unwrap();
    d.apply_diff(&id("p"), None, &mut fs::File::open(&tar).unwrap())
        .unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .unwrap();

    // What GNU tar makes of it.
    let reference = t.path().join("ref");
    fs::create_dir(&reference).unwrap();
    let st = std::process::Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&reference)
        .status()
        .unwrap();
    assert!(st.success());
    let (sg, sn) = link_groups(&reference);
    let linked: Vec<&Vec<String>> = sg.iter().filter(|g| g.len() > 1).collect();
    assert_eq!(
        linked,
        [
            &vec!["d/f2".to_owned(), "f".to_owned()],
            &vec!["hl".to_owned(), "sl".to_owned()]
        ],
        "{sg:?}"
    );
    let parent = d.layer_dir(&id("p")).unwrap();
    let child = d.layer_dir(&id("c")).unwrap();
    assert_eq!(link_groups(&parent), (sg.clone(), sn.clone()), "imported");
    assert_eq!(link_groups(&child), (sg, sn), "copied into the child");
    assert_eq!(
        fs::read_link(child.join("hl")).unwrap(),
        std::path::Path::new("target.txt")
    );
}
