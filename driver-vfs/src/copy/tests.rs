use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};

use super::*;

fn is_root() -> bool {
    Uid::effective().is_root()
}

#[test]
fn copies_everything_with_metadata() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/file"), b"hello").unwrap();
    fs::write(src.join("a/b/big"), vec![3u8; 300_000]).unwrap();
    fs::hard_link(src.join("a/file"), src.join("hl")).unwrap();
    symlink("a/file", src.join("sym")).unwrap();
    fs::write(src.join("suid"), b"#!").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    xattr::set(src.join("a/file"), "user.k", b"v").unwrap();
    if is_root() {
        nix::unistd::chown(
            &src.join("suid"),
            Some(Uid::from_raw(1234)),
            Some(Gid::from_raw(5678)),
        )
        .unwrap();
        fchownat(
            AT_FDCWD,
            &src.join("sym"),
            Some(Uid::from_raw(7)),
            Some(Gid::from_raw(8)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        mknod(
            &src.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        xattr::set(
            src.join("suid"),
            "security.capability",
            &[
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        )
        .unwrap();
    }
    fs::set_permissions(src.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o1777)).unwrap();

    let dst = d.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_eq!(stats.bytes, 5 + 300_000 + 2);

    for rel in [
        "", "a", "a/b", "a/file", "a/b/big", "hl", "sym", "suid", "empty", "fifo",
    ] {
        let (s, t) = (
            fs::symlink_metadata(src.join(rel)).unwrap(),
            fs::symlink_metadata(dst.join(rel)).unwrap(),
        );
        assert_eq!(s.mode(), t.mode(), "mode of {rel}");
        assert_eq!((s.uid(), s.gid()), (t.uid(), t.gid()), "owner of {rel}");
        assert_eq!(s.size(), t.size(), "size of {rel}");
        assert_eq!(
            (s.mtime(), s.mtime_nsec()),
            (t.mtime(), t.mtime_nsec()),
            "mtime of {rel}"
        );
        assert_eq!(
            driver_core::changes::read_xattrs(&src.join(rel)).unwrap(),
            driver_core::changes::read_xattrs(&dst.join(rel)).unwrap(),
            "xattrs of {rel}"
        );
    }
    assert_eq!(fs::read(dst.join("a/file")).unwrap(), b"hello");
    assert_eq!(fs::read(dst.join("a/b/big")).unwrap(), vec![3u8; 300_000]);
    assert_eq!(fs::read_link(dst.join("sym")).unwrap(), Path::new("a/file"));
    let (f, h) = (
        fs::metadata(dst.join("a/file")).unwrap(),
        fs::metadata(dst.join("hl")).unwrap(),
    );
    assert_eq!(f.ino(), h.ino(), "hard link kept");
    if is_root() {
        let n = fs::symlink_metadata(dst.join("null")).unwrap();
        assert!(n.file_type().is_char_device());
        assert_eq!(n.rdev(), nix::sys::stat::makedev(1, 3));
        assert!(
            xattr::get(dst.join("suid"), "security.capability")
                .unwrap()
                .is_some(),
            "capability kept after chown"
        );
    }
    assert!(driver_core::changes::changes_dirs(&dst, Some(&src))
        .unwrap()
        .is_empty());
}

/// Paths (relative to `root`) grouped by inode, for every non-directory, with each
/// path's link count: the shape of the tree's hard-link groups.
fn link_groups(
    root: &Path,
) -> (
    std::collections::BTreeSet<Vec<PathBuf>>,
    std::collections::BTreeMap<PathBuf, u64>,
) {
    let mut by_ino: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut nlink = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let md = e.path().symlink_metadata().unwrap();
        if md.is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().to_owned();
        nlink.insert(rel.clone(), md.nlink());
        by_ino.entry((md.dev(), md.ino())).or_default().push(rel);
    }
    let groups = by_ino
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (groups, nlink)
}

/// Creates a hard link without following a symlink at `from` (linkat, flags 0).
fn link(from: &Path, to: &Path) {
    nix::unistd::linkat(AT_FDCWD, from, AT_FDCWD, to, nix::fcntl::AtFlags::empty()).unwrap();
}

#[test]
fn hard_link_groups_of_every_file_type_are_kept() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("target.txt"), b"t").unwrap();
    // The fault-8 shape: a hard link to a symlink.
    symlink("target.txt", src.join("sl")).unwrap();
    link(&src.join("sl"), &src.join("hl"));
    link(&src.join("sl"), &src.join("d/hl2"));
    // Regular files: a group of three, one across directories.
    fs::write(src.join("f"), b"f").unwrap();
    link(&src.join("f"), &src.join("f2"));
    link(&src.join("f"), &src.join("d/f3"));
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    link(&src.join("fifo"), &src.join("d/fifo2"));
    let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    link(&src.join("sock"), &src.join("d/sock2"));
    let mut want_groups = 4;
    if is_root() {
        mknod(
            &src.join("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        link(&src.join("null"), &src.join("d/null2"));
        mknod(
            &src.join("blk"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(7, 0),
        )
        .unwrap();
        link(&src.join("blk"), &src.join("d/blk2"));
        want_groups += 2;
    } else if driver_core::privileged_required() {
        panic!("LAYERCTL_REQUIRE_PRIVILEGED=1 but not root: device hard links untested");
    }
    let dst = d.path().join("dst");
    copy_tree(&src, &dst).unwrap();
    drop(sock);

    let (sg, sn) = link_groups(&src);
    let (dg, dn) = link_groups(&dst);
    assert_eq!(
        sg.iter().filter(|g| g.len() > 1).count(),
        want_groups,
        "{sg:?}"
    );
    assert_eq!(dg, sg, "the same hard-link groups");
    assert_eq!(dn, sn, "the same link counts");
    assert_eq!(dn[Path::new("hl")], 3);
    let hl = fs::symlink_metadata(dst.join("hl")).unwrap();
    assert!(hl.file_type().is_symlink());
    assert_eq!(
        fs::read_link(dst.join("d/hl2")).unwrap(),
        Path::new("target.txt")
    );
    assert!(fs::symlink_metadata(dst.join("d/sock2"))
        .unwrap()
        .file_type()
        .is_socket());
}
