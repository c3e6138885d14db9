//! One exporter for every driver: the same changes made through the mounted root of a
//! vfs layer and of an overlay2 layer (on the same parent tree) export byte-identical
//! diff tars, native and naive alike; `changes` and `diff_size` agree; and each
//! driver's tar applied onto the other driver's parent gives the same tree.

mod common;

use std::io::Read;

use common::{can_mount, id, Env};
use driver_core::conformance::{
    assert_trees_equal, make_export_changes, populate_base, populate_export_base, tar_rows,
    MtimeCheck,
};
use driver_core::naive::{naive_diff, MountGuard};
use driver_core::{CreateOpts, Driver, LayerId};
use driver_vfs::VfsDriver;

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read diff");
    v
}

fn diff(d: &dyn Driver, l: &LayerId, p: &LayerId) -> Vec<u8> {
    read_all(d.diff(l, Some(p)).expect("diff"))
}

/// Panics with the first differing entry when the tars differ.
fn assert_same_tar(what: &str, a: &[u8], b: &[u8]) {
    if a == b {
        return;
    }
    let (ra, rb) = (tar_rows(a), tar_rows(b));
    let first = ra.iter().zip(&rb).position(|(x, y)| x != y);
    panic!(
        "{what}: tars differ ({} vs {} bytes; first differing entry: {:?})\n{ra:?}\n{rb:?}",
        a.len(),
        b.len(),
        first.map(|i| (&ra[i], &rb[i]))
    );
}

#[test]
fn vfs_and_overlay2_export_the_same_bytes_for_the_same_changes() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let ov = env.driver();
    let vfs = VfsDriver::new(&env.dir.path().join("vfs"), &Default::default()).unwrap();
    let native = ov
        .status()
        .iter()
        .any(|(k, v)| k == "Native Overlay Diff" && v == "true");
    eprintln!("overlay2 native diff: {native}");

    // One parent tree for both: populated on a scratch vfs layer, exported, applied to
    // each driver (so mtimes, owners and hard links are the same on both).
    let scratch = id("scratch");
    vfs.create(&scratch, None, &CreateOpts::read_write())
        .unwrap();
    {
        let m = MountGuard::mount(&vfs as &dyn Driver, &scratch).unwrap();
        populate_base(m.path(), true);
        populate_export_base(m.path());
    }
    let base_tar = read_all(vfs.diff(&scratch, None).unwrap());
    let (base, child, copy) = (id("base"), id("child"), id("copy"));
    let drivers: [&dyn Driver; 2] = [&vfs, &ov];
    for d in drivers {
        d.create(&base, None, &CreateOpts::default()).unwrap();
        d.apply_diff(&base, None, &mut &base_tar[..]).unwrap();
        d.create(&child, Some(&base), &CreateOpts::read_write())
            .unwrap();
        let m = MountGuard::mount(d, &child).unwrap();
        make_export_changes(m.path(), true);
    }

    let (tv, to) = (diff(&vfs, &child, &base), diff(&ov, &child, &base));
    assert_same_tar("vfs vs overlay2", &tv, &to);
    let naive = read_all(naive_diff(&ov, &child, Some(&base)).unwrap());
    assert_same_tar("overlay2 diff vs overlay2 naive diff", &to, &naive);
    let rows = tar_rows(&tv);
    assert!(
        rows.iter().any(|(p, _)| p == "olddir/.wh.sub"),
        "the recreated dir's vanished child: {rows:?}"
    );
    let list = |d: &dyn Driver| -> Vec<String> {
        d.changes(&child, Some(&base))
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    assert_eq!(list(&vfs), list(&ov), "changes");
    assert_eq!(
        vfs.diff_size(&child, Some(&base)).unwrap(),
        ov.diff_size(&child, Some(&base)).unwrap(),
        "diff_size"
    );

    // Each driver's tar onto the other driver's parent gives the same tree.
    ov.create(&copy, Some(&base), &CreateOpts::default())
        .unwrap();
    ov.apply_diff(&copy, Some(&base), &mut &tv[..]).unwrap();
    vfs.create(&copy, Some(&base), &CreateOpts::default())
        .unwrap();
    vfs.apply_diff(&copy, Some(&base), &mut &to[..]).unwrap();
    for (a, b) in [(&vfs as &dyn Driver, &ov as &dyn Driver), (&ov, &vfs)] {
        let (mc, mp) = (
            MountGuard::mount(a, &child).unwrap(),
            MountGuard::mount(b, &copy).unwrap(),
        );
        assert_trees_equal(mc.path(), mp.path(), MtimeCheck::Seconds);
    }
    // And the copies export what the originals did.
    assert_same_tar("overlay2 copy", &diff(&ov, &copy, &base), &tv);
    assert_same_tar("vfs copy", &diff(&vfs, &copy, &base), &to);
}
