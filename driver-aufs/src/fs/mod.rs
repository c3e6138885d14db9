//! The userspace aufs: a FUSE filesystem over a stack of AUFS-form branch
//! directories, branch 0 writable. Union rules come from driver_core's
//! [`LayerStack`] (lookup, merged listings) and [`copy_up_at`]; this module carries out
//! the write path on branch 0:
//!
//! - any change to an entry of a lower branch (write open, truncate, chmod, chown,
//!   utimens, setxattr, removexattr, link, rename) first copies it up with its
//!   parents (data, owner, xattrs, mode, times);
//! - unlink/rmdir remove branch 0's entry and leave `.wh.<name>` when a lower branch
//!   still shows the name; creating a name removes branch 0's whiteout of it, and a
//!   directory made over a whiteout gets `.wh..wh..opq` so nothing below shows through;
//! - rename of files works across branches (copy-up, rename in branch 0, whiteout of
//!   the old name); a directory that merges lower content is refused with `EXDEV`
//!   (aufs does the same without `dirren`; `mv` then copies), a directory made only of
//!   branch 0 is renamed (and made opaque if the new name has lower content);
//! - names starting with `.wh.` are refused with `EPERM` (as aufs' `au_test_whname`);
//! - new names (create, mknod, mkdir, symlink, link, rename target) longer than
//!   [`MAX_NAME_LEN`] = 251 bytes (`NAME_MAX` 255 minus the 4 bytes of `.wh.`) are
//!   refused with `ENAMETOOLONG`: their whiteout would not fit in a directory entry,
//!   so such a name could be made but never deleted from a lower branch (deleting a
//!   lower entry with a 252-255 byte name fails with `ENAMETOOLONG` for that reason).
//!   Kernel aufs has the same limit and a stricter one: `AUFS_MAX_NAMELEN` in
//!   `include/uapi/linux/aufs_type.h` is `NAME_MAX - 2 * AUFS_WH_PFX_LEN - 1 -
//!   AUFS_WH_TMP_LEN` = 242 ("a limit for rmdir/rename a dir and copyup", room for a
//!   doubly whited-out temporary name), enforced by `aufs_lookup` for every name. We
//!   keep lower names of 243-255 bytes visible (an image shows the same tree on every
//!   driver) and refuse only what could never be deleted.
//!
//! ## Inode numbers
//! FUSE node ids are the `st_ino` the kernel shows. A node id is assigned per backing
//! inode (`(st_dev, st_ino)` of the visible entry) the first time it is seen and kept
//! for the life of the mount: a copy-up aliases the new upper inode to the same id, so
//! numbers stay stable, and hard links of one backing inode share one node (so the
//! kernel keeps one page cache and one set of attributes for them). A lower file with
//! several links is copied up with every other name the union shows for it, linked
//! to the copy (aufs' `plnk`; [`visible_link_group`]), so the group stays one inode.
//!
//! ## Caching
//! Every change to the union goes through this server, and the kernel invalidates its
//! own caches for what it changes (dentries on unlink/rename, the directory's listing
//! cache on create/unlink, attributes from each reply), so long TTLs are safe: entries
//! and attributes are cached for [`TTL`], files are opened with `FOPEN_KEEP_CACHE`.
//! OPENDIR is answered ENOSYS once (`no_opendir`): the kernel then opens directories
//! itself with `FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR` and sends no OPENDIR/RELEASEDIR;
//! READDIR(PLUS) name the node, and the listing taken at offset 0 is kept per node for
//! the later pages of that walk. Offsets are per-name cookies (a keyed hash, as ext4's
//! htree gives), not positions: when two walks of one directory share the kept listing
//! and the directory changes between them, the earlier walk continues after its cookie
//! in the later listing and still sees every unchanged name exactly once (POSIX leaves
//! only names added or removed since its start unspecified).
//! The branches must not be changed behind the mount's back while it is mounted.
//!
//! Remembered locations (a node's branch path, a directory's merge set) carry the
//! generation of the union they were seen in; the changes that can move other
//! entries (unlink, rmdir, rename, copy-up of a hard-linked file) start a new one. A
//! copy-up of a single-link file or of a directory updates only its own node (a copied
//! directory is an empty, not opaque directory on top: no other lookup changes).
//!
//! ## Opens (`no_open`, with `passthrough = false`)
//! Without passthrough the server answers OPEN, CREATE and FLUSH with ENOSYS once, and
//! the kernel stops sending them: files are opened (with `FOPEN_KEEP_CACHE`), created
//! (by MKNOD) and closed without a round trip, and no RELEASE follows. READ, WRITE,
//! FSYNC, FALLOCATE and LSEEK then carry file handle 0 and are served by node from one
//! backing file per node ([`NodeFds`]: read-only on the visible entry, read-write on
//! branch 0 after a copy-up on the first write). O_TRUNC arrives as a SETATTR of the
//! size (no `FUSE_ATOMIC_O_TRUNC`), which copies up. A regular file that loses its
//! last union name while the kernel still knows its node is pinned open until FORGET,
//! so open-unlink-use works.
//!
//! With `passthrough` the server answers opens: files of 1 MiB or more get FUSE
//! passthrough on their branch file; a smaller file opened only for reading gets
//! handle 0 and no backing file (its READs are served by node, as without opens). The kernel takes one backing file per inode,
//! so a write-open of a lower file a passthrough reader holds gives the copy-up a new
//! node (the open answers ESTALE; the kernel looks the name up again and opens that).

mod ops;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driver_core::copyup::copy_up_at;
use driver_core::stack::Found;
use driver_core::union_ops::visible_link_group;
use driver_core::whiteout::{whiteout_of, WH_OPAQUE, WH_PREFIX};
use driver_core::{DriverError, LayerStack};
use fuser::{Errno, FileAttr, FileType, INodeNo};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// How long the kernel may cache entries and attributes (see the module doc).
pub const TTL: Duration = Duration::from_secs(3600);

/// Mode of the whiteout files made by unlink/rmdir/rename (aufs uses `r--r--r--`).
const WHITEOUT_MODE: u32 = 0o444;

type Res<T> = std::result::Result<T, Errno>;

/// A directory listing: (cookie, node id, type, name), sorted by cookie. The cookie is
/// the READDIR offset of the entry after it: `.` is 1, `..` is 2, a name is
/// [`AufsFs::cookie`] of it, a keyed hash that does not depend on the other entries (as
/// ext4's htree offsets), so a walk continued on any later listing of the directory
/// neither repeats nor misses a name that was there all along.
type Listing = Vec<(u64, u64, FileType, OsString)>;

#[derive(Debug, Default)]
struct Node {
    /// The names the kernel knows this node by: (parent node, name). The first one is
    /// used to build its path.
    links: Vec<(u64, OsString)>,
    /// Kernel lookup count (FUSE `forget` lowers it).
    lookups: u64,
    /// For a directory: its merge set (branches, top first) and the generation of the
    /// union it was seen in; stale once any change to the union was made since.
    merged: Option<(u64, Vec<usize>)>,
    /// Where the visible entry is (branch file path), seen in that generation.
    at: Option<(u64, PathBuf)>,
}

/// How the open handles of an inode do their I/O.
#[derive(Debug)]
pub(crate) enum IoMode {
    /// FUSE passthrough to the branch file with this `(st_dev, st_ino)`.
    Passthrough((u64, u64), fuser::BackingId),
    /// Through the server, with the kernel's page cache kept across opens.
    Cached,
}

/// The I/O mode of every inode with open handles: the kernel wants one backing file per
/// inode while any of its handles is open, and no mix of passthrough and cached I/O.
#[derive(Debug, Default)]
pub(crate) struct Backings {
    /// node -> (mode, open handles)
    pub(crate) by_node: HashMap<u64, (IoMode, u32)>,
    /// handle -> node
    pub(crate) by_fh: HashMap<u64, u64>,
}

#[derive(Debug)]
struct Nodes {
    map: HashMap<u64, Node>,
    /// Backing `(st_dev, st_ino)` -> node id, for the life of the mount.
    ident: HashMap<(u64, u64), u64>,
    next: u64,
}

impl Nodes {
    fn id_of(&mut self, m: &Metadata) -> u64 {
        let key = (m.dev(), m.ino());
        if let Some(id) = self.ident.get(&key) {
            return *id;
        }
        let id = self.next;
        self.next += 1;
        self.ident.insert(key, id);
        id
    }
}

/// The access and modification times of a directory of branch 0, taken before a
/// copy-up adds an entry to it and put back after: a copy-up changes nothing the
/// container sees, so the directory keeps the times it shows (aufs'
/// `au_dtime_store`/`au_dtime_revert`; overlayfs keeps the parent's times too).
/// Without this, a chmod of `/usr/share/doc/x/copyright` showed `/usr/share/doc/x`
/// (and each directory copied up on the way) with the time of the chmod.
struct DirTimes(nix::sys::time::TimeSpec, nix::sys::time::TimeSpec);

impl DirTimes {
    fn of(dir: &Path) -> Res<Self> {
        let m = std::fs::symlink_metadata(dir).map_err(io_errno)?;
        Ok(DirTimes(
            nix::sys::time::TimeSpec::new(m.atime(), m.atime_nsec()),
            nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec()),
        ))
    }

    fn restore(&self, dir: &Path) -> Res<()> {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            dir,
            &self.0,
            &self.1,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(nix_errno)
    }
}

/// The filesystem: one per mount, shared by the FUSE worker threads.
#[derive(Debug)]
pub struct AufsFs {
    stack: LayerStack,
    rw: PathBuf,
    /// Readers (lookups, listings, reads) share it; every change to the union takes it
    /// exclusively, so a copy-up or whiteout is never seen half done.
    big: RwLock<()>,
    /// Bumped by every change to the union (under `big` held exclusively): cached
    /// merge sets of other generations are stale.
    gen: AtomicU64,
    /// Bumped by every change at all: cached directory listings of other generations
    /// are stale.
    wgen: AtomicU64,
    /// Directory listings by node, with the `wgen` they were taken in.
    listings: Mutex<HashMap<u64, (u64, Arc<Listing>)>>,
    nodes: Mutex<Nodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    /// FUSE passthrough: whether to try it, and the backing files registered per node.
    passthrough: bool,
    backing: Mutex<Backings>,
    /// Per directory node: the listing its current READDIR(PLUS) walk pages through.
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    /// The key of the listing cookies ([`Self::cookie`]); random per server, so names
    /// cannot be chosen to collide.
    cookie_key: std::hash::RandomState,
    next_fh: AtomicU64,
    /// Without passthrough the server answers OPEN with ENOSYS, so the kernel opens
    /// and closes files without asking it (`no_open`): reads and writes then name
    /// only the node, and are served from these backing files, one per node.
    fds: Mutex<NodeFds>,
    /// Most unpinned entries of `fds` ([`node_fd_cap`]).
    max_fds: usize,
}

/// Backing files of nodes for I/O without open handles (see [`AufsFs`]'s `fds`).
#[derive(Debug, Default)]
pub(crate) struct NodeFds {
    /// node -> (file, opened for writing, pinned)
    pub(crate) map: HashMap<u64, NodeFd>,
}

/// One node's backing file.
#[derive(Debug, Clone)]
pub(crate) struct NodeFd {
    pub(crate) file: Arc<File>,
    /// Opened read-write on branch 0 (else read-only, possibly on a lower branch).
    pub(crate) writable: bool,
    /// The node's last name was removed while the kernel still knew it (a file can
    /// be open, unlinked and still used): kept until FORGET, never evicted.
    pub(crate) pinned: bool,
}

/// Most unpinned backing files kept open per server (then half are closed; the next
/// request of a closed node reopens it); less when the open files limit is low (a
/// quarter of it).
pub(crate) const MAX_NODE_FDS: usize = 4096;

/// [`MAX_NODE_FDS`] within this process's open files limit.
fn node_fd_cap() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    (soft as usize / 4).clamp(64, MAX_NODE_FDS)
}

/// The errno of a driver_core error (EIO when it carries none).
pub(crate) fn errno_of(e: &DriverError) -> Errno {
    match e {
        DriverError::Io { source, .. } => source
            .raw_os_error()
            .map(Errno::from_i32)
            .unwrap_or(Errno::EIO),
        _ => Errno::EIO,
    }
}

fn io_errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn nix_errno(e: nix::errno::Errno) -> Errno {
    Errno::from_i32(e as i32)
}

fn systime(secs: i64, nsec: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// A device number in the kernel's `new_encode_dev` form, which FUSE carries.
pub(crate) fn encode_dev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The inverse of [`encode_dev`].
pub(crate) fn decode_dev(dev: u32) -> u64 {
    let major = (dev & 0xfff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

fn kind_of(m: &Metadata) -> FileType {
    FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile)
}

/// Longest name a user can create in the union, in bytes: `NAME_MAX` (255) minus the
/// whiteout prefix `.wh.`, so that every created name can later be whited out. Longer
/// new names get `ENAMETOOLONG` (module doc: the rule and kernel aufs' own limit).
pub const MAX_NAME_LEN: usize = 255 - WH_PREFIX.len();

/// `ENAMETOOLONG` for a new name longer than [`MAX_NAME_LEN`].
pub(crate) fn check_new_name_len(name: &OsStr) -> Result<(), Errno> {
    if name.len() > MAX_NAME_LEN {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

fn is_wh_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX.as_bytes())
}

impl AufsFs {
    /// A filesystem over `stack` (branch 0 is written to). With `passthrough`, regular
    /// files are opened with FUSE passthrough where the kernel offers it (reads, writes
    /// and mmap then go straight to the branch file, with its page cache).
    ///
    /// Errors: `Io` when the stack has no branch or branch 0 cannot be read.
    pub fn new(stack: LayerStack, passthrough: bool) -> driver_core::Result<Self> {
        let rw = stack.branches().first().cloned().ok_or_else(|| {
            DriverError::io(
                "open aufs stack",
                "",
                io::Error::new(io::ErrorKind::InvalidInput, "no branch"),
            )
        })?;
        let meta = std::fs::symlink_metadata(&rw).map_err(|e| DriverError::io("stat", &rw, e))?;
        let mut nodes = Nodes {
            map: HashMap::new(),
            ident: HashMap::new(),
            next: 2,
        };
        nodes
            .ident
            .insert((meta.dev(), meta.ino()), INodeNo::ROOT.0);
        nodes.map.insert(
            INodeNo::ROOT.0,
            Node {
                links: Vec::new(),
                lookups: 1,
                merged: None,
                at: None,
            },
        );
        Ok(AufsFs {
            stack,
            rw,
            big: RwLock::new(()),
            gen: AtomicU64::new(0),
            wgen: AtomicU64::new(0),
            listings: Mutex::new(HashMap::new()),
            nodes: Mutex::new(nodes),
            files: Mutex::new(HashMap::new()),
            passthrough,
            backing: Mutex::new(Backings::default()),
            dirs: Mutex::new(HashMap::new()),
            cookie_key: std::hash::RandomState::new(),
            next_fh: AtomicU64::new(1),
            fds: Mutex::new(NodeFds::default()),
            max_fds: node_fd_cap(),
        })
    }

    /// Takes the union exclusively for a change (and makes cached merge sets stale).
    fn wlock(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let g = self.big.write().unwrap_or_else(|p| p.into_inner());
        self.wgen.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        g
    }

    /// Marks every remembered merge set and branch path stale: called (under the
    /// exclusive lock) by the changes that can move an existing entry to another
    /// branch or path or change a directory's merge set: copy-up, unlink, rmdir,
    /// rename. New names do not: nothing was remembered for them.
    fn restructured(&self) {
        self.gen.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Takes the union shared, for reading.
    fn rlock(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.big.read().unwrap_or_else(|p| p.into_inner())
    }

    fn generation(&self) -> u64 {
        self.gen.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `name` in the directory node `parent` (at `prel`): one `lstat` per merged branch
    /// when the parent's merge set is cached, else a lookup of the parent first.
    fn child(&self, parent: u64, prel: &Path, name: &OsStr) -> Res<Option<Found>> {
        let g = self.generation();
        let cached = self
            .nodes()
            .map
            .get(&parent)
            .and_then(|n| n.merged.as_ref())
            .filter(|(mg, _)| *mg == g)
            .map(|(_, m)| m.clone());
        let merged = match cached {
            Some(m) => m,
            None => {
                let pf = self.found(prel)?;
                if !pf.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                if let Some(n) = self.nodes().map.get_mut(&parent) {
                    n.merged = Some((g, pf.merged.clone()));
                }
                pf.merged
            }
        };
        self.stack
            .step(prel, &merged, name)
            .map_err(|e| errno_of(&e))
    }

    fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of node `ino` relative to the union root.
    fn rel(&self, ino: u64) -> Res<PathBuf> {
        let nodes = self.nodes();
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != INodeNo::ROOT.0 {
            let n = nodes.map.get(&cur).ok_or(Errno::ESTALE)?;
            let (parent, name) = n.links.first().ok_or(Errno::ESTALE)?;
            parts.push(name.clone());
            cur = *parent;
            if parts.len() > 4096 {
                return Err(Errno::ELOOP);
            }
        }
        Ok(parts.iter().rev().collect())
    }

    fn find(&self, rel: &Path) -> Res<Option<Found>> {
        self.stack.lookup(rel).map_err(|e| errno_of(&e))
    }

    fn found(&self, rel: &Path) -> Res<Found> {
        self.find(rel)?.ok_or(Errno::ENOENT)
    }

    fn attr(id: u64, f: &Found) -> FileAttr {
        let m = &f.meta;
        let nlink = if m.is_dir() && f.merged.len() > 1 {
            1
        } else {
            m.nlink() as u32
        };
        FileAttr {
            ino: INodeNo(id),
            size: m.len(),
            blocks: m.blocks(),
            atime: systime(m.atime(), m.atime_nsec()),
            mtime: systime(m.mtime(), m.mtime_nsec()),
            ctime: systime(m.ctime(), m.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(m),
            perm: (m.mode() & 0o7777) as u16,
            nlink,
            uid: m.uid(),
            gid: m.gid(),
            rdev: encode_dev(m.rdev()),
            blksize: m.blksize() as u32,
            flags: 0,
        }
    }

    /// What a negative entry carries: node id 0 (only `ino` and the TTL matter).
    fn negative_attr() -> FileAttr {
        FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The visible entry of node `ino`: one `lstat` of the branch file remembered for
    /// it when nothing in the union changed since, else a lookup of its whole path.
    fn locate(&self, ino: u64) -> Res<Found> {
        let g = self.generation();
        let cached = self.nodes().map.get(&ino).and_then(|n| {
            let (ag, path) = n.at.as_ref().filter(|(ag, _)| *ag == g)?;
            let merged = n
                .merged
                .as_ref()
                .filter(|(mg, _)| *mg == *ag)
                .map(|(_, m)| m.clone());
            Some((path.clone(), merged))
        });
        if let Some((path, merged)) = cached {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if !meta.is_dir() {
                    return Ok(Found {
                        branch: usize::MAX,
                        path,
                        meta,
                        merged: Vec::new(),
                    });
                }
                // A directory: its top branch path and merge set, both current (a
                // GETATTR of a directory whose listing changed is one lstat).
                if let Some(merged) = merged.filter(|m| !m.is_empty()) {
                    return Ok(Found {
                        branch: merged[0],
                        path,
                        meta,
                        merged,
                    });
                }
            }
        }
        let f = self.found(&self.rel(ino)?)?;
        if let Some(n) = self.nodes().map.get_mut(&ino) {
            n.at = Some((g, f.path.clone()));
            if f.is_dir() {
                n.merged = Some((g, f.merged.clone()));
            }
        }
        Ok(f)
    }

    /// Records that the kernel now knows `found` as `name` in `parent` (one lookup).
    fn remember(&self, parent: u64, name: &OsStr, found: &Found) -> FileAttr {
        let g = self.generation();
        let mut nodes = self.nodes();
        let id = nodes.id_of(&found.meta);
        let node = nodes.map.entry(id).or_default();
        if !node.links.iter().any(|(p, n)| *p == parent && n == name) {
            node.links.push((parent, name.to_owned()));
        }
        node.lookups += 1;
        if found.is_dir() {
            node.merged = Some((g, found.merged.clone()));
        }
        node.at = Some((g, found.path.clone()));
        Self::attr(id, found)
    }

    /// Takes back one lookup [`Self::remember`] counted but the kernel never got.
    fn unremember(&self, id: u64) {
        let mut nodes = self.nodes();
        if let Some(n) = nodes.map.get_mut(&id) {
            n.lookups = n.lookups.saturating_sub(1);
        }
    }

    /// Drops the name `name` in `parent` from whatever node carries it.
    fn forget_link(&self, parent: u64, name: &OsStr, gone: Option<&Metadata>) {
        let mut nodes = self.nodes();
        for n in nodes.map.values_mut() {
            n.links.retain(|(p, x)| !(*p == parent && x == name));
        }
        if let Some(m) = gone {
            // The backing inode is gone: its number may be reused by a new file.
            if m.is_dir() || m.nlink() <= 1 {
                nodes.ident.remove(&(m.dev(), m.ino()));
            }
        }
    }

    fn rw_path(&self, rel: &Path) -> PathBuf {
        self.rw.join(rel)
    }

    /// Makes sure `rel` (which must be visible) exists in branch 0, copying it and
    /// its parents up as needed. Returns its entry, now in branch 0.
    fn copy_up(&self, rel: &Path) -> Res<Found> {
        // One walk down the path (each name from its parent's merge set), then the
        // entries not in branch 0 are copied top down.
        let root = self.found(Path::new(""))?;
        let comps: Vec<&OsStr> = rel.iter().collect();
        let mut merged = root.merged.clone();
        let mut prefix = PathBuf::new();
        let mut chain: Vec<(PathBuf, Found)> = Vec::with_capacity(comps.len());
        for (i, c) in comps.iter().enumerate() {
            let f = self
                .stack
                .step(&prefix, &merged, c)
                .map_err(|e| errno_of(&e))?
                .ok_or(Errno::ENOENT)?;
            prefix.push(c);
            if i + 1 < comps.len() {
                if !f.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                merged = f.merged.clone();
            }
            chain.push((prefix.clone(), f));
        }
        let Some((_, last)) = chain.last() else {
            return Ok(root);
        };
        if last.branch == 0 {
            return Ok(last.clone());
        }
        for (p, f) in &chain {
            if f.branch != 0 {
                self.copy_one(p, f)?;
            }
        }
        self.in_rw(rel)
    }

    /// [`Self::copy_up`] of node `ino` at `rel`, with a short cut for the common case
    /// of a container changing file after file in directories it has written to: when
    /// the node's remembered branch path is current (nothing restructured the union
    /// since), it is a regular file, symlink or special file with one link, and its
    /// parent is a directory of branch 0 already, only the entry itself is copied (two
    /// `lstat`s instead of a lookup of every component in every branch).
    fn copy_up_node(&self, ino: u64, rel: &Path) -> Res<Found> {
        if let Some(f) = self.located(ino) {
            if f.path.starts_with(&self.rw) {
                return Ok(Found { branch: 0, ..f });
            }
            let parent = rel.parent().unwrap_or(Path::new(""));
            if f.meta.nlink() <= 1
                && !f.meta.is_dir()
                && std::fs::symlink_metadata(self.rw_path(parent)).is_ok_and(|m| m.is_dir())
            {
                self.copy_one(rel, &f)?;
                return self.in_rw(rel);
            }
        }
        self.copy_up(rel)
    }

    /// The directory node `ino` at `rel`, copied up into branch 0 if it is not there
    /// yet. When its remembered merge set is current and starts with branch 0, that is
    /// one `lstat` (no lookup); the merge set is the remembered one.
    fn dir_in_rw(&self, ino: u64, rel: &Path) -> Res<Found> {
        let g = self.generation();
        let merged = self
            .nodes()
            .map
            .get(&ino)
            .and_then(|n| n.merged.as_ref())
            .filter(|(mg, m)| *mg == g && m.first() == Some(&0))
            .map(|(_, m)| m.clone());
        if let Some(merged) = merged {
            let path = self.rw_path(rel);
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if meta.is_dir() {
                    return Ok(Found {
                        branch: 0,
                        path,
                        meta,
                        merged,
                    });
                }
            }
        }
        self.copy_up(rel)
    }

    /// The visible non-directory entry of node `ino` from its remembered branch path
    /// (one `lstat`), if that is current; no lookup otherwise.
    fn located(&self, ino: u64) -> Option<Found> {
        let g = self.generation();
        let path = self
            .nodes()
            .map
            .get(&ino)
            .and_then(|n| n.at.as_ref())
            .filter(|(ag, _)| *ag == g)
            .map(|(_, p)| p.clone())?;
        let meta = std::fs::symlink_metadata(&path).ok()?;
        (!meta.is_dir()).then_some(Found {
            branch: usize::MAX,
            path,
            meta,
            merged: Vec::new(),
        })
    }

    /// The entry at `rel`, known to be in branch 0 (just copied up or created there):
    /// one `lstat` for a non-directory; a directory's merge set needs a lookup.
    fn in_rw(&self, rel: &Path) -> Res<Found> {
        let path = self.rw_path(rel);
        let meta = std::fs::symlink_metadata(&path).map_err(io_errno)?;
        if meta.is_dir() {
            return self.found(rel);
        }
        Ok(Found {
            branch: 0,
            path,
            meta,
            merged: Vec::new(),
        })
    }

    /// Copies the entry `f` at `rel` (whose parent is in branch 0) into branch 0.
    fn copy_one(&self, rel: &Path, f: &Found) -> Res<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or(Errno::EINVAL)?;
        let pdir = self.rw_path(parent);
        let dirfd: OwnedFd = open(
            &pdir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(nix_errno)?;
        use std::os::fd::AsFd;
        // A linked file's copy-up moves its other names too: every remembered location
        // is stale. Anything else moves only its own node, updated below: a file's
        // location, or a directory's merge set, which gains branch 0 (the copy is an
        // empty, not opaque directory on top: no other lookup changes).
        let restructures = !f.meta.is_dir() && f.meta.nlink() > 1;
        if restructures {
            self.restructured();
        }
        let times = DirTimes::of(&pdir)?;
        copy_up_at(&f.path, &f.meta, dirfd.as_fd(), name, &pdir, true).map_err(|e| {
            tracing::warn!(path = %rel.display(), error = %e, "copy-up failed");
            errno_of(&e)
        })?;
        times.restore(&pdir)?;
        // aufs' plnk: the other names the union shows for this inode follow it up as
        // hard links of the copy, so the group stays one inode.
        let group = visible_link_group(&self.stack, f, rel).map_err(|e| errno_of(&e))?;
        for other in &group {
            let oparent = other.parent().unwrap_or(Path::new(""));
            self.copy_up(oparent)?;
            let odir = self.rw_path(oparent);
            let times = DirTimes::of(&odir)?;
            std::fs::hard_link(self.rw_path(rel), self.rw_path(other)).map_err(io_errno)?;
            times.restore(&odir)?;
        }
        let up = std::fs::symlink_metadata(self.rw_path(rel)).map_err(io_errno)?;
        let g = self.generation();
        let mut nodes = self.nodes();
        let old = nodes.id_of(&f.meta);
        nodes.ident.insert((up.dev(), up.ino()), old);
        if !restructures {
            if let Some(n) = nodes.map.get_mut(&old) {
                if f.meta.is_dir() {
                    match n.merged.as_mut() {
                        Some((mg, m)) if *mg == g => {
                            if m.first() != Some(&0) {
                                m.insert(0, 0);
                            }
                        }
                        // Not known: the path alone would not make a location.
                        _ => n.at = None,
                    }
                }
                if n.at.is_some() {
                    n.at = Some((g, self.rw_path(rel)));
                }
            }
        }
        drop(nodes);
        // Its backing file was the lower one: the next I/O opens the copy.
        self.node_fds().map.remove(&old);
        tracing::trace!(path = %rel.display(), from = f.branch, linked = group.len(), "copied up");
        Ok(())
    }

    /// Removes branch 0's whiteout of `name` in `parent_rel`; true when there was one.
    fn drop_whiteout(&self, parent_rel: &Path, name: &OsStr) -> Res<bool> {
        match std::fs::remove_file(self.rw_path(parent_rel).join(whiteout_of(name))) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_errno(e)),
        }
    }

    /// Leaves `.wh.<name>` in branch 0's `parent_rel` when a lower branch still shows
    /// `parent_rel/name`.
    fn whiteout_if_needed(&self, parent_rel: &Path, name: &OsStr) -> Res<()> {
        if self.find(&parent_rel.join(name))?.is_none() {
            return Ok(());
        }
        let p = self.rw_path(parent_rel).join(whiteout_of(name));
        let fd = open(
            &p,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(WHITEOUT_MODE),
        )
        .map_err(nix_errno)?;
        drop(fd);
        Ok(())
    }

    /// Marks branch 0's directory `rel` opaque.
    fn make_opaque(&self, rel: &Path) -> Res<()> {
        let p = self.rw_path(rel).join(WH_OPAQUE);
        let fd = open(
            &p,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(WHITEOUT_MODE),
        )
        .map_err(nix_errno)?;
        drop(fd);
        Ok(())
    }

    /// Checks a new name and readies its parent in branch 0. Returns (parent path,
    /// new path, parent entry in branch 0, whether branch 0 had a whiteout of it).
    fn prepare_new(&self, parent: u64, name: &OsStr) -> Res<(PathBuf, PathBuf, Found, bool)> {
        if is_wh_name(name) {
            return Err(Errno::EPERM);
        }
        check_new_name_len(name)?;
        let prel = self.rel(parent)?;
        let rel = prel.join(name);
        // From the parent's remembered merge set: one lstat per merged branch.
        if self.child(parent, &prel, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let pf = self.dir_in_rw(parent, &prel)?;
        if !pf.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let had_wh = self.drop_whiteout(&prel, name)?;
        Ok((prel, rel, pf, had_wh))
    }

    /// Owner of a new entry made by `uid`/`gid` in a directory with metadata `parent`:
    /// the group of a setgid directory is inherited (and by directories, the bit too).
    fn new_owner(uid: u32, gid: u32, parent: &Metadata, is_dir: bool) -> (u32, u32, u32) {
        let sgid = parent.mode() & libc::S_ISGID != 0;
        let g = if sgid { parent.gid() } else { gid };
        let extra = if sgid && is_dir { libc::S_ISGID } else { 0 };
        (uid, g, extra)
    }

    /// A fresh file handle number.
    fn fh(&self) -> u64 {
        self.next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn node_fds(&self) -> MutexGuard<'_, NodeFds> {
        self.fds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backing file of node `ino` for I/O without a handle: read-only on the
    /// visible entry, or (`write`) read-write on branch 0 after a copy-up.
    pub(crate) fn node_file(&self, ino: u64, write: bool) -> Res<Arc<File>> {
        if let Some(f) = self.node_fds().map.get(&ino) {
            if f.writable || !write {
                return Ok(f.file.clone());
            }
            if f.pinned {
                // Open, unlinked, and not in branch 0: there is no name to copy up.
                return Err(Errno::EBADF);
            }
        }
        let open_rw = |path: &Path, writable: bool| {
            let flags = if writable {
                OFlag::O_RDWR
            } else {
                OFlag::O_RDONLY
            };
            open(
                path,
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(nix_errno)
        };
        // The file is opened under the union lock, so no rename moves it meanwhile.
        let found = {
            let _g = self.rlock();
            let f = self.locate(ino)?;
            let in_rw = f.path.starts_with(&self.rw);
            if in_rw || !write {
                Some((open_rw(&f.path, in_rw)?, in_rw))
            } else {
                None
            }
        };
        let (fd, writable) = match found {
            Some(x) => x,
            None => {
                let _g = self.wlock();
                let rel = self.rel(ino)?;
                let path = self.copy_up_node(ino, &rel)?.path;
                (open_rw(&path, true)?, true)
            }
        };
        let file = Arc::new(File::from(fd));
        let mut fds = self.node_fds();
        if fds.map.len() >= self.max_fds {
            let drop_ids: Vec<u64> = fds
                .map
                .iter()
                .filter(|(_, f)| !f.pinned)
                .map(|(id, _)| *id)
                .take(self.max_fds / 2)
                .collect();
            for id in drop_ids {
                fds.map.remove(&id);
            }
        }
        fds.map.insert(
            ino,
            NodeFd {
                file: file.clone(),
                writable,
                pinned: false,
            },
        );
        Ok(file)
    }

    /// Keeps node `ino`'s backing file (`path`, a regular file about to lose its last
    /// union name) open until the kernel forgets the node: a process may hold it open.
    pub(crate) fn pin(&self, ino: u64, path: &Path) {
        let writable = path.starts_with(&self.rw);
        let flags = if writable {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        match open(
            path,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                self.node_fds().map.insert(
                    ino,
                    NodeFd {
                        file: Arc::new(File::from(fd)),
                        writable,
                        pinned: true,
                    },
                );
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "cannot pin"),
        }
    }

    /// Gives the backing inode `key` a fresh node id: its next lookup makes a new
    /// node, while the kernel's old one lives on for whoever holds it open.
    pub(crate) fn renumber(&self, key: (u64, u64)) {
        let mut nodes = self.nodes();
        let id = nodes.next;
        nodes.next += 1;
        nodes.ident.insert(key, id);
    }

    /// The node known by the kernel whose backing inode is `meta`, if any.
    pub(crate) fn known_node(&self, meta: &Metadata) -> Option<u64> {
        let nodes = self.nodes();
        let id = *nodes.ident.get(&(meta.dev(), meta.ino()))?;
        nodes.map.get(&id).filter(|n| n.lookups > 0).map(|_| id)
    }

    /// The READDIR cookie of `name` in a [`Listing`]: a hash keyed per server, in
    /// `3..2^62 + 3` (above `.` and `..`, below what a signed `loff_t` holds). Two names
    /// of one directory with one cookie (odds about n^2 / 2^63) would make a walk that
    /// stops between them miss the second.
    fn cookie(&self, name: &std::ffi::OsStr) -> u64 {
        use std::hash::BuildHasher;
        (self.cookie_key.hash_one(name) >> 2) + 3
    }

    /// The listing the current walk of directory node `ino` pages through (None: none
    /// started since the node was last forgotten).
    fn open_listing(&self, ino: u64) -> Option<Arc<Listing>> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()
    }

    fn file(&self, fh: u64) -> Res<Arc<File>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(Errno::EBADF)
    }
}
