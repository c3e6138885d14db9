use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

/// Branch directories `b0` (top) .. `b<n-1>` in a temp dir.
fn branches(n: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let d = tempfile::tempdir().unwrap();
    let v: Vec<PathBuf> = (0..n).map(|i| d.path().join(format!("b{i}"))).collect();
    for b in &v {
        fs::create_dir(b).unwrap();
    }
    (d, v)
}

fn file(p: &Path, data: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn names(s: &LayerStack, rel: &str) -> Vec<(String, usize)> {
    s.read_dir(Path::new(rel))
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|(n, e)| (n.to_string_lossy().into_owned(), e.branch))
        .collect()
}

/// An overlay whiteout (0/0 char device); `None` when this process may not mknod.
fn overlay_whiteout(p: &Path) -> Option<()> {
    match nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    ) {
        Ok(()) => Some(()),
        Err(e) if !crate::privileged_required() => {
            eprintln!("SKIP: mknod whiteout: {e}");
            None
        }
        Err(e) => panic!("mknod whiteout {}: {e}", p.display()),
    }
}

#[test]
fn aufs_lookup_whiteouts_opaque_and_merge() {
    let (_d, b) = branches(3);
    // b2 (bottom): a/x a/y d/old f
    file(&b[2].join("a/x"), "x2");
    file(&b[2].join("a/y"), "y2");
    file(&b[2].join("d/old"), "old");
    file(&b[2].join("f"), "f2");
    // b1: a/x replaced, a/.wh.y, d opaque with d/mid, .wh.f
    file(&b[1].join("a/x"), "x1");
    file(&b[1].join("a/.wh.y"), "");
    file(&b[1].join("d/.wh..wh..opq"), "");
    file(&b[1].join("d/mid"), "mid");
    file(&b[1].join(".wh.f"), "");
    // b0 (top): f again (after the whiteout below), d/new
    file(&b[0].join("f"), "f0");
    file(&b[0].join("d/new"), "new");
    let s = LayerStack::new(b.clone(), WhiteoutFormat::Aufs);

    let f = s.lookup(Path::new("a/x")).unwrap().unwrap();
    assert_eq!(
        (f.branch, fs::read_to_string(&f.path).unwrap().as_str()),
        (1, "x1")
    );
    assert!(s.lookup(Path::new("a/y")).unwrap().is_none(), "whited out");
    assert_eq!(s.lookup(Path::new("f")).unwrap().unwrap().branch, 0);
    assert!(
        s.lookup(Path::new("d/old")).unwrap().is_none(),
        "below an opaque dir"
    );
    assert_eq!(
        s.lookup(Path::new("d")).unwrap().unwrap().merged,
        vec![0, 1]
    );
    assert_eq!(
        s.lookup(Path::new("a")).unwrap().unwrap().merged,
        vec![1, 2]
    );
    assert!(
        s.lookup(Path::new(".wh.f")).unwrap().is_none(),
        "whiteouts are no entries"
    );
    assert_eq!(names(&s, "d"), vec![("mid".into(), 1), ("new".into(), 0)]);
    assert_eq!(names(&s, "a"), vec![("x".into(), 1)]);
    assert_eq!(
        names(&s, ""),
        vec![("a".into(), 1), ("d".into(), 0), ("f".into(), 0)]
    );
}

#[test]
fn non_directory_ends_the_merge() {
    let (_d, b) = branches(3);
    file(&b[2].join("x/deep"), "deep");
    file(&b[1].join("x"), "a file");
    fs::create_dir(b[0].join("x")).unwrap();
    file(&b[0].join("x/top"), "top");
    let s = LayerStack::new(b, WhiteoutFormat::Aufs);
    assert_eq!(s.lookup(Path::new("x")).unwrap().unwrap().merged, vec![0]);
    assert!(s.lookup(Path::new("x/deep")).unwrap().is_none());
    assert_eq!(names(&s, "x"), vec![("top".into(), 0)]);
}

/// Names of 252-255 bytes have no possible `.wh.` whiteout (it would exceed NAME_MAX):
/// a lower entry with such a name is found and listed, the 251-byte one is hidden by
/// its 255-byte whiteout as usual.
#[test]
fn aufs_names_too_long_for_a_whiteout_are_found_below() {
    let (_d, b) = branches(2);
    let ok = "a".repeat(251);
    file(&b[1].join(&ok), "ok");
    fs::write(b[0].join(format!(".wh.{ok}")), "").unwrap();
    let mut want = Vec::new();
    for n in 252..=255 {
        let name = "b".repeat(n);
        file(&b[1].join(&name), "long");
        want.push((name, 1));
    }
    let s = LayerStack::new(b, WhiteoutFormat::Aufs);
    assert!(s.lookup(Path::new(&ok)).unwrap().is_none());
    for (name, _) in &want {
        let f = s
            .lookup(Path::new(name))
            .unwrap()
            .expect("lower long name found");
        assert_eq!(f.branch, 1);
    }
    let mut got = names(&s, "");
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn resolve_follows_symlinks_in_the_merged_view_inside_the_root() {
    let (_d, b) = branches(2);
    // usrmerge in the lower branch; the top branch has usr/bin/new.
    file(&b[1].join("usr/bin/sh"), "sh");
    symlink("usr/bin", b[1].join("bin")).unwrap();
    symlink("/usr/lib", b[1].join("lib")).unwrap();
    symlink("../../../../etc", b[1].join("usr/escape")).unwrap();
    symlink("loop2", b[1].join("loop1")).unwrap();
    symlink("loop1", b[1].join("loop2")).unwrap();
    file(&b[0].join("usr/bin/new"), "new");
    let s = LayerStack::new(b, WhiteoutFormat::Aufs);

    let r = s.resolve(Path::new("bin/sh"), true).unwrap();
    assert_eq!(r.path, Path::new("usr/bin/sh"));
    assert_eq!(r.found.unwrap().branch, 1);
    let r = s.resolve(Path::new("bin/new"), false).unwrap();
    assert_eq!(
        (r.path.as_path(), r.found.unwrap().branch),
        (Path::new("usr/bin/new"), 0)
    );
    // Missing parts are kept as given.
    let r = s.resolve(Path::new("lib/x/y"), true).unwrap();
    assert_eq!(r.path, Path::new("usr/lib/x/y"));
    assert!(r.found.is_none());
    // `..` never climbs above the root.
    let r = s.resolve(Path::new("usr/escape/passwd"), true).unwrap();
    assert_eq!(r.path, Path::new("etc/passwd"));
    // The final symlink is kept unless asked.
    let r = s.resolve(Path::new("bin"), false).unwrap();
    assert!(r.found.unwrap().meta.file_type().is_symlink());
    let e = s.resolve(Path::new("loop1/x"), true).unwrap_err();
    assert!(e.to_string().contains("symbolic links"), "{e}");
    // A lookup never follows a symlink.
    assert!(s.lookup(Path::new("bin/sh")).unwrap().is_none());
}

#[test]
fn overlay_whiteouts_and_opaque_xattr() {
    let (_d, b) = branches(3);
    file(&b[2].join("d/old"), "old");
    file(&b[2].join("gone"), "gone");
    file(&b[2].join("keep"), "keep");
    fs::create_dir(b[1].join("d")).unwrap();
    file(&b[1].join("d/mid"), "mid");
    if overlay_whiteout(&b[1].join("gone")).is_none() {
        return;
    }
    fs::create_dir(b[0].join("d")).unwrap();
    xattr::set(b[0].join("d"), OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_VALUE).unwrap();
    file(&b[0].join("d/new"), "new");
    let s = LayerStack::new(b.clone(), WhiteoutFormat::Overlay);
    assert!(s.lookup(Path::new("gone")).unwrap().is_none());
    assert!(s.lookup(Path::new("d/mid")).unwrap().is_none());
    assert_eq!(names(&s, "d"), vec![("new".into(), 0)]);
    assert_eq!(names(&s, ""), vec![("d".into(), 0), ("keep".into(), 2)]);
    // Without the opaque top, d merges b1 and b2.
    let below = s.below_top();
    assert_eq!(
        names(&below, "d"),
        vec![("mid".into(), 0), ("old".into(), 1)]
    );
    assert_eq!(below.with_top(b[0].clone()).branches(), s.branches());
}

#[test]
fn lookup_refuses_dotdot_and_absolute() {
    let (_d, b) = branches(1);
    let s = LayerStack::new(b, WhiteoutFormat::Delete);
    assert!(s.lookup(Path::new("../x")).is_err());
    assert!(s.lookup(Path::new("/etc")).is_err());
    let root = s.lookup(Path::new("")).unwrap().unwrap();
    assert!(root.is_dir());
    fs::set_permissions(&root.path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn deletions_follow_the_branch_order() {
    let (_d, b) = branches(3);
    let (top, mid, low) = (&b[0], &b[1], &b[2]);
    // top: deletes a/x and d; makes o opaque; recreates r (a file) over a lower deletion.
    fs::create_dir_all(top.join("a")).unwrap();
    if overlay_whiteout(&top.join("a/x")).is_none() {
        return;
    }
    overlay_whiteout(&top.join("d")).unwrap();
    fs::create_dir_all(top.join("o/in")).unwrap();
    xattr::set(top.join("o"), OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_VALUE).unwrap();
    fs::write(top.join("r"), b"r").unwrap();
    // mid: deletes a (whose a/x the top deleted too), d/y (below top's deletion of d),
    // o/z (below top's opaque o), r, and holds a char device that is not a whiteout.
    overlay_whiteout(&mid.join("a")).unwrap();
    fs::create_dir_all(mid.join("d")).unwrap();
    overlay_whiteout(&mid.join("d/y")).unwrap();
    fs::create_dir_all(mid.join("o")).unwrap();
    overlay_whiteout(&mid.join("o/z")).unwrap();
    overlay_whiteout(&mid.join("r")).unwrap();
    nix::sys::stat::mknod(
        &mid.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    // low: an opaque dir p with a deletion inside (covered by p's opacity).
    fs::create_dir_all(low.join("p")).unwrap();
    overlay_whiteout(&low.join("p/q")).unwrap();
    xattr::set(low.join("p"), OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_VALUE).unwrap();
    let got = LayerStack::new(b.clone(), WhiteoutFormat::Overlay)
        .deletions()
        .unwrap();
    let want: BTreeMap<PathBuf, Deletion> = [
        ("a", Deletion::Opaque),
        ("a/x", Deletion::Whiteout),
        ("d", Deletion::Whiteout),
        ("o", Deletion::Opaque),
        ("p", Deletion::Opaque),
        ("r", Deletion::Whiteout),
    ]
    .into_iter()
    .map(|(p, m)| (PathBuf::from(p), m))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn aufs_deletions_read_wh_files() {
    let (_d, b) = branches(2);
    file(&b[0].join("etc/.wh.passwd"), "");
    file(&b[0].join("var/.wh..wh..opq"), "");
    file(&b[1].join(".wh.tmp"), "");
    file(&b[1].join("etc/.wh.group"), "");
    let got = LayerStack::new(b, WhiteoutFormat::Aufs)
        .deletions()
        .unwrap();
    let want: BTreeMap<PathBuf, Deletion> = [
        ("etc/group", Deletion::Whiteout),
        ("etc/passwd", Deletion::Whiteout),
        ("tmp", Deletion::Whiteout),
        ("var", Deletion::Opaque),
    ]
    .into_iter()
    .map(|(p, m)| (PathBuf::from(p), m))
    .collect();
    assert_eq!(got, want);
}
