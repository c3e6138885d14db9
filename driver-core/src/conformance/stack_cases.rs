//! Conformance cases for the one model of a layer stack: a layer applies as if onto the
//! full tree below it, whatever the driver stores (OCI image-spec `layer.md`; module doc
//! of [`crate::apply`], "Union rules"). Each case applies a small chain of layers with
//! [`Driver::apply_diff`], then checks the mounted tree of the top layer *and* the
//! driver's [`Driver::stack`] view of it against values written here.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{have_root, lid, tree_paths, Factory, Harness, TarBuilder};
use crate::driver::Driver;
use crate::id::LayerId;

impl TarBuilder {
    /// A directory with an owner.
    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("tar dir");
        self
    }
}

/// Applies `tars` as a chain `s0`, `s1`, ... and returns the ids.
fn chain(h: &Harness, tars: &[Vec<u8>]) -> Vec<LayerId> {
    let ids: Vec<LayerId> = (0..tars.len()).map(|i| lid(&format!("s{i}"))).collect();
    for (i, tar) in tars.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| &ids[p]);
        h.create_applied(&ids[i], parent, tar);
    }
    ids
}

/// `(mode & 0o7777, uid, gid)` of `p`, not following a final symlink.
fn attrs(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The same attributes through the mount and through [`Driver::stack`].
fn assert_attrs(d: &dyn Driver, id: &LayerId, root: &Path, rel: &str, want: (u32, u32, u32)) {
    let got = attrs(&root.join(rel));
    let want = if have_root("stack attribute checks") {
        want
    } else {
        (want.0, got.1, got.2)
    };
    assert_eq!(got, want, "{rel} through the mount: (mode, uid, gid)");
    let f = d
        .stack(id)
        .unwrap()
        .lookup(Path::new(rel))
        .unwrap()
        .unwrap_or_else(|| panic!("{rel} missing from the stack view"));
    assert_eq!(attrs(&f.path), want, "{rel} through Driver::stack");
}

/// A layer adding `a/b/new.txt`, `tmp/x` and an opaque marker in `d/` without entries
/// for those directories keeps the lower directories' modes and owners: the implied
/// parents never hide them (moby and containers-storage create them 0755 root in the
/// upper layer, which shows in the container).
pub fn stack_implied_parents(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .dir_owned("a", 0o700, 1000, 1000)
                .dir_owned("a/b", 0o2750, 1000, 1001)
                .file("a/b/old", b"old", 0o644)
                .dir("tmp", 0o1777)
                .dir_owned("d", 0o750, 1000, 1000)
                .file("d/old", b"old", 0o644)
                .finish(),
            TarBuilder::new()
                .file("a/b/new.txt", b"new", 0o600)
                .file("tmp/x", b"x", 0o644)
                .opaque("d")
                .file("d/fresh", b"fresh", 0o644)
                .finish(),
        ],
    );
    let top = &ids[1];
    let m = h.mount(top);
    let root = m.path();
    assert_attrs(h.d(), top, root, "a", (0o700, 1000, 1000));
    assert_attrs(h.d(), top, root, "a/b", (0o2750, 1000, 1001));
    assert_attrs(h.d(), top, root, "tmp", (0o1777, 0, 0));
    assert_attrs(h.d(), top, root, "d", (0o750, 1000, 1000));
    assert_eq!(read(&root.join("a/b/old")), "old");
    assert_eq!(read(&root.join("a/b/new.txt")), "new");
    assert_eq!(
        tree_paths(root),
        [
            "a",
            "a/b",
            "a/b/new.txt",
            "a/b/old",
            "d",
            "d/fresh",
            "tmp",
            "tmp/x"
        ]
    );
    let listing: Vec<String> = h
        .d()
        .stack(top)
        .unwrap()
        .read_dir(Path::new("d"))
        .unwrap()
        .unwrap()
        .into_keys()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(listing, ["fresh"], "the opaque d through Driver::stack");
}

/// usrmerge: entries below a lower symlink (`bin -> usr/bin`, `lib -> /usr/lib`) go where
/// the symlink points, inside the root, as umoci and GNU tar do; the symlinks stay; a
/// hard link to a lower file through a symlinked parent links that file's content.
pub fn stack_symlinked_parents(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .dir("usr", 0o755)
                .dir("usr/bin", 0o755)
                .file("usr/bin/sh", b"sh", 0o755)
                .dir("usr/lib", 0o755)
                .file("usr/lib/libc", b"libc", 0o644)
                .symlink("bin", "usr/bin")
                .symlink("lib", "/usr/lib")
                .symlink("chain1", "chain2")
                .symlink("chain2", "usr/../usr/lib")
                .finish(),
            TarBuilder::new()
                .file("bin/newtool", b"newtool", 0o755)
                .whiteout("lib/libc")
                .file("chain1/libz", b"libz", 0o644)
                .hardlink("bin/sh2", "bin/sh")
                .finish(),
        ],
    );
    let m = h.mount(&ids[1]);
    let root = m.path();
    for l in ["bin", "lib", "chain1", "chain2"] {
        assert!(
            fs::symlink_metadata(root.join(l))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{l} stays a symlink"
        );
    }
    assert_eq!(read(&root.join("usr/bin/newtool")), "newtool");
    assert_eq!(read(&root.join("usr/bin/sh")), "sh", "bin/sh still there");
    assert_eq!(read(&root.join("usr/bin/sh2")), "sh");
    assert_eq!(read(&root.join("usr/lib/libz")), "libz");
    assert!(
        !root.join("usr/lib/libc").exists(),
        "lib/.wh.libc deleted usr/lib/libc"
    );
    assert_eq!(
        tree_paths(root),
        [
            "bin",
            "chain1",
            "chain2",
            "lib",
            "usr",
            "usr/bin",
            "usr/bin/newtool",
            "usr/bin/sh",
            "usr/bin/sh2",
            "usr/lib",
            "usr/lib/libz",
        ]
    );
    let s = h.d().stack(&ids[1]).unwrap();
    let r = s.resolve(Path::new("bin/newtool"), true).unwrap();
    assert_eq!(r.path, Path::new("usr/bin/newtool"));
}

/// Whiteouts apply to lower layers only (OCI image-spec `layer.md`): a layer holding
/// `f` then `.wh.f` shows its `f`; `d/`, `d/new` then `.wh.d` shows `d/new` and hides the
/// lower `d/old`; `.wh.e` then `e/`, `e/new` likewise; a whiteout in a directory that
/// exists nowhere makes nothing.
pub fn stack_same_layer_whiteouts(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .file("f", b"old f", 0o644)
                .dir("d", 0o755)
                .file("d/old", b"old", 0o644)
                .dir("e", 0o755)
                .file("e/old", b"old", 0o644)
                .dir("g", 0o755)
                .file("g/old", b"old", 0o644)
                .finish(),
            TarBuilder::new()
                .file("f", b"new f", 0o644)
                .whiteout("f")
                .dir("d", 0o755)
                .file("d/new", b"new", 0o644)
                .whiteout("d")
                .whiteout("e")
                .dir("e", 0o755)
                .file("e/new", b"new", 0o644)
                .file("g/sub/new", b"new", 0o644)
                .whiteout("g")
                .whiteout("nowhere/x")
                .finish(),
        ],
    );
    let m = h.mount(&ids[1]);
    let root = m.path();
    assert_eq!(read(&root.join("f")), "new f");
    assert_eq!(read(&root.join("d/new")), "new");
    assert_eq!(
        tree_paths(root),
        ["d", "d/new", "e", "e/new", "f", "g", "g/sub", "g/sub/new"]
    );
}

/// An upper layer deletes a directory and the stack view says so: `Driver::stack` of
/// the top layer finds no `dev` although a lower layer has one (the init layer relies
/// on it), and an opaque directory's lower children are not listed.
pub fn stack_deleted_dir_is_gone(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .dir_owned("dev", 0o700, 1000, 1000)
                .file("dev/null", b"", 0o644)
                .dir("etc", 0o755)
                .file("etc/old", b"old", 0o644)
                .finish(),
            TarBuilder::new()
                .whiteout("dev")
                .dir("etc", 0o755)
                .opaque("etc")
                .file("etc/new", b"new", 0o644)
                .finish(),
        ],
    );
    let s = h.d().stack(&ids[1]).unwrap();
    assert!(s.lookup(Path::new("dev")).unwrap().is_none());
    assert!(s.lookup(Path::new("dev/null")).unwrap().is_none());
    let etc: Vec<String> = s
        .read_dir(Path::new("etc"))
        .unwrap()
        .unwrap()
        .into_keys()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(etc, ["new"]);
    let below = h.d().stack(&ids[0]).unwrap();
    assert!(below.lookup(Path::new("dev/null")).unwrap().is_some());
    let m = h.mount(&ids[1]);
    assert_eq!(tree_paths(m.path()), ["etc", "etc/new"]);
}

/// A hard link to a lower file that has other names joins the whole group, as when the
/// layers are extracted onto one tree (GNU tar, umoci): every visible name of the
/// inode and the new link are one inode; a name an upper layer deleted is not in it.
pub fn stack_hardlink_joins_lower_group(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .dir("usr", 0o755)
                .dir("usr/bin", 0o755)
                .file("usr/bin/a", b"group", 0o755)
                .hardlink("usr/bin/b", "usr/bin/a")
                .hardlink("c", "usr/bin/a")
                .hardlink("gone", "usr/bin/a")
                .finish(),
            TarBuilder::new().whiteout("gone").finish(),
            TarBuilder::new()
                .hardlink("usr/bin/d", "usr/bin/a")
                .whiteout("c")
                .finish(),
        ],
    );
    let m = h.mount(&ids[2]);
    let root = m.path();
    let id = |rel: &str| {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        (md.dev(), md.ino(), md.nlink())
    };
    let a = id("usr/bin/a");
    assert_eq!(a.2, 3, "usr/bin/a, usr/bin/b, usr/bin/d");
    assert_eq!(id("usr/bin/b"), a);
    assert_eq!(id("usr/bin/d"), a);
    assert_eq!(read(&root.join("usr/bin/d")), "group");
    assert_eq!(
        tree_paths(root),
        ["usr", "usr/bin", "usr/bin/a", "usr/bin/b", "usr/bin/d"]
    );
}

/// An opaque marker at the layer root hides everything below the layer (overlayfs
/// ignores the opaque xattr on a layer root, so overlay2 must spell it out), while the
/// layer's own entries stay, also below a directory the layer below has too.
pub fn stack_opaque_root(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .dir("a", 0o755)
                .file("a/old", b"old", 0o644)
                .file("b", b"b", 0o644)
                .dir("c", 0o755)
                .file("c/old", b"old", 0o644)
                .finish(),
            TarBuilder::new()
                .file("a/new", b"new", 0o644)
                .whiteout("c/old")
                .opaque(".")
                .file("d", b"d", 0o644)
                .finish(),
        ],
    );
    let m = h.mount(&ids[1]);
    assert_eq!(tree_paths(m.path()), ["a", "a/new", "d"]);
}

/// The image's root entry (`./`) sets the container root's mode and owner on every
/// driver, also through layers above it and a read-write layer.
pub fn stack_root_entry(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids = chain(
        &h,
        &[
            TarBuilder::new()
                .dir_owned("./", 0o750, 1000, 1001)
                .file("f", b"f", 0o644)
                .finish(),
            TarBuilder::new().file("g", b"g", 0o644).finish(),
        ],
    );
    let rw = lid("rw");
    h.create_rw(&rw, Some(&ids[1]));
    let m = h.mount(&rw);
    let want = if have_root("stack_root_entry") {
        (0o750, 1000, 1001)
    } else {
        let a = attrs(m.path());
        (0o750, a.1, a.2)
    };
    assert_eq!(attrs(m.path()), want, "container root");
    drop(m);
    let m = h.mount(&ids[1]);
    assert_eq!(attrs(m.path()), want, "image view root");
}
