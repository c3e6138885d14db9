//! Property test of the naive diff pipeline: for random edits of a copy of a tree,
//! `changes_dirs` + `export_changes` applied (whiteouts as deletions) to another copy of
//! the parent rebuilds the edited tree entry by entry. Needs `--features conformance`
//! for the tree comparison.
#![cfg(feature = "conformance")]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use driver_core::changes::{changes_dirs, export_changes};
use driver_core::conformance::{assert_trees_equal, MtimeCheck};
use driver_core::{apply_tar, ApplyOptions, ChangeKind, WhiteoutFormat};
use proptest::prelude::*;

/// Paths of the base tree the edits pick from.
const PATHS: &[&str] = &[
    "a",
    "a/f1",
    "a/f2",
    "a/sub",
    "a/sub/g",
    "b",
    "b/x",
    "c",
    "d/deep/er/file",
    "l",
];

fn base(root: &Path) {
    fs::create_dir_all(root.join("a/sub")).unwrap();
    fs::create_dir_all(root.join("d/deep/er")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    for (p, c) in [
        ("a/f1", "one"),
        ("a/f2", "two"),
        ("a/sub/g", "g"),
        ("b/x", "x"),
        ("c", "c"),
        ("d/deep/er/file", "deep"),
    ] {
        fs::write(root.join(p), c).unwrap();
    }
    symlink("a/f1", root.join("l")).unwrap();
}

#[derive(Debug, Clone)]
enum Edit {
    Write(usize, Vec<u8>),
    Remove(usize),
    Chmod(usize, u32),
    Mkdir(usize, String),
    Symlink(usize, String),
    Xattr(usize, Vec<u8>),
    HardLink(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let idx = 0..PATHS.len();
    let name = prop_oneof![
        Just("n1".to_string()),
        Just("n2".to_string()),
        Just(".hidden".to_string())
    ];
    prop_oneof![
        (idx.clone(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(i, d)| Edit::Write(i, d)),
        idx.clone().prop_map(Edit::Remove),
        (
            idx.clone(),
            prop_oneof![Just(0o600u32), Just(0o755), Just(0o4755), Just(0o1777)]
        )
            .prop_map(|(i, m)| Edit::Chmod(i, m)),
        (idx.clone(), name.clone()).prop_map(|(i, n)| Edit::Mkdir(i, n)),
        (idx.clone(), name.clone()).prop_map(|(i, n)| Edit::Symlink(i, n)),
        // Binary values, newlines and NULs often: PAX records are length-prefixed both
        // ways (see changes::tests::binary_xattr_pax_record and apply's exthdr.rs).
        (
            idx.clone(),
            prop::collection::vec(prop_oneof![Just(b'\n'), Just(0u8), any::<u8>()], 1..8)
        )
            .prop_map(|(i, v)| Edit::Xattr(i, v)),
        (idx, name).prop_map(|(i, n)| Edit::HardLink(i, n)),
    ]
}

/// Applies one edit; edits that do not fit the current tree are skipped.
fn run(root: &Path, e: &Edit) {
    let p = |i: usize| root.join(PATHS[i]);
    let _ = match e {
        Edit::Write(i, d) => {
            let t = p(*i);
            if t.is_dir() && fs::symlink_metadata(&t).is_ok_and(|m| !m.is_symlink()) {
                fs::remove_dir_all(&t).and_then(|_| fs::write(&t, d))
            } else {
                let _ = fs::remove_file(&t);
                t.parent()
                    .map_or(Ok(()), fs::create_dir_all)
                    .and_then(|_| fs::write(&t, d))
            }
        }
        Edit::Remove(i) => {
            let t = p(*i);
            match fs::symlink_metadata(&t) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&t),
                Ok(_) => fs::remove_file(&t),
                Err(e) => Err(e),
            }
        }
        Edit::Chmod(i, m) => match fs::symlink_metadata(p(*i)) {
            Ok(md) if !md.is_symlink() => {
                fs::set_permissions(p(*i), fs::Permissions::from_mode(*m))
            }
            _ => Ok(()),
        },
        Edit::Mkdir(i, n) => fs::create_dir_all(p(*i).join(n)),
        Edit::Symlink(i, n) => symlink("../c", p(*i).join(n)),
        Edit::Xattr(i, v) => match fs::symlink_metadata(p(*i)) {
            Ok(md) if !md.is_symlink() => xattr::set(p(*i), "user.prop", v),
            _ => Ok(()),
        },
        Edit::HardLink(i, n) => match fs::symlink_metadata(p(*i)) {
            Ok(md) if md.is_file() => fs::hard_link(p(*i), root.join(format!("hl-{n}"))),
            _ => Ok(()),
        },
    };
}

fn cp_a(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn diff_then_apply_rebuilds_the_layer(edits in prop::collection::vec(edit(), 1..10)) {
        let d = tempfile::tempdir().unwrap();
        let (parent, layer, rebuilt) = (d.path().join("p"), d.path().join("l"), d.path().join("r"));
        fs::create_dir(&parent).unwrap();
        base(&parent);
        cp_a(&parent, &layer);
        cp_a(&parent, &rebuilt);
        for e in &edits {
            run(&layer, e);
        }
        let changes = changes_dirs(&layer, Some(&parent)).unwrap();
        prop_assert!(changes.windows(2).all(|w| w[0].path < w[1].path), "sorted, no duplicates");
        let mut tar = export_changes(&layer, &changes).unwrap();
        apply_tar(&rebuilt, &mut tar, &ApplyOptions::new(WhiteoutFormat::Delete)).unwrap();
        assert_trees_equal(&layer, &rebuilt, MtimeCheck::Seconds);
        // And the rebuilt tree shows the same changes against the parent, except that
        // unchanged-content files with whole-second mtimes may now read as modified.
        let again = changes_dirs(&rebuilt, Some(&parent)).unwrap();
        let paths = |v: &[driver_core::Change], k: ChangeKind| -> Vec<_> {
            v.iter().filter(|c| c.kind == k).map(|c| c.path.clone()).collect()
        };
        prop_assert_eq!(paths(&changes, ChangeKind::Delete), paths(&again, ChangeKind::Delete));
        prop_assert_eq!(paths(&changes, ChangeKind::Add), paths(&again, ChangeKind::Add));
    }
}
