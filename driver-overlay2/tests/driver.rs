//! Privileged driver-level tests: real overlay mounts (root), guards unmount.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::{can_mount, id, ro_layer, Env};
use driver_core::{CreateOpts, Driver, DriverError, DriverOptions, MountOpts};
use driver_overlay2::{Overlay2Driver, MAX_LOWER_LAYERS};

#[test]
fn layout_matches_docker() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let base = ro_layer(&d, "base", None, &[("a", "1")]);
    let top = ro_layer(&d, "top", Some(&base), &[]);
    let home = env.home();
    let link = fs::read_to_string(home.join("base/link")).unwrap();
    assert_eq!(link.len(), 26);
    assert_eq!(
        fs::read_link(home.join("l").join(&link)).unwrap(),
        std::path::Path::new("../base/diff")
    );
    assert!(!home.join("base/lower").exists());
    assert_eq!(
        fs::read_to_string(home.join("top/lower")).unwrap(),
        format!("l/{link}")
    );
    assert!(home.join("top/merged").is_dir());
    assert!(
        !home.join("top/work").exists(),
        "read-only layers have no workdir"
    );
    assert_eq!(d.layer_dir(&top).unwrap(), home.join("top/diff"));
    let status = d.status();
    let keys: Vec<_> = status.iter().map(|(k, _)| k.as_str()).collect();
    for k in [
        "Backing Filesystem",
        "Supports d_type",
        "Native Overlay Diff",
        "Mount API",
        "Max Depth",
    ] {
        assert!(keys.contains(&k), "{k} in {status:?}");
    }
    assert!(fs::read_dir(&home)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".probe-")));
    // Errors.
    assert!(matches!(
        d.create(&base, None, &CreateOpts::default()),
        Err(DriverError::AlreadyExists { .. })
    ));
    assert!(matches!(
        d.create(&id("x"), Some(&id("nope")), &CreateOpts::default()),
        Err(DriverError::ParentNotFound { .. })
    ));
    let mut o = CreateOpts::default();
    o.storage_opt.insert("size".into(), "1G".into());
    assert!(matches!(
        d.create(&id("y"), None, &o),
        Err(DriverError::InvalidOption { .. })
    ));
    assert!(!home.join("y").exists());
    let mut bad = DriverOptions::new();
    bad.insert("bogus".into(), "1".into());
    assert!(matches!(
        Overlay2Driver::new(&home, &bad),
        Err(DriverError::InvalidOption { .. })
    ));
}

#[test]
fn container_writes_never_touch_image_layers() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let img0 = ro_layer(
        &d,
        "img0",
        None,
        &[("etc/os", "debian\n"), ("bin/sh", "sh"), ("gone", "x")],
    );
    let img1 = ro_layer(&d, "img1", Some(&img0), &[("etc/app", "v1\n")]);
    let c = id("ctr");
    let init = c.init_of();
    d.create(&init, Some(&img1), &CreateOpts::read_write())
        .unwrap();
    fs::write(d.layer_dir(&init).unwrap().join("hostname"), "ctr\n").unwrap();
    d.create(&c, Some(&init), &CreateOpts::read_write())
        .unwrap();

    let snapshot = |l| {
        let dir = d.layer_dir(l).unwrap();
        let mut v: Vec<_> = walkdir::WalkDir::new(&dir)
            .sort_by_file_name()
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.path().to_owned(),
                    m.len(),
                    m.mode(),
                    m.mtime(),
                    m.mtime_nsec(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before: Vec<_> = [&img0, &img1, &init].iter().map(|l| snapshot(l)).collect();

    let m = d.mount(&c, &MountOpts::default()).unwrap();
    assert_eq!(m, env.home().join("ctr/merged"));
    assert_eq!(fs::read_to_string(m.join("etc/os")).unwrap(), "debian\n");
    assert_eq!(fs::read_to_string(m.join("etc/app")).unwrap(), "v1\n");
    assert_eq!(fs::read_to_string(m.join("hostname")).unwrap(), "ctr\n");
    fs::write(m.join("etc/os"), "changed\n").unwrap();
    fs::write(m.join("new"), "n").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::create_dir(m.join("newdir")).unwrap();
    assert!(!m.join("gone").exists());

    let rw = d.layer_dir(&c).unwrap();
    let wh = fs::symlink_metadata(rw.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0, "whiteout is 0/0");
    assert_eq!(fs::read_to_string(rw.join("etc/os")).unwrap(), "changed\n");
    let after: Vec<_> = [&img0, &img1, &init].iter().map(|l| snapshot(l)).collect();
    assert_eq!(before, after, "image and init layers unchanged");

    // Native changes of the rw layer.
    let ch: Vec<String> = d
        .changes(&c, Some(&init))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        ch,
        vec!["C /etc", "C /etc/os", "D /gone", "A /new", "A /newdir"],
        "{ch:?}"
    );
    assert_eq!(d.diff_size(&c, Some(&init)).unwrap(), 8 + 1);

    // Native diff converts the whiteout back.
    let mut ar = tar::Archive::new(d.diff(&c, Some(&init)).unwrap());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["etc/", "etc/os", ".wh.gone", "new", "newdir/"],
        "{names:?}"
    );

    assert!(matches!(d.remove(&c), Err(DriverError::Busy { .. })));
    d.unmount(&c).unwrap();
    assert!(env.mounts().is_empty());
    d.remove(&c).unwrap();
    assert!(!env.home().join("ctr").exists());
}

#[test]
fn read_only_view_and_base_layer() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let b = ro_layer(&d, "b", None, &[("f", "base")]);
    let t = ro_layer(&d, "t", Some(&b), &[("g", "top")]);
    // Base layer: diff/ itself, counted.
    let p = d.mount(&b, &MountOpts::default()).unwrap();
    assert_eq!(p, d.layer_dir(&b).unwrap());
    assert_eq!(d.mount_count(&b).unwrap(), 1);
    assert!(matches!(d.remove(&b), Err(DriverError::Busy { .. })));
    d.unmount(&b).unwrap();
    assert_eq!(d.mount_count(&b).unwrap(), 0);
    // View: no upper, read-only.
    let m = d.mount(&t, &MountOpts::default()).unwrap();
    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "base");
    assert_eq!(fs::read_to_string(m.join("g")).unwrap(), "top");
    let info = driver_core::mountinfo::mount_at(&m).unwrap().unwrap();
    assert_eq!(info.fstype, "overlay");
    assert!(
        !info.super_options.contains("upperdir"),
        "{}",
        info.super_options
    );
    assert!(
        fs::write(m.join("x"), "no").is_err(),
        "a view without upper is read-only"
    );
    d.unmount(&t).unwrap();
    assert!(env.mounts().is_empty());
}

#[test]
fn refcount_survives_restart_and_external_umount() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d1 = env.driver();
    let b = ro_layer(&d1, "b", None, &[("f", "1")]);
    let c = id("c");
    d1.create(&c, Some(&b), &CreateOpts::read_write()).unwrap();
    let p1 = d1.mount(&c, &MountOpts::default()).unwrap();
    let p2 = d1.mount(&c, &MountOpts::default()).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(env.mounts(), vec![p1.clone()], "mounted once");
    drop(d1);
    // A new process (driver instance) sees the count.
    let d2 = env.driver();
    assert_eq!(d2.mount_count(&c).unwrap(), 2);
    assert_eq!(d2.mount(&c, &MountOpts::default()).unwrap(), p1);
    assert_eq!(d2.mount_count(&c).unwrap(), 3);
    d2.unmount(&c).unwrap();
    d2.unmount(&c).unwrap();
    assert_eq!(d2.mount_count(&c).unwrap(), 1);
    assert!(
        driver_core::mountinfo::is_mount_point(&p1).unwrap(),
        "still mounted"
    );
    // Someone unmounts behind our back (or a reboot): the count reads 0.
    nix::mount::umount2(&p1, nix::mount::MntFlags::empty()).unwrap();
    let d3 = env.driver();
    assert_eq!(d3.mount_count(&c).unwrap(), 0);
    d3.unmount(&c).unwrap();
    assert_eq!(d3.mount(&c, &MountOpts::default()).unwrap(), p1);
    assert_eq!(d3.mount_count(&c).unwrap(), 1);
    d3.unmount(&c).unwrap();
    assert!(env.mounts().is_empty());
}

#[test]
fn missing_short_link_is_recreated_on_startup() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let b = ro_layer(&d, "b", None, &[("f", "1")]);
    let c = id("c");
    d.create(&c, Some(&b), &CreateOpts::read_write()).unwrap();
    let link = fs::read_to_string(env.home().join("b/link")).unwrap();
    fs::remove_file(env.home().join("l").join(&link)).unwrap();
    // Interrupted removal leftover, debris of a dead creator, a live creator's work.
    fs::create_dir_all(env.home().join(".old-removing/diff")).unwrap();
    fs::create_dir_all(env.home().join(".creating-999999999-x/diff")).unwrap();
    let live = env
        .home()
        .join(format!(".creating-{}-y", std::process::id()));
    fs::create_dir_all(live.join("diff")).unwrap();
    drop(d);
    let d = env.driver();
    assert!(!env.home().join(".creating-999999999-x").exists());
    assert!(live.exists(), "a live process's create is left alone");
    fs::remove_dir_all(&live).unwrap();
    assert_eq!(
        fs::read_link(env.home().join("l").join(&link)).unwrap(),
        std::path::Path::new("../b/diff")
    );
    assert!(!env.home().join(".old-removing").exists());
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "1");
    d.unmount(&c).unwrap();
    // A layer that lost its link file gets its name back from l/ (children keep working)...
    fs::remove_file(env.home().join("b/link")).unwrap();
    d.repair(true).unwrap();
    assert_eq!(fs::read_to_string(env.home().join("b/link")).unwrap(), link);
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "1");
    d.unmount(&c).unwrap();
    // ...or a new one when the short link is gone too.
    let old = fs::read_to_string(env.home().join("c/link")).unwrap();
    fs::remove_file(env.home().join("c/link")).unwrap();
    fs::remove_file(env.home().join("l").join(&old)).unwrap();
    d.repair(true).unwrap();
    let new = fs::read_to_string(env.home().join("c/link")).unwrap();
    assert_eq!(new.len(), 26);
    assert_ne!(new, old);
    assert!(env.home().join("l").join(new).exists());
}

/// A layer directory whose `diff/` is gone (damage: a create renames a whole layer into
/// place) is a leftover that the full repair removes, with its short link; the quick
/// startup pass never recreates a link to it. Before, `leftovers` did not list it and
/// every open recreated its dangling short link, so `check --repair` ended with the
/// link reported again (exit 8).
#[test]
fn a_layer_without_diff_is_a_leftover_and_repair_removes_it() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let b = ro_layer(&d, "b", None, &[("f", "1")]);
    let link = fs::read_to_string(env.home().join("b/link")).unwrap();
    fs::remove_dir_all(env.home().join("b/diff")).unwrap();
    fs::remove_file(env.home().join("l").join(&link)).unwrap();
    assert!(!d.layers().unwrap().contains(&b));
    assert!(
        d.leftovers().unwrap().contains(&env.home().join("b")),
        "{:?}",
        d.leftovers().unwrap()
    );
    d.cleanup().unwrap();
    assert!(
        fs::symlink_metadata(env.home().join("l").join(&link)).is_err(),
        "no short link recreated for a layer without content"
    );
    Driver::repair(&d).unwrap();
    assert!(!env.home().join("b").exists());
    assert!(
        d.leftovers().unwrap().is_empty(),
        "{:?}",
        d.leftovers().unwrap()
    );
}

/// Builds a chain of `n` read-only layers, layer k holding `layer<k>` = "k".
fn chain(d: &Overlay2Driver, n: usize) -> Vec<driver_core::LayerId> {
    let mut ids: Vec<driver_core::LayerId> = Vec::with_capacity(n);
    for k in 0..n {
        let name = format!("layer{k}");
        let l = ro_layer(d, &name, ids.last(), &[(&name, &k.to_string())]);
        ids.push(l);
    }
    ids
}

#[test]
fn stack_of_500_mounts_directly_and_501_through_an_internal_mount() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    assert_eq!(
        d.mount_api(),
        driver_overlay2::mounter::MountApi::New,
        "this kernel has lowerdir+"
    );
    let ids = chain(&d, MAX_LOWER_LAYERS);
    let top = ids.last().unwrap();
    let m = d.mount(top, &MountOpts::default()).unwrap();
    for k in 0..MAX_LOWER_LAYERS {
        assert_eq!(
            fs::read_to_string(m.join(format!("layer{k}"))).unwrap(),
            k.to_string(),
            "file of layer {k}"
        );
    }
    assert_eq!(env.mounts(), vec![m.clone()], "500 lowers: one mount");
    d.unmount(top).unwrap();

    // A 501st layer (once refused as "image depth 501") is created and mounts.
    let l500 = ro_layer(&d, "layer500", Some(top), &[("layer500", "500")]);
    let c = id("ctr");
    d.create(&c, Some(&l500), &CreateOpts::read_write())
        .unwrap();
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    assert_eq!(fs::read_to_string(m.join("layer0")).unwrap(), "0");
    assert_eq!(fs::read_to_string(m.join("layer499")).unwrap(), "499");
    assert_eq!(fs::read_to_string(m.join("layer500")).unwrap(), "500");
    assert_eq!(
        env.mounts(),
        vec![
            env.home().join(format!(
                "layer{}/lower-merged",
                driver_overlay2::CHUNK_LAYERS - 1
            )),
            m.clone()
        ],
        "the bottom CHUNK_LAYERS (499) layers as one internal mount"
    );
    fs::write(m.join("layer0"), "rw").unwrap();
    assert_eq!(
        fs::read_to_string(d.layer_dir(&ids[0]).unwrap().join("layer0")).unwrap(),
        "0"
    );
    assert_eq!(
        fs::read_to_string(d.layer_dir(&c).unwrap().join("layer0")).unwrap(),
        "rw"
    );
    d.unmount(&c).unwrap();
    assert!(env.mounts().is_empty());
}

#[test]
fn classic_mount_api_works_and_names_the_page_limit() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let mut o = DriverOptions::new();
    o.insert("mount_api".into(), "classic".into());
    let d = env.driver_with(&o);
    // Read-only layers until one would not fit the one-page option string: refused at
    // create, before anything exists.
    let mut ids: Vec<driver_core::LayerId> = Vec::new();
    let err = loop {
        let k = ids.len();
        assert!(k < 200, "no page limit hit");
        let name = format!("layer{k}");
        let l = id(&name);
        match d.create(&l, ids.last(), &CreateOpts::default()) {
            Ok(()) => {
                fs::write(d.layer_dir(&l).unwrap().join(&name), k.to_string()).unwrap();
                ids.push(l);
            }
            Err(e) => {
                assert!(!env.home().join(&name).exists(), "nothing left behind");
                break e;
            }
        }
    };
    let depth = ids.len() + 1;
    assert!(
        (128..150).contains(&depth),
        "relative short links fit ~135: {depth}"
    );
    match &err {
        DriverError::TooDeep {
            depth: dd, limit, ..
        } => {
            assert_eq!(*dd, depth);
            assert_eq!(*limit, depth - 1);
            let msg = err.to_string();
            assert!(msg.contains("one page"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // The deepest accepted layer mounts, with the process cwd untouched.
    let cwd = std::env::current_dir().unwrap();
    let top = ids.last().unwrap();
    let m = d.mount(top, &MountOpts::default()).unwrap();
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "process cwd untouched"
    );
    for k in [0, ids.len() / 2, ids.len() - 1] {
        assert_eq!(
            fs::read_to_string(m.join(format!("layer{k}"))).unwrap(),
            k.to_string()
        );
    }
    d.unmount(top).unwrap();
    // A layer made by the new API beyond the page limit: mount names the limit.
    let dn = env.driver();
    let deep = id("deep");
    dn.create(&deep, Some(top), &CreateOpts::default()).unwrap();
    let deeper = id("deeper");
    dn.create(&deeper, Some(&deep), &CreateOpts::default())
        .unwrap();
    match d.mount(&deeper, &MountOpts::default()) {
        Err(e @ DriverError::TooDeep { .. }) => {
            assert!(e.to_string().contains("one page"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.mount_count(&deeper).unwrap(), 0);
    assert!(env.mounts().is_empty());
}

#[test]
fn mountopt_and_label_options_reach_the_kernel() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let mut o = DriverOptions::new();
    o.insert("mountopt".into(), "nodev,volatile".into());
    let d = env.driver_with(&o);
    let b = ro_layer(&d, "b", None, &[("f", "1")]);
    let c = id("c");
    d.create(&c, Some(&b), &CreateOpts::read_write()).unwrap();
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    let info = driver_core::mountinfo::mount_at(&m).unwrap().unwrap();
    assert!(info.mount_options.contains("nodev"), "{info:?}");
    assert!(info.super_options.contains("volatile"), "{info:?}");
    assert_eq!(info.source, "overlay");
    d.unmount(&c).unwrap();

    let mut o = DriverOptions::new();
    o.insert("index".into(), "on".into());
    let d = env.driver_with(&o);
    let c2 = id("c2");
    d.create(&c2, Some(&b), &CreateOpts::read_write()).unwrap();
    let m = d.mount(&c2, &MountOpts::default()).unwrap();
    let info = driver_core::mountinfo::mount_at(&m).unwrap().unwrap();
    assert!(info.super_options.contains("index=on"), "{info:?}");
    assert!(d.status().contains(&("Index".to_owned(), "on".to_owned())));
    d.unmount(&c2).unwrap();
}

#[test]
fn concurrent_mounts_count_right_and_mount_once() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let b = ro_layer(&d, "b", None, &[("f", "1")]);
    let c = id("c");
    d.create(&c, Some(&b), &CreateOpts::read_write()).unwrap();
    // Each thread has its own driver instance (own lock file descriptor), like processes.
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                let d = env.driver();
                for _ in 0..15 {
                    let m = d.mount(&c, &MountOpts::default()).unwrap();
                    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "1");
                    d.unmount(&c).unwrap();
                }
            });
        }
        s.spawn(|| {
            for _ in 0..50 {
                let n = env.mounts().len();
                assert!(n <= 1, "mounted {n} times at once");
            }
        });
    });
    assert_eq!(d.mount_count(&c).unwrap(), 0);
    assert!(env.mounts().is_empty());
}
