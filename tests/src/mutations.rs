//! The mutations of issue 8's round trip (add, modify, chmod, chown, delete a lower file
//! and a lower dir, recreate a deleted dir with new content, hard link, symlink, xattr),
//! made through a container's mount of [`crate::fixtures::sample_image`], with what
//! `layerctl diff` must list after them. Shared by the `lifecycle` and `save` tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::tree::{snapshot, Node, Xattrs};

/// mtime given to files written through the mount: whole seconds, as a layer tar keeps
/// them (the exporter writes seconds only), so trees compare exactly.
pub const MTIME: u64 = 1_700_000_000;

fn set_mtime(p: &Path) {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(MTIME);
    fs::File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", p.display()));
}

/// Sets the mtime of `p` itself (a symlink is not followed) to [`MTIME`].
pub fn set_mtime_nofollow(p: &Path) {
    let t = nix::sys::time::TimeSpec::new(MTIME as i64, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

pub fn write_file(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    set_mtime(p);
}

/// The mutations of issue 8's round trip, through the container's mount.
pub fn mutate(m: &Path) {
    // add (a new dir with a file, odd mode), hard link, symlink, xattr on a new file
    fs::create_dir(m.join("added")).unwrap();
    write_file(&m.join("added/file"), b"added through the mount\n");
    fs::set_permissions(m.join("added/file"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::hard_link(m.join("added/file"), m.join("added/file-link")).unwrap();
    symlink("../etc/passwd", m.join("added/sym")).unwrap();
    xattr::set(m.join("added/file"), "user.commit", b"new").unwrap();
    // modify a lower file
    write_file(
        &m.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\nnew:x:2:2::/:/bin/sh\n",
    );
    // chmod, chown, xattr on lower files (copy-up)
    fs::set_permissions(m.join("etc/odd-owner"), fs::Permissions::from_mode(0o600)).unwrap();
    lchown(m.join("home/big"), Some(2000), Some(3000)).unwrap();
    xattr::set(m.join("etc/new"), "user.commit", b"on a lower file").unwrap();
    // delete a lower file and a lower dir
    fs::remove_file(m.join("bin/suid")).unwrap();
    fs::remove_dir_all(m.join("sticky")).unwrap();
    // recreate a deleted dir with new content
    fs::remove_dir_all(m.join("opaque")).unwrap();
    fs::create_dir(m.join("opaque")).unwrap();
    fs::set_permissions(m.join("opaque"), fs::Permissions::from_mode(0o711)).unwrap();
    write_file(&m.join("opaque/fresh"), b"recreated\n");
    // Every changed entry now has a fixed mtime (the exporter writes directories' and
    // symlinks' too), so the same changes must give the same DiffID on every driver.
    for p in ["added/sym", "added", "bin", "etc", "home", "opaque"] {
        set_mtime_nofollow(&m.join(p));
    }
}

/// What `layerctl diff` must list after [`mutate`] (docker diff: parents of changes
/// are `C`, below an added dir everything is `A`, a recreated dir lists the deletion
/// of each lower name it no longer has).
pub const EXPECTED_DIFF: &str = "\
A /added
A /added/file
A /added/file-link
A /added/sym
C /bin
D /bin/suid
C /etc
C /etc/new
C /etc/odd-owner
C /etc/passwd
C /home
C /home/big
C /opaque
A /opaque/fresh
D /opaque/top
D /opaque/upper
D /sticky
";

/// The tree of a mounted container without the two init files that name it.
pub fn tree(m: &Path) -> BTreeMap<String, Node> {
    let mut s = snapshot(m, Xattrs::User).unwrap();
    for p in ["etc/hosts", "etc/hostname"] {
        assert!(s.remove(p).is_some(), "{p} missing in {}", m.display());
    }
    s
}
