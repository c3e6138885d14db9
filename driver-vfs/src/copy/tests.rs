use std::os::unix::fs::{symlink, PermissionsExt};

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
