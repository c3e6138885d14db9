//! The shared driver conformance suite (moby's graphtest, containerd's snapshotter
//! testsuite): every driver crate runs it, and a driver that fails it is not done.
//!
//! Each case is a `pub fn` taking a factory that builds the driver on a given home
//! directory; each case makes its own temporary home (under `$LAYERCTL_TEST_DIR` if set,
//! else the system temp dir). A driver crate runs the whole suite with one macro line:
//!
//! ```ignore
//! driver_core::conformance_tests!(|home| Box::new(VfsDriver::new(home, &Default::default()).unwrap()));
//! // or with a deeper stack for deep_layer_read (default 128):
//! driver_core::conformance_tests!(|home| ..., deep_depth = 500);
//! ```
//!
//! Cases that need root (owners, device nodes) check only what they can when not root,
//! and panic instead when [`crate::privileged_required`]. Every mount is released by a
//! guard, also when an assertion fails.
//!
//! The helpers ([`tree_entries`], [`assert_trees_equal`], [`TarBuilder`]) are public so
//! other test suites can use them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::changes::read_xattrs;
use crate::driver::{ChangeKind, CreateOpts, Driver};
use crate::error::DriverError;
use crate::id::LayerId;
use crate::naive::MountGuard;

mod listing;
mod recovery;
mod stack_cases;
pub use listing::*;
pub use recovery::*;
pub use stack_cases::*;

/// Builds a driver whose home is the given directory.
pub type Factory<'a> = &'a dyn Fn(&Path) -> Box<dyn Driver>;

/// Gives a closure the factory signature (so `Box::new(MyDriver)` coerces).
pub fn factory<F: Fn(&Path) -> Box<dyn Driver>>(f: F) -> F {
    f
}

/// Expands to one `#[test]` per conformance case, named after the case.
#[macro_export]
macro_rules! conformance_tests {
    (@cases $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&__conformance_factory)
            }
        )*
    };
    ($factory:expr) => {
        $crate::conformance_tests!($factory, deep_depth = 128);
    };
    ($factory:expr, deep_depth = $depth:expr) => {
        fn __conformance_factory(home: &::std::path::Path) -> ::std::boxed::Box<dyn $crate::Driver> {
            let f = $crate::conformance::factory($factory);
            f(home)
        }
        $crate::conformance_tests!(@cases
            create_empty, create_base, create_snap, diff_apply, changes,
            whiteouts_and_opaque_through_layers, mount_refcount, remove_mounted_is_busy,
            apply_diff_returns_size, remove_leaves_nothing, cleanup_keeps_layers,
            create_beside_cleanup,
            stack_implied_parents, stack_symlinked_parents, stack_same_layer_whiteouts,
            stack_deleted_dir_is_gone, stack_hardlink_joins_lower_group, stack_opaque_root,
            stack_root_entry,
            layers_and_leftovers,
            export_round_trip, export_shrinking_file, export_growing_file,
            dead_mount_then_mount, dead_mount_then_unmount, dead_mount_then_cleanup,
            reopened_driver_recovers_state);
        #[test]
        fn deep_layer_read() {
            $crate::conformance::deep_layer_read(&__conformance_factory, $depth)
        }
    };
}

/// A driver in a fresh temporary home. The driver is dropped before the directory.
pub struct Harness {
    /// The driver under test.
    pub driver: Box<dyn Driver>,
    home: tempfile::TempDir,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("driver", &self.driver)
            .field("home", &self.home.path())
            .finish()
    }
}

impl Harness {
    /// Makes a temp home and builds the driver in `<tmp>/home`.
    pub fn new(factory: Factory<'_>) -> Self {
        let base = std::env::var_os("LAYERCTL_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&base).expect("create test dir");
        let home = tempfile::Builder::new()
            .prefix("layerctl-conformance-")
            .tempdir_in(base)
            .expect("create temp home");
        let driver = factory(&home.path().join("home"));
        Harness { driver, home }
    }

    /// A second driver instance on the same home, built by `factory` (as a new
    /// process opens the driver): all it knows comes from disk.
    pub fn reopen(&self, factory: Factory<'_>) -> Box<dyn Driver> {
        factory(&self.home.path().join("home"))
    }

    /// The driver.
    pub fn d(&self) -> &dyn Driver {
        &*self.driver
    }

    /// Mounts `id` until the guard drops.
    pub fn mount(&self, id: &LayerId) -> MountGuard<&dyn Driver> {
        MountGuard::mount(self.d(), id).unwrap_or_else(|e| panic!("mount {id}: {e}"))
    }

    /// Creates `id` (read-write) on `parent`.
    pub fn create_rw(&self, id: &LayerId, parent: Option<&LayerId>) {
        self.d()
            .create(id, parent, &CreateOpts::read_write())
            .unwrap_or_else(|e| panic!("create {id}: {e}"));
    }

    /// Creates `id` (read-only image layer) on `parent` and applies `tar` to it.
    pub fn create_applied(&self, id: &LayerId, parent: Option<&LayerId>, tar: &[u8]) -> u64 {
        self.d()
            .create(id, parent, &CreateOpts::default())
            .unwrap_or_else(|e| panic!("create {id}: {e}"));
        self.d()
            .apply_diff(id, parent, &mut &tar[..])
            .unwrap_or_else(|e| panic!("apply_diff {id}: {e}"))
    }
}

/// A layer id for tests.
pub fn lid(s: &str) -> LayerId {
    LayerId::new(s).expect("valid test id")
}

/// Whether we run as root. When not, and [`crate::privileged_required`], panics.
pub fn have_root(what: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if crate::privileged_required() {
        panic!("{what} needs root and LAYERCTL_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("skipping the root-only part of {what}: not root");
    false
}

// ---------------------------------------------------------------------------------------
// Tree comparison

/// How [`tree_entries`] records modification times of non-directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtimeCheck {
    /// Seconds and nanoseconds.
    Exact,
    /// Whole seconds (what a tar round trip keeps).
    Seconds,
    /// Not compared.
    Ignore,
}

/// One entry of a tree as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// `d` dir, `f` file, `l` symlink, `c`/`b` device, `p` fifo, `s` socket.
    pub kind: char,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of regular files and symlinks.
    pub size: Option<u64>,
    /// Hash of a regular file's content.
    pub content: Option<u64>,
    /// Symlink target.
    pub link: Option<PathBuf>,
    /// Device number of devices.
    pub rdev: Option<u64>,
    /// Extended attributes except the union filesystems' private `trusted.overlay.*`.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// Mtime of non-directories per [`MtimeCheck`].
    pub mtime: Option<(i64, i64)>,
}

/// Every entry below `root` (not `root` itself), keyed by relative path.
pub fn tree_entries(root: &Path, mtime: MtimeCheck) -> BTreeMap<PathBuf, EntryInfo> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.unwrap_or_else(|e| panic!("walk {}: {e}", root.display()));
        let p = e.path();
        let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let content = (kind == 'f').then(|| hash_file(p));
        let xattrs = read_xattrs(p)
            .unwrap_or_else(|e| panic!("xattrs of {}: {e}", p.display()))
            .into_iter()
            .filter(|(n, _)| !n.to_string_lossy().starts_with("trusted.overlay."))
            .collect();
        let info = EntryInfo {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: matches!(kind, 'f' | 'l').then(|| md.size()),
            content,
            link: (kind == 'l').then(|| fs::read_link(p).expect("read link")),
            rdev: matches!(kind, 'c' | 'b').then(|| md.rdev()),
            xattrs,
            mtime: match (kind, mtime) {
                ('d', _) | (_, MtimeCheck::Ignore) => None,
                (_, MtimeCheck::Seconds) => Some((md.mtime(), 0)),
                (_, MtimeCheck::Exact) => Some((md.mtime(), md.mtime_nsec())),
            },
        };
        out.insert(
            p.strip_prefix(root).expect("below root").to_path_buf(),
            info,
        );
    }
    out
}

fn hash_file(p: &Path) -> u64 {
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    h.finish()
}

/// Panics, listing every difference, unless the trees are equal entry by entry.
pub fn assert_trees_equal(a: &Path, b: &Path, mtime: MtimeCheck) {
    let (ta, tb) = (tree_entries(a, mtime), tree_entries(b, mtime));
    let mut diffs = Vec::new();
    for (p, ea) in &ta {
        match tb.get(p) {
            None => diffs.push(format!("only in {}: {}", a.display(), p.display())),
            Some(eb) if ea != eb => diffs.push(format!("{}:\n    {ea:?}\n != {eb:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in tb.keys().filter(|p| !ta.contains_key(*p)) {
        diffs.push(format!("only in {}: {}", b.display(), p.display()));
    }
    assert!(
        diffs.is_empty(),
        "trees {} and {} differ:\n{}",
        a.display(),
        b.display(),
        diffs.join("\n")
    );
}

/// The relative paths present below `root`, sorted (handy for merged-view checks).
pub fn tree_paths(root: &Path) -> Vec<String> {
    tree_entries(root, MtimeCheck::Ignore)
        .into_keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tar building

/// Builds small layer tars in memory (ustar, fixed mtime, root owner by default).
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for TarBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarBuilder").finish_non_exhaustive()
    }
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed mtime of built entries (2020-09-13), so trees built from tars compare equal.
pub const TAR_MTIME: u64 = 1_600_000_000;

impl TarBuilder {
    /// An empty tar.
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(TAR_MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("tar dir");
        self
    }

    /// A regular file.
    pub fn file(self, path: &str, content: &[u8], mode: u32) -> Self {
        self.file_owned(path, content, mode, 0, 0)
    }

    /// A regular file with an owner.
    pub fn file_owned(mut self, path: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, content.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.b.append_data(&mut h, path, content).expect("tar file");
        self
    }

    /// A symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("tar symlink");
        self
    }

    /// A hard link to an earlier entry.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.b
            .append_link(&mut h, path, target)
            .expect("tar hard link");
        self
    }

    /// A whiteout deleting `path` from lower layers (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// Marks `dir` opaque (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// The finished tar.
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

// ---------------------------------------------------------------------------------------
// Base tree

/// Owner used for files in the base tree (root only).
pub const BASE_UID: u32 = 1234;
/// Group used for files in the base tree (root only).
pub const BASE_GID: u32 = 5678;

fn chown(p: &Path, uid: u32, gid: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn write(p: &Path, content: &[u8]) {
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Fills `root` with moby graphtest's "base" files: odd modes (4755, 2755, 1777, 0600),
/// owners 1234:5678, a symlink, a fifo, a hard link, a char device and a `user.*`
/// xattr (owners and device as root only).
pub fn populate_base(root: &Path, root_parts: bool) {
    fs::create_dir(root.join("dir")).unwrap();
    write(&root.join("dir/file"), b"file content\n");
    xattr::set(root.join("dir/file"), "user.test", b"value").expect("set user xattr");
    fs::hard_link(root.join("dir/file"), root.join("dir/hardlink")).unwrap();
    write(&root.join("suid"), b"#!/bin/true\n");
    fs::create_dir(root.join("sgid_dir")).unwrap();
    write(&root.join("sgid_dir/inner"), b"inner");
    fs::create_dir(root.join("sticky")).unwrap();
    write(&root.join("private"), b"secret");
    symlink("dir/file", root.join("link")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    if root_parts {
        chown(&root.join("suid"), BASE_UID, BASE_GID);
        chown(&root.join("sgid_dir"), BASE_UID, BASE_GID);
        chown(&root.join("link"), BASE_UID, BASE_GID);
        nix::sys::stat::mknod(
            &root.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
    }
    // chmod after chown: chown clears setuid/setgid.
    chmod(&root.join("suid"), 0o4755);
    chmod(&root.join("sgid_dir"), 0o2755);
    chmod(&root.join("sticky"), 0o1777);
    chmod(&root.join("private"), 0o600);
    chmod(&root.join("fifo"), 0o644);
}

/// Asserts `root` holds what [`populate_base`] wrote.
pub fn verify_base(root: &Path, root_parts: bool) {
    let md =
        |p: &str| fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("stat {p}: {e}"));
    assert_eq!(fs::read(root.join("dir/file")).unwrap(), b"file content\n");
    assert_eq!(
        xattr::get(root.join("dir/file"), "user.test")
            .unwrap()
            .as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(md("dir/file").ino(), md("dir/hardlink").ino(), "hard link");
    assert_eq!(md("suid").mode() & 0o7777, 0o4755);
    assert!(md("sgid_dir").is_dir());
    assert_eq!(md("sgid_dir").mode() & 0o7777, 0o2755);
    assert_eq!(fs::read(root.join("sgid_dir/inner")).unwrap(), b"inner");
    assert_eq!(md("sticky").mode() & 0o7777, 0o1777);
    assert_eq!(md("private").mode() & 0o7777, 0o600);
    assert_eq!(fs::read(root.join("private")).unwrap(), b"secret");
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("dir/file")
    );
    assert!(md("fifo").file_type().is_fifo());
    assert_eq!(md("fifo").mode() & 0o7777, 0o644);
    if root_parts {
        assert_eq!((md("suid").uid(), md("suid").gid()), (BASE_UID, BASE_GID));
        assert_eq!(
            (md("sgid_dir").uid(), md("sgid_dir").gid()),
            (BASE_UID, BASE_GID)
        );
        assert_eq!((md("link").uid(), md("link").gid()), (BASE_UID, BASE_GID));
        assert!(md("null").file_type().is_char_device());
        assert_eq!(md("null").rdev(), nix::sys::stat::makedev(1, 3));
    }
}

fn make_base(h: &Harness, id: &LayerId) -> bool {
    let root_parts = have_root("base layer owners and devices");
    h.create_rw(id, None);
    let m = h.mount(id);
    populate_base(m.path(), root_parts);
    root_parts
}

// ---------------------------------------------------------------------------------------
// The cases

/// Empty layer: mounts as an empty directory; duplicate id, missing parent, removal.
pub fn create_empty(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let id = lid("empty");
    assert!(!d.exists(&id));
    d.create(&id, None, &CreateOpts::default()).unwrap();
    assert!(d.exists(&id));
    assert_eq!(d.mount_count(&id).unwrap(), 0);
    {
        let m = h.mount(&id);
        assert!(m.path().is_dir());
        assert_eq!(
            fs::read_dir(m.path()).unwrap().count(),
            0,
            "empty layer shows entries"
        );
    }
    assert!(matches!(
        d.create(&id, None, &CreateOpts::default()),
        Err(DriverError::AlreadyExists { .. })
    ));
    let child = lid("orphan");
    assert!(matches!(
        d.create(&child, Some(&lid("missing")), &CreateOpts::default()),
        Err(DriverError::ParentNotFound { .. })
    ));
    assert!(!d.exists(&child), "failed create left something behind");
    d.remove(&id).unwrap();
    assert!(!d.exists(&id));
    assert!(matches!(d.remove(&id), Err(DriverError::NotFound { .. })));
    assert!(matches!(
        d.mount(&id, &Default::default()),
        Err(DriverError::NotFound { .. })
    ));
}

/// Base layer with odd modes, owners, special files and xattrs, read back through a
/// fresh mount.
pub fn create_base(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let id = lid("base");
    let root_parts = make_base(&h, &id);
    let m = h.mount(&id);
    verify_base(m.path(), root_parts);
}

/// A child of the base mounts and equals its parent entry by entry.
pub fn create_snap(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let (base, snap) = (lid("base"), lid("snap"));
    let root_parts = make_base(&h, &base);
    h.create_rw(&snap, Some(&base));
    let (mb, ms) = (h.mount(&base), h.mount(&snap));
    verify_base(ms.path(), root_parts);
    assert_trees_equal(mb.path(), ms.path(), MtimeCheck::Exact);
}

/// `depth` layers each adding `layer<N>` with content N; the top reads them all.
pub fn deep_layer_read(factory: Factory<'_>, depth: usize) {
    let h = Harness::new(factory);
    let mut parent: Option<LayerId> = None;
    for i in 0..depth {
        let id = lid(&format!("layer{i}"));
        h.create_rw(&id, parent.as_ref());
        let m = h.mount(&id);
        write(
            &m.path().join(format!("layer{i}")),
            i.to_string().as_bytes(),
        );
        drop(m);
        parent = Some(id);
    }
    let top = parent.expect("depth > 0");
    let m = h.mount(&top);
    for i in 0..depth {
        let got = fs::read_to_string(m.path().join(format!("layer{i}")))
            .unwrap_or_else(|e| panic!("layer{i} at depth {depth}: {e}"));
        assert_eq!(got, i.to_string(), "content of layer{i}");
    }
    assert_eq!(fs::read_dir(m.path()).unwrap().count(), depth);
}

/// Changes made through a child's mount, exported with `diff` and applied to a fresh
/// child of the same parent, give the same tree.
pub fn diff_apply(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (base, child, copy) = (lid("base"), lid("child"), lid("copy"));
    make_base(&h, &base);
    {
        let m = h.mount(&base);
        fs::create_dir(m.path().join("olddir")).unwrap();
        write(&m.path().join("olddir/a"), b"a");
        write(&m.path().join("olddir/b"), b"b");
    }
    h.create_rw(&child, Some(&base));
    {
        let m = h.mount(&child);
        let r = m.path();
        write(&r.join("new_file"), b"new");
        write(&r.join("dir/file"), b"changed content\n");
        chmod(&r.join("private"), 0o640);
        fs::remove_file(r.join("link")).unwrap();
        fs::remove_dir_all(r.join("olddir")).unwrap();
        fs::create_dir(r.join("olddir")).unwrap();
        write(&r.join("olddir/c"), b"c");
        fs::create_dir_all(r.join("newdir/sub")).unwrap();
        write(&r.join("newdir/sub/f"), b"deep");
        write(&r.join("newdir/h1"), b"hard");
        fs::hard_link(r.join("newdir/h1"), r.join("newdir/h2")).unwrap();
        symlink("../new_file", r.join("newdir/sym")).unwrap();
        xattr::set(r.join("new_file"), "user.added", b"1").unwrap();
        // Type changes: a fifo becomes a directory, a directory becomes a file.
        fs::remove_file(r.join("fifo")).unwrap();
        fs::create_dir(r.join("fifo")).unwrap();
        write(&r.join("fifo/inside"), b"i");
        fs::remove_dir(r.join("sticky")).unwrap();
        write(&r.join("sticky"), b"now a file");
    }
    let mut tar = Vec::new();
    d.diff(&child, Some(&base))
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == ".wh.link"),
        "no whiteout for link: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("sgid_dir")),
        "unchanged dir exported: {names:?}"
    );
    let applied = h.create_applied(&copy, Some(&base), &tar);
    assert!(applied >= 3 + 16 + 1 + 4 + 4, "applied {applied} bytes");
    let (mc, mp) = (h.mount(&child), h.mount(&copy));
    assert_trees_equal(mc.path(), mp.path(), MtimeCheck::Seconds);
    assert!(!mp.path().join("olddir/a").exists());
    assert_eq!(
        fs::metadata(mp.path().join("newdir/h1")).unwrap().ino(),
        fs::metadata(mp.path().join("newdir/h2")).unwrap().ino(),
        "hard link survives diff/apply"
    );
}

/// `changes` lists adds, modifications (including directories holding changes) and
/// deletions, sorted; `diff_size` sums the changed files.
pub fn changes(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (base, child) = (lid("base"), lid("child"));
    h.create_rw(&base, None);
    {
        let m = h.mount(&base);
        let r = m.path();
        for dir in ["a", "b"] {
            fs::create_dir(r.join(dir)).unwrap();
        }
        write(&r.join("a/f"), b"one");
        write(&r.join("b/x"), b"x");
        write(&r.join("c"), b"c");
        write(&r.join("keep"), b"k");
    }
    h.create_rw(&child, Some(&base));
    {
        let m = h.mount(&child);
        let r = m.path();
        write(&r.join("new"), b"n");
        write(&r.join("a/f"), b"two!");
        fs::remove_file(r.join("b/x")).unwrap();
        chmod(&r.join("c"), 0o600);
    }
    let got: Vec<String> = d
        .changes(&child, Some(&base))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(got, ["C /a", "C /a/f", "C /b", "D /b/x", "C /c", "A /new"]);
    assert_eq!(d.diff_size(&child, Some(&base)).unwrap(), 4 + 1 + 1);
    let all = d.changes(&base, None).unwrap();
    assert!(all.iter().all(|c| c.kind == ChangeKind::Add));
    assert_eq!(all.len(), 6);
}

/// Whiteouts and opaque directories applied in layers 2 and 3 of a 4-layer stack.
pub fn whiteouts_and_opaque_through_layers(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let ids: Vec<LayerId> = (1..=4).map(|i| lid(&format!("l{i}"))).collect();
    let tars = [
        TarBuilder::new()
            .dir("a", 0o755)
            .file("a/x", b"x", 0o644)
            .file("a/y", b"y", 0o644)
            .dir("b", 0o755)
            .file("b/old", b"old", 0o644)
            .file("c", b"c", 0o644)
            .file("keep", b"keep", 0o644)
            .finish(),
        TarBuilder::new()
            .dir("a", 0o755)
            .whiteout("a/x")
            .dir("b", 0o755)
            .opaque("b")
            .file("b/new", b"new", 0o644)
            .whiteout("c")
            .finish(),
        TarBuilder::new()
            .whiteout("a")
            .dir("b", 0o755)
            .opaque("b")
            .file("b/newer", b"newer", 0o644)
            .finish(),
        TarBuilder::new()
            .dir("a", 0o755)
            .file("a/z", b"z", 0o644)
            .finish(),
    ];
    let want: [&[&str]; 4] = [
        &["a", "a/x", "a/y", "b", "b/old", "c", "keep"],
        &["a", "a/y", "b", "b/new", "keep"],
        &["b", "b/newer", "keep"],
        &["a", "a/z", "b", "b/newer", "keep"],
    ];
    for (i, tar) in tars.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| &ids[p]);
        h.create_applied(&ids[i], parent, tar);
    }
    for (i, id) in ids.iter().enumerate() {
        let m = h.mount(id);
        assert_eq!(tree_paths(m.path()), want[i], "merged view of {id}");
    }
    let m = h.mount(&ids[3]);
    assert_eq!(fs::read(m.path().join("b/newer")).unwrap(), b"newer");
    assert_eq!(fs::read(m.path().join("keep")).unwrap(), b"keep");
}

/// Mount twice: same path, count 2; unmount once: still there; again: count 0.
pub fn mount_refcount(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let id = lid("counted");
    h.create_rw(&id, None);
    let p1 = d.mount(&id, &Default::default()).unwrap();
    write(&p1.join("marker"), b"m");
    let p2 = d.mount(&id, &Default::default()).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(d.mount_count(&id).unwrap(), 2);
    d.unmount(&id).unwrap();
    assert_eq!(d.mount_count(&id).unwrap(), 1);
    assert_eq!(fs::read(p1.join("marker")).unwrap(), b"m", "still mounted");
    d.unmount(&id).unwrap();
    assert_eq!(d.mount_count(&id).unwrap(), 0);
    d.unmount(&id)
        .expect("unmounting an unmounted layer is not an error");
    assert_eq!(d.mount_count(&id).unwrap(), 0);
    let m = h.mount(&id);
    assert_eq!(
        fs::read(m.path().join("marker")).unwrap(),
        b"m",
        "content persisted"
    );
}

/// A mounted layer refuses removal with `Busy` and survives.
pub fn remove_mounted_is_busy(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let id = lid("busy");
    h.create_rw(&id, None);
    let m = h.mount(&id);
    assert!(matches!(d.remove(&id), Err(DriverError::Busy { .. })));
    assert!(d.exists(&id));
    drop(m);
    d.remove(&id).unwrap();
    assert!(!d.exists(&id));
}

/// `apply_diff` returns the content bytes applied; `diff_size` agrees.
pub fn apply_diff_returns_size(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let id = lid("sized");
    let tar = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/ten", &[1u8; 10], 0o644)
        .file("two_hundred", &[2u8; 200], 0o644)
        .file("big", &vec![3u8; 5000], 0o644)
        .symlink("s", "big")
        .finish();
    assert_eq!(h.create_applied(&id, None, &tar), 5210);
    assert_eq!(h.d().diff_size(&id, None).unwrap(), 5210);
}

/// Removing a layer leaves nothing of it in the driver's home.
pub fn remove_leaves_nothing(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let id = lid("gone_soon");
    h.create_rw(&id, None);
    {
        let m = h.mount(&id);
        write(&m.path().join("f"), b"f");
    }
    d.remove(&id).unwrap();
    let leftovers: Vec<_> = walkdir::WalkDir::new(d.home())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("gone_soon"))
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// `cleanup` keeps existing layers and their content intact.
pub fn cleanup_keeps_layers(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (a, b) = (lid("a"), lid("b"));
    h.create_rw(&a, None);
    {
        let m = h.mount(&a);
        write(&m.path().join("f"), b"f");
    }
    h.create_rw(&b, Some(&a));
    d.cleanup().unwrap();
    assert!(d.exists(&a) && d.exists(&b));
    let m = h.mount(&b);
    assert_eq!(fs::read(m.path().join("f")).unwrap(), b"f");
}

/// A driver that claims [`Driver::unlocked_create`] creates and fills layers beside
/// `cleanup`/`leftovers` running in a loop (what another process's startup does while
/// an import creates its staging layers without the store lock): every create
/// succeeds and every layer is whole, stacked on the one before. Other drivers skip.
pub fn create_beside_cleanup(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    if !d.unlocked_create() {
        return;
    }
    const LAYERS: usize = 12;
    let ids: Vec<LayerId> = (0..LAYERS).map(|i| lid(&format!("l{i}"))).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    /// Stops the cleanup loop also when a create panics.
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds == 0 {
                d.cleanup().expect("cleanup beside a create");
                d.leftovers().expect("leftovers beside a create");
                rounds += 1;
            }
        });
        let _stop = Stop(&done);
        for (i, id) in ids.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &ids[p]);
            let mut t = TarBuilder::new().dir("d", 0o755);
            for k in 0..50 {
                t = t.file(&format!("d/f{i}-{k}"), format!("{i}/{k}").as_bytes(), 0o644);
            }
            h.create_applied(id, parent, &t.finish());
        }
    });
    d.cleanup().unwrap();
    assert!(d.leftovers().unwrap().is_empty(), "{:?}", d.leftovers());
    let top = ids.last().unwrap();
    let m = h.mount(top);
    for i in 0..LAYERS {
        for k in [0, 49] {
            let p = m.path().join(format!("d/f{i}-{k}"));
            assert_eq!(
                fs::read(&p).unwrap(),
                format!("{i}/{k}").as_bytes(),
                "{}",
                p.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The exporter (driver_core::export): same bytes for the same changes, round trips,
// files that change size while exported.

/// Fixed mtime [`make_export_changes`] gives every entry it touches (2023-11-14), so
/// two drivers given the same changes export the same bytes.
pub const EXPORT_MTIME: i64 = 1_700_000_000;

/// Adds to a [`populate_base`] tree what [`make_export_changes`] deletes and replaces:
/// `olddir/{a,b,sub/c}`, `gonedir/{x,y}`, `plain`.
pub fn populate_export_base(root: &Path) {
    fs::create_dir_all(root.join("olddir/sub")).unwrap();
    write(&root.join("olddir/a"), b"a");
    write(&root.join("olddir/b"), b"b");
    write(&root.join("olddir/sub/c"), b"c");
    fs::create_dir(root.join("gonedir")).unwrap();
    write(&root.join("gonedir/x"), b"x");
    write(&root.join("gonedir/y"), b"y");
    write(&root.join("plain"), b"plain");
}

fn set_mtime(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// Makes one change of every kind through a mounted layer `root` whose parent holds
/// [`populate_base`] + [`populate_export_base`]: create, modify, chmod, chown, xattr,
/// delete a file, delete a directory, `rm -rf` and recreate a directory, hard links
/// (across directories), symlinks (new, retargeted), devices and a fifo, a type change;
/// then sets [`EXPORT_MTIME`] on everything it touched (and their directories). Hard-
/// linked parent files are left alone: overlayfs without `index` breaks such links on
/// copy-up, a documented difference from a full copy.
pub fn make_export_changes(root: &Path, root_parts: bool) {
    let r = root;
    write(&r.join("new_file"), b"new");
    chmod(&r.join("new_file"), 0o640);
    xattr::set(r.join("new_file"), "user.added", b"1").unwrap();
    write(&r.join("private"), b"changed secret");
    chmod(&r.join("suid"), 0o755);
    fs::remove_file(r.join("plain")).unwrap();
    fs::remove_dir_all(r.join("gonedir")).unwrap();
    fs::remove_dir_all(r.join("olddir")).unwrap();
    fs::create_dir(r.join("olddir")).unwrap();
    chmod(&r.join("olddir"), 0o750);
    write(&r.join("olddir/a"), b"a");
    write(&r.join("olddir/new"), b"fresh");
    fs::create_dir_all(r.join("newdir/sub")).unwrap();
    write(&r.join("newdir/sub/deep"), b"deep");
    write(&r.join("newdir/h1"), b"hard");
    fs::hard_link(r.join("newdir/h1"), r.join("newdir/h2")).unwrap();
    fs::hard_link(r.join("newdir/h1"), r.join("hl_top")).unwrap();
    symlink("../new_file", r.join("newdir/sym")).unwrap();
    fs::remove_file(r.join("link")).unwrap();
    symlink("new_file", r.join("link")).unwrap();
    xattr::set(r.join("sticky"), "user.dirattr", b"d").unwrap();
    fs::remove_file(r.join("fifo")).unwrap();
    fs::create_dir(r.join("fifo")).unwrap();
    chmod(&r.join("fifo"), 0o755);
    write(&r.join("fifo/inside"), b"i");
    nix::unistd::mkfifo(
        &r.join("newdir/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    chmod(&r.join("newdir/fifo"), 0o600);
    let mut touched = vec![
        "new_file",
        "private",
        "olddir/a",
        "olddir/new",
        "olddir",
        "newdir/sub/deep",
        "newdir/sub",
        "newdir/h1",
        "newdir/sym",
        "newdir/fifo",
        "link",
        "sticky",
        "fifo/inside",
        "fifo",
    ];
    if root_parts {
        chown(&r.join("link"), 4321, 4321);
        chown(&r.join("sgid_dir/inner"), 4321, 8765);
        chmod(&r.join("null"), 0o600);
        nix::sys::stat::mknod(
            &r.join("newdir/zero"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        chmod(&r.join("newdir/zero"), 0o666);
        touched.extend(["newdir/zero", "sgid_dir"]);
    }
    touched.push("newdir");
    for p in touched {
        set_mtime(&r.join(p), EXPORT_MTIME);
    }
}

/// One tar entry as [`tar_rows`] sees it: (path without trailing `/`, type byte).
pub type TarRow = (String, u8);

/// The entries of a tar (PAX records merged into their entry), in order.
pub fn tar_rows(tar: &[u8]) -> Vec<TarRow> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .expect("read tar")
        .map(|e| {
            let e = e.expect("tar entry");
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            (
                p.trim_end_matches('/').to_owned(),
                e.header().entry_type().as_byte(),
            )
        })
        .collect()
}

/// Reads a whole diff stream.
fn read_diff(d: &dyn Driver, id: &LayerId, parent: Option<&LayerId>) -> Vec<u8> {
    let mut tar = Vec::new();
    d.diff(id, parent)
        .unwrap_or_else(|e| panic!("diff {id}: {e}"))
        .read_to_end(&mut tar)
        .unwrap_or_else(|e| panic!("read diff of {id}: {e}"));
    tar
}

/// Every kind of change through a mount, exported: the tar is the same bytes twice,
/// lists exactly `changes` in the same order (a deletion as `.wh.<name>`, an
/// `rm -rf`ed and recreated directory as one whiteout per vanished name, never an
/// opaque marker), holds `diff_size` bytes of file content, links hard links to the
/// first path in order, and applied to a fresh child of the same parent gives the same
/// tree.
pub fn export_round_trip(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let d = h.d();
    let (base, child, copy) = (lid("base"), lid("child"), lid("copy"));
    let root_parts = make_base(&h, &base);
    {
        let m = h.mount(&base);
        populate_export_base(m.path());
    }
    h.create_rw(&child, Some(&base));
    {
        let m = h.mount(&child);
        make_export_changes(m.path(), root_parts);
    }
    let tar = read_diff(d, &child, Some(&base));
    assert!(
        tar == read_diff(d, &child, Some(&base)),
        "two exports differ"
    );
    let rows = tar_rows(&tar);
    let changes = d.changes(&child, Some(&base)).unwrap();
    let want: Vec<String> = changes
        .iter()
        .map(|c| {
            let p = c.path.strip_prefix("/").unwrap();
            match c.kind {
                ChangeKind::Delete => {
                    let name = p.file_name().unwrap().to_string_lossy();
                    p.with_file_name(format!(".wh.{name}"))
                        .to_string_lossy()
                        .into_owned()
                }
                _ => p.to_string_lossy().into_owned(),
            }
        })
        .collect();
    let got: Vec<&str> = rows.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(got, want, "tar entries vs changes");
    for gone in [".wh.plain", ".wh.gonedir", "olddir/.wh.b", "olddir/.wh.sub"] {
        assert!(got.contains(&gone), "no {gone} in {got:?}");
    }
    assert!(
        !got.iter().any(|p| p.contains(".wh..wh.")),
        "opaque marker exported: {got:?}"
    );
    let ty = |p: &str| rows.iter().find(|(n, _)| n == p).map(|r| r.1);
    assert_eq!(ty("hl_top"), Some(b'0'), "first of the hard-link group");
    assert_eq!(ty("newdir/h1"), Some(b'1'));
    assert_eq!(ty("newdir/h2"), Some(b'1'));
    assert_eq!(ty("olddir/a"), Some(b'0'), "recreated file with new mtime");
    // Content bytes of the tar's regular files = diff_size.
    let mut content = 0u64;
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Regular {
            content += e.size();
        }
    }
    assert_eq!(d.diff_size(&child, Some(&base)).unwrap(), content);
    h.create_applied(&copy, Some(&base), &tar);
    let (mc, mp) = (h.mount(&child), h.mount(&copy));
    assert_trees_equal(mc.path(), mp.path(), MtimeCheck::Seconds);
    let ino = |p: &str| fs::symlink_metadata(mp.path().join(p)).unwrap().ino();
    assert_eq!(ino("hl_top"), ino("newdir/h1"));
    assert_eq!(ino("hl_top"), ino("newdir/h2"));
}

/// Builds a layer holding one 32 MiB file `big` (sparse) and starts its export,
/// returning the stream after the file's header has been read. The writer has then
/// read at most its buffers' worth (well under 1 MiB) of the file, whatever the
/// timing, since it cannot get ahead of the reader by more than the pipe.
fn start_big_export(h: &Harness) -> (MountGuard<&dyn Driver>, Box<dyn Read + Send>, PathBuf) {
    let (base, child) = (lid("base"), lid("child"));
    h.create_rw(&base, None);
    h.create_rw(&child, Some(&base));
    let m = h.mount(&child);
    let big = m.path().join("big");
    fs::File::create(&big).unwrap().set_len(32 << 20).unwrap();
    let mut r = h.d().diff(&child, Some(&base)).unwrap();
    let mut header = [0u8; 512];
    r.read_exact(&mut header).unwrap();
    assert_eq!(&header[..4], b"big\0", "the first entry is the big file");
    (m, r, big)
}

/// A file truncated while it is exported: the reader gets an error naming it, not a
/// short entry.
pub fn export_shrinking_file(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let (_m, mut r, big) = start_big_export(&h);
    fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let mut rest = Vec::new();
    let err = r
        .read_to_end(&mut rest)
        .expect_err("export of a shrinking file succeeded");
    let msg = err.to_string();
    assert!(msg.contains("big") && msg.contains("shrank"), "{msg}");
    assert!(
        rest.len() < 32 << 20,
        "the whole announced size was streamed ({} bytes)",
        rest.len()
    );
}

/// A file that grows while it is exported: an error naming it as well.
pub fn export_growing_file(factory: Factory<'_>) {
    let h = Harness::new(factory);
    let (_m, mut r, big) = start_big_export(&h);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
    }
    let mut rest = Vec::new();
    let err = r
        .read_to_end(&mut rest)
        .expect_err("export of a growing file succeeded");
    let msg = err.to_string();
    assert!(msg.contains("big") && msg.contains("changed"), "{msg}");
}
