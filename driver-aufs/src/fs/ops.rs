//! The FUSE operations of [`AufsFs`]: each answers from the stack or carries out the
//! write path described in the module doc of [`super`].

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nix::fcntl::{open, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmodat, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

use super::{io_errno, is_wh_name, kind_of, nix_errno, AufsFs, IoMode, Listing, Res, TTL};

/// Files at least this large are opened with FUSE passthrough (when on): their data
/// then never crosses the server. Smaller files use the FUSE page cache (`keep_cache`),
/// which spares the two backing-file ioctls per open that passthrough costs.
const PASSTHROUGH_MIN_SIZE: u64 = 1 << 20;

thread_local! {
    /// The READ buffer of each worker thread (at most `max_read`, 1 MiB).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How long (ms) an open waits for the release of a handle that holds another backing
/// file of the same inode before it answers EBUSY.
const RELEASE_WAIT_MS: u32 = 200;

/// Flags of a client's open passed on to the backing file.
const PASSED_OPEN_FLAGS: i32 =
    libc::O_ACCMODE | libc::O_APPEND | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC;

fn chown_nofollow(p: &Path, uid: u32, gid: u32) -> Res<()> {
    fchownat(
        AT_FDCWD,
        p,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nix_errno)
}

fn chmod(p: &Path, mode: u32) -> Res<()> {
    // Only ever called on entries known not to be symlinks.
    fchmodat(
        AT_FDCWD,
        p,
        Mode::from_bits_truncate(mode & 0o7777),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(nix_errno)
}

fn timespec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                TimeSpec::new(-(d.as_secs() as i64), -(d.subsec_nanos() as i64))
            }
        },
    }
}

impl AufsFs {
    /// Finishes a create-like call: owner, exact mode, opaque marker, node, attributes.
    #[allow(clippy::too_many_arguments)]
    fn finish_new(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        rel: &Path,
        pmeta: &std::fs::Metadata,
        mode: Option<u32>,
        is_dir: bool,
        had_wh: bool,
    ) -> Res<fuser::FileAttr> {
        let p = self.rw_path(rel);
        let (uid, gid, extra) = Self::new_owner(req.uid(), req.gid(), pmeta, is_dir);
        // The server made the entry: it is owned by the server's uid and by its gid or,
        // in a setgid directory, the directory's (what `gid` is then). Only another
        // owner needs a chown, and only a mode the create could not give exactly (the
        // server's umask is 0) a chmod: setuid/setgid bits, which chown clears, and a
        // setgid directory's inherited bit.
        let sgid_dir = pmeta.mode() & libc::S_ISGID != 0;
        let made_as = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let chowned = (uid, gid) != (made_as.0, if sgid_dir { pmeta.gid() } else { made_as.1 });
        if chowned {
            chown_nofollow(&p, uid, gid)?;
        }
        if let Some(m) = mode {
            if (m | extra) & 0o7000 != 0 {
                chmod(&p, m | extra)?;
            }
        }
        if is_dir && had_wh {
            self.make_opaque(rel)?;
        }
        // Just made in branch 0: one lstat (a directory's merge set takes a lookup).
        let f = self.in_rw(rel)?;
        // A new inode: a number the backing filesystem reuses must not bring back the
        // node of a removed entry (the kernel may still hold it, with another type).
        self.nodes().ident.remove(&(f.meta.dev(), f.meta.ino()));
        Ok(self.remember(parent, name, &f))
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<fuser::FileAttr> {
        let _g = self.wlock();
        let rel = match self.rel(ino) {
            Ok(r) => r,
            Err(e) => {
                // Open and unlinked (no name left): a file of branch 0 changes through
                // its pinned backing file; a lower one (only whited out) cannot change.
                let pinned = self.node_fds().map.get(&ino).filter(|f| f.pinned).cloned();
                let p = match pinned {
                    Some(p) if p.writable => p,
                    _ => return Err(e),
                };
                Self::setattr_fd(&p.file, mode, uid, gid, size, atime, mtime)?;
                let meta = p.file.metadata().map_err(io_errno)?;
                return Ok(Self::attr(
                    ino,
                    &driver_core::stack::Found {
                        branch: 0,
                        path: Default::default(),
                        meta,
                        merged: Vec::new(),
                    },
                ));
            }
        };
        let f = self.copy_up_node(ino, &rel)?;
        let p = self.rw_path(&rel);
        let is_link = f.meta.file_type().is_symlink();
        if let Some(size) = size {
            if !f.meta.is_file() {
                return Err(if f.meta.is_dir() {
                    Errno::EISDIR
                } else {
                    Errno::EINVAL
                });
            }
            match fh.filter(|fh| fh.0 != 0) {
                Some(fh) => self.file(fh.0)?.set_len(size).map_err(io_errno)?,
                None => nix::unistd::truncate(&p, size as i64).map_err(nix_errno)?,
            }
        }
        if uid.is_some() || gid.is_some() {
            fchownat(
                AT_FDCWD,
                &p,
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(nix_errno)?;
        }
        if let Some(m) = mode {
            if !is_link {
                chmod(&p, m)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            utimensat(
                AT_FDCWD,
                &p,
                &timespec(atime),
                &timespec(mtime),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(nix_errno)?;
        }
        Ok(Self::attr(ino, &self.in_rw(&rel)?))
    }

    /// [`Self::do_setattr`] of an unlinked open file of branch 0, through its descriptor.
    fn setattr_fd(
        f: &File,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<()> {
        if let Some(size) = size {
            f.set_len(size).map_err(io_errno)?;
        }
        if uid.is_some() || gid.is_some() {
            nix::unistd::fchown(f, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
                .map_err(nix_errno)?;
        }
        if let Some(m) = mode {
            nix::sys::stat::fchmod(f, Mode::from_bits_truncate(m & 0o7777)).map_err(nix_errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            nix::sys::stat::futimens(f, &timespec(atime), &timespec(mtime)).map_err(nix_errno)?;
        }
        Ok(())
    }

    fn do_unlink(&self, parent: u64, name: &OsStr, dir: bool) -> Res<()> {
        let _g = self.wlock();
        self.restructured();
        let prel = self.rel(parent)?;
        let rel = prel.join(name);
        let f = self.found(&rel)?;
        if dir && !f.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if !dir && f.is_dir() {
            return Err(Errno::EISDIR);
        }
        if dir {
            let listing = self
                .stack
                .read_dir(&rel)
                .map_err(|e| super::errno_of(&e))?
                .unwrap_or_default();
            if !listing.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        self.copy_up(&prel)?;
        if f.meta.is_file() {
            if let Some(id) = self.known_node(&f.meta) {
                self.pin(id, &f.path);
            }
        }
        if f.branch == 0 {
            let p = self.rw_path(&rel);
            if dir {
                // Only whiteouts and aufs metadata can be left in it.
                for e in std::fs::read_dir(&p).map_err(io_errno)? {
                    let e = e.map_err(io_errno)?;
                    let ft = e.file_type().map_err(io_errno)?;
                    if ft.is_dir() {
                        std::fs::remove_dir_all(e.path()).map_err(io_errno)?;
                    } else {
                        std::fs::remove_file(e.path()).map_err(io_errno)?;
                    }
                }
                std::fs::remove_dir(&p).map_err(io_errno)?;
            } else {
                std::fs::remove_file(&p).map_err(io_errno)?;
            }
        }
        self.whiteout_if_needed(&prel, name)?;
        self.forget_link(parent, name, (f.branch == 0).then_some(&f.meta));
        Ok(())
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        if is_wh_name(newname) {
            return Err(Errno::EPERM);
        }
        super::check_new_name_len(newname)?;
        let _g = self.wlock();
        self.restructured();
        let (prel, nprel) = (self.rel(parent)?, self.rel(newparent)?);
        let (src, dst) = (prel.join(name), nprel.join(newname));
        let sf = self.found(&src)?;
        if src == dst {
            return Ok(());
        }
        if dst.starts_with(&src) {
            return Err(Errno::EINVAL);
        }
        let df = self.find(&dst)?;
        if let Some(df) = &df {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (sf.is_dir(), df.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
        // (The kernel's VFS checks the types and NOREPLACE before the filesystem, so
        // EXDEV comes next and ENOTEMPTY last, as overlayfs answers.)
        if sf.is_dir() && (sf.branch != 0 || sf.merged.len() > 1) {
            // Lower content merges into it: aufs without dirren refuses too.
            return Err(Errno::EXDEV);
        }
        if let Some(df) = &df {
            if df.is_dir() {
                let l = self
                    .stack
                    .read_dir(&dst)
                    .map_err(|e| super::errno_of(&e))?
                    .unwrap_or_default();
                if !l.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
            }
        }
        if let Some(df) = df.as_ref().filter(|d| d.meta.is_file()) {
            if let Some(id) = self.known_node(&df.meta) {
                self.pin(id, &df.path);
            }
        }
        self.copy_up(&src)?;
        self.copy_up(&nprel)?;
        if let Some(df) = &df {
            if df.branch == 0 && df.is_dir() {
                // Empty in the union: only whiteouts can be left in it.
                let p = self.rw_path(&dst);
                for e in std::fs::read_dir(&p).map_err(io_errno)? {
                    let e = e.map_err(io_errno)?;
                    if e.file_type().map_err(io_errno)?.is_dir() {
                        std::fs::remove_dir_all(e.path()).map_err(io_errno)?;
                    } else {
                        std::fs::remove_file(e.path()).map_err(io_errno)?;
                    }
                }
            }
        }
        std::fs::rename(self.rw_path(&src), self.rw_path(&dst)).map_err(io_errno)?;
        self.drop_whiteout(&nprel, newname)?;
        if sf.is_dir() {
            if let Some(now) = self.find(&dst)? {
                if now.merged.len() > 1 {
                    self.make_opaque(&dst)?;
                }
            }
        }
        self.whiteout_if_needed(&prel, name)?;
        let mut nodes = self.nodes();
        let replaced = df.as_ref().map(|d| (d.meta.dev(), d.meta.ino()));
        for n in nodes.map.values_mut() {
            n.links.retain(|(p, x)| !(*p == newparent && x == newname));
            for l in n.links.iter_mut() {
                if l.0 == parent && l.1 == name {
                    *l = (newparent, newname.to_owned());
                }
            }
        }
        if let (Some(key), Some(d)) = (replaced, &df) {
            if d.branch == 0 && (d.meta.is_dir() || d.meta.nlink() <= 1) {
                nodes.ident.remove(&key);
            }
        }
        Ok(())
    }

    fn listing(&self, ino: u64) -> Res<Arc<Listing>> {
        let _g = self.rlock();
        let wg = self.wgen.load(std::sync::atomic::Ordering::Acquire);
        if let Some((g, l)) = self
            .listings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
        {
            if *g == wg {
                return Ok(l.clone());
            }
        }
        let rel = self.rel(ino)?;
        let entries = self
            .stack
            .read_dir(&rel)
            .map_err(|e| super::errno_of(&e))?
            .ok_or(Errno::ENOTDIR)?;
        let mut nodes = self.nodes();
        let parent = nodes
            .map
            .get(&ino)
            .and_then(|n| n.links.first().map(|l| l.0))
            .unwrap_or(INodeNo::ROOT.0);
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push((1, ino, FileType::Directory, ".".into()));
        out.push((2, parent, FileType::Directory, "..".into()));
        for (name, e) in entries {
            let id = nodes.id_of(&e.meta);
            out.push((self.cookie(&name), id, kind_of(&e.meta), name));
        }
        drop(nodes);
        out.sort_unstable_by(|a, b| (a.0, &a.3).cmp(&(b.0, &b.3)));
        let out = Arc::new(out);
        self.listings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino, (wg, out.clone()));
        Ok(out)
    }

    /// The listing READDIR(PLUS) of directory node `ino` at `offset` pages through: a
    /// fresh one at offset 0 (taken again only when the union changed since,
    /// [`Self::listing`]), kept per node so that the later pages of the same walk use
    /// the same entries and offsets even if the walk itself changes the directory
    /// (`rm -r` reads a page, removes, reads on), as the listing taken at OPENDIR did.
    fn dir_listing(&self, ino: u64, offset: u64) -> Res<Arc<Listing>> {
        if offset != 0 {
            if let Some(l) = self.open_listing(ino) {
                return Ok(l);
            }
        }
        let l = self.listing(ino)?;
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino, l.clone());
        Ok(l)
    }

    /// The backing file for I/O of handle `fh` (0: none, `no_open` or a lazy open) on
    /// node `ino`.
    fn io_file(&self, ino: u64, fh: u64, write: bool) -> Res<Arc<File>> {
        if fh == 0 {
            self.node_file(ino, write)
        } else {
            self.file(fh)
        }
    }

    /// Opens node `ino` for reading without a backing file when it is a regular file
    /// under [`PASSTHROUGH_MIN_SIZE`] and not opened for writing, `O_TRUNC`, `O_DIRECT`
    /// or `O_(D)SYNC`: one `lstat` of its remembered branch path, then handle 0 with
    /// `FOPEN_KEEP_CACHE`. Warm reads then never reach the server; a READ (cold page
    /// cache, mmap) is served by node from [`AufsFs::node_file`], which opens the
    /// file on first use. Saves the `open`, `fstat` and `close` that a handle of its
    /// own costs per open (two thirds of the server's syscalls in a warm `tar -c`).
    ///
    /// Returns false (nothing done) when the open needs a handle of its own: a write,
    /// a large file (passthrough) or a node whose open handles use passthrough.
    fn open_lazy(&self, ino: u64, flags: i32) -> Res<bool> {
        let special =
            libc::O_ACCMODE | libc::O_TRUNC | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC;
        if flags & special != libc::O_RDONLY {
            return Ok(false);
        }
        let meta = {
            let _g = self.rlock();
            self.locate(ino)?.meta
        };
        if !meta.is_file() || (self.passthrough && meta.len() >= PASSTHROUGH_MIN_SIZE) {
            return Ok(false);
        }
        let mut b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        match b.by_node.get_mut(&ino) {
            Some((IoMode::Cached, n)) => *n += 1,
            Some((IoMode::Passthrough(..), _)) => return Ok(false),
            None => {
                b.by_node.insert(ino, (IoMode::Cached, 1));
            }
        }
        Ok(true)
    }

    fn open_file(&self, ino: u64, flags: i32) -> Res<u64> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let path = if write {
            let _g = self.wlock();
            let rel = self.rel(ino)?;
            self.copy_up_node(ino, &rel)?.path
        } else {
            let _g = self.rlock();
            self.locate(ino)?.path
        };
        let fd = open(
            &path,
            OFlag::from_bits_truncate(flags & (PASSED_OPEN_FLAGS | libc::O_TRUNC))
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(nix_errno)?;
        let fh = self.fh();
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(File::from(fd)));
        Ok(fh)
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

fn read_xattr_value(p: &Path, name: &OsStr) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::lgetxattr(p, name, &mut [0u8; 0][..])
                    .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(Errno::from_i32(e.raw_os_error())),
        }
    }
}

fn list_xattr_names(p: &Path) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rustix::fs::llistxattr(p, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr(p, &mut [0u8; 0][..])
                    .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(Errno::from_i32(e.raw_os_error())),
        }
    }
}

macro_rules! tryr {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $reply.error(e);
                return;
            }
        }
    };
}

impl Filesystem for AufsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        for cap in [
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            // READDIRPLUS on a directory's first listing: a cold walk gets every
            // entry's attributes with the names instead of one LOOKUP per entry.
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
        ] {
            if let Err(e) = config.add_capabilities(cap) {
                tracing::debug!(?e, "kernel lacks a FUSE capability");
            }
        }
        if self.passthrough {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                tracing::info!(
                    "the kernel offers no FUSE passthrough; reads go through the server"
                );
                self.passthrough = false;
            }
        }
        if self.passthrough {
            // O_TRUNC is carried out by our OPEN. Without opens (`no_open`) the kernel
            // sends it as a SETATTR of the size instead, which copies up.
            let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _g = self.rlock();
        let prel = tryr!(reply, self.rel(parent.0));
        let f = match tryr!(reply, self.child(parent.0, &prel, name)) {
            Some(f) => f,
            None => {
                // A negative entry (node id 0) the kernel may cache: every name that
                // appears later appears through this server, and the kernel replaces
                // the negative entry itself then.
                reply.entry(&TTL, &Self::negative_attr(), Generation(0));
                return;
            }
        };
        let attr = self.remember(parent.0, name, &f);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let mut nodes = self.nodes();
        if let Some(n) = nodes.map.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                nodes.map.remove(&ino.0);
                drop(nodes);
                self.node_fds().map.remove(&ino.0);
                self.dirs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _g = self.rlock();
        let f = match self.locate(ino.0) {
            Ok(f) => f,
            Err(e) => {
                // Open and unlinked: the pinned backing file answers.
                let pinned = self
                    .node_fds()
                    .map
                    .get(&ino.0)
                    .filter(|f| f.pinned)
                    .cloned();
                let meta = tryr!(
                    reply,
                    pinned
                        .ok_or(e)
                        .and_then(|p| p.file.metadata().map_err(io_errno))
                );
                driver_core::stack::Found {
                    branch: usize::MAX,
                    path: Default::default(),
                    meta,
                    merged: Vec::new(),
                }
            }
        };
        reply.attr(&TTL, &Self::attr(ino.0, &f));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = tryr!(
            reply,
            self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh)
        );
        reply.attr(&TTL, &a);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _g = self.rlock();
        let f = tryr!(reply, self.locate(ino.0));
        let t = tryr!(reply, std::fs::read_link(&f.path).map_err(io_errno));
        reply.data(t.as_os_str().as_bytes());
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _g = self.wlock();
        let (_prel, rel, pf, had_wh) = tryr!(reply, self.prepare_new(parent.0, name));
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        let r = nix::sys::stat::mknod(
            &self.rw_path(&rel),
            kind,
            Mode::from_bits_truncate(mode & 0o7777),
            super::decode_dev(rdev),
        )
        .map_err(nix_errno);
        tryr!(reply, r);
        let a = tryr!(
            reply,
            self.finish_new(
                req,
                parent.0,
                name,
                &rel,
                &pf.meta,
                Some(mode),
                false,
                had_wh
            )
        );
        reply.entry(&TTL, &a, Generation(0));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _g = self.wlock();
        let (_prel, rel, pf, had_wh) = tryr!(reply, self.prepare_new(parent.0, name));
        tryr!(
            reply,
            nix::unistd::mkdir(&self.rw_path(&rel), Mode::from_bits_truncate(mode & 0o7777))
                .map_err(nix_errno)
        );
        let a = tryr!(
            reply,
            self.finish_new(
                req,
                parent.0,
                name,
                &rel,
                &pf.meta,
                Some(mode),
                true,
                had_wh
            )
        );
        reply.entry(&TTL, &a, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tryr!(reply, self.do_unlink(parent.0, name, false));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tryr!(reply, self.do_unlink(parent.0, name, true));
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _g = self.wlock();
        let (_prel, rel, pf, had_wh) = tryr!(reply, self.prepare_new(parent.0, link_name));
        tryr!(
            reply,
            std::os::unix::fs::symlink(target, self.rw_path(&rel)).map_err(io_errno)
        );
        let a = tryr!(
            reply,
            self.finish_new(req, parent.0, link_name, &rel, &pf.meta, None, false, had_wh)
        );
        reply.entry(&TTL, &a, Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        tryr!(
            reply,
            self.do_rename(parent.0, name, newparent.0, newname, flags)
        );
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _g = self.wlock();
        let src = tryr!(reply, self.rel(ino.0));
        let sf = tryr!(reply, self.copy_up(&src));
        if sf.is_dir() {
            reply.error(Errno::EPERM);
            return;
        }
        let (_prel, rel, _pf, _had_wh) = tryr!(reply, self.prepare_new(newparent.0, newname));
        tryr!(
            reply,
            std::fs::hard_link(self.rw_path(&src), self.rw_path(&rel)).map_err(io_errno)
        );
        let f = tryr!(reply, self.found(&rel));
        let a = self.remember(newparent.0, newname, &f);
        reply.entry(&TTL, &a, Generation(0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !self.passthrough {
            // `no_open`: the kernel stops sending OPEN/RELEASE for files and keeps their
            // page cache (FOPEN_KEEP_CACHE is its default then). I/O names the node.
            reply.error(Errno::ENOSYS);
            return;
        }
        if tryr!(reply, self.open_lazy(ino.0, flags.0)) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
            return;
        }
        let fh = tryr!(reply, self.open_file(ino.0, flags.0));
        let file = tryr!(reply, self.file(fh));
        let meta = tryr!(reply, file.metadata().map_err(io_errno));
        let key = (meta.dev(), meta.ino());
        // The kernel sends RELEASE in the background: a handle closed just before this
        // open (`cat big; echo >> big`) may still hold the old backing file. Give the
        // other worker threads a moment to process it before answering EBUSY.
        for _ in 0..RELEASE_WAIT_MS {
            let b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
            match b.by_node.get(&ino.0) {
                Some((IoMode::Passthrough(k, _), _)) if *k != key => {}
                _ => break,
            }
            drop(b);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        let b = &mut *b;
        b.by_fh.insert(fh, ino.0);
        // Every handle of an inode is opened the same way while any is open: the
        // kernel does not mix passthrough and cached I/O on one inode.
        match b.by_node.get_mut(&ino.0) {
            Some((IoMode::Passthrough(k, id), n)) if *k == key => {
                *n += 1;
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id);
            }
            Some((IoMode::Passthrough(..), _)) => {
                // Still open with the lower file as its backing file (a reader from
                // before the copy-up), and the kernel takes one backing file per inode
                // at a time: the copy gets a node of its own. ESTALE makes the kernel
                // walk the path again with LOOKUP_REVAL, find the new node and open
                // that; the reader keeps the lower copy, as on overlayfs. (Only here,
                // with passthrough, does a copy-up change the inode number.)
                b.by_fh.remove(&fh);
                self.files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&fh);
                self.renumber(key);
                tracing::debug!(ino = ino.0, "copy-up under a passthrough reader: new node");
                reply.error(Errno::ESTALE);
            }
            Some((IoMode::Cached, n)) => {
                *n += 1;
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            None => {
                let id = if self.passthrough && meta.len() >= PASSTHROUGH_MIN_SIZE {
                    match reply.open_backing(&*file) {
                        Ok(id) => Some(id),
                        Err(e) => {
                            tracing::debug!(error = %e, "no passthrough for this file");
                            None
                        }
                    }
                } else {
                    None
                };
                match id {
                    Some(id) => {
                        let e = b
                            .by_node
                            .entry(ino.0)
                            .or_insert((IoMode::Passthrough(key, id), 1));
                        if let IoMode::Passthrough(_, id) = &e.0 {
                            reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id);
                        }
                    }
                    None => {
                        b.by_node.insert(ino.0, (IoMode::Cached, 1));
                        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
                    }
                }
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = tryr!(reply, self.io_file(ino.0, fh.0, false));
        READ_BUF.with_borrow_mut(|buf| {
            // One buffer per worker thread, grown (and zeroed) only when a larger READ
            // comes: a fresh zeroed buffer per READ cost a memset of every byte read.
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            let mut got = 0usize;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        reply.error(io_errno(e));
                        return;
                    }
                }
            }
            reply.data(&buf[..got]);
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let f = tryr!(reply, self.io_file(ino.0, fh.0, true));
        tryr!(reply, f.write_all_at(data, offset).map_err(io_errno));
        if fh.0 == 0 && flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            // Without an open the backing file was not opened O_SYNC: sync here.
            tryr!(reply, f.sync_data().map_err(io_errno));
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes reach the backing file when they are made: nothing to flush. ENOSYS
        // makes the kernel stop sending FLUSH on every close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        let mut b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        // Handle 0: a lazy open (`open_lazy`), counted by node.
        let node = if fh.0 == 0 {
            Some(ino.0)
        } else {
            b.by_fh.remove(&fh.0)
        };
        if let Some(node) = node {
            if let Some((_, n)) = b.by_node.get_mut(&node) {
                *n -= 1;
                if *n == 0 {
                    // Dropping the id closes the backing file in the kernel.
                    b.by_node.remove(&node);
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let f = tryr!(reply, self.io_file(ino.0, fh.0, false));
        let r = if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        };
        tryr!(reply, r.map_err(io_errno));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // ENOSYS once: the kernel stops sending OPENDIR and RELEASEDIR (`no_opendir`)
        // and opens directories itself with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR, so a
        // walk over cached listings costs no round trip per directory. READDIR(PLUS)
        // then names the directory by node ([`AufsFs::dir_listing`]).
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let l = tryr!(reply, self.dir_listing(ino.0, offset));
        let start = l.partition_point(|e| e.0 <= offset);
        for (cookie, id, kind, name) in &l[start..] {
            if reply.add(INodeNo(*id), *cookie, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let l = tryr!(reply, self.dir_listing(ino.0, offset));
        let _g = self.rlock();
        let prel = tryr!(reply, self.rel(ino.0));
        let start = l.partition_point(|e| e.0 <= offset);
        for (off, id, kind, name) in &l[start..] {
            let off = *off;
            // The kernel takes "." and ".." as names only (no lookup is counted), and an
            // entry with node id 0 as "no attributes" (a name gone since opendir).
            let dot = name.as_bytes() == b"." || name.as_bytes() == b"..";
            let found = if dot {
                None
            } else {
                tryr!(reply, self.child(ino.0, &prel, name))
            };
            let Some(f) = found else {
                let mut a = Self::negative_attr();
                a.kind = *kind;
                let node = if dot { *id } else { 0 };
                // The attributes' inode number is the entry's d_ino: libc's readdir
                // skips entries with d_ino 0, so "." and ".." carry their node's
                // number (as READDIR does), and a name gone since the listing stays 0.
                a.ino = INodeNo(node);
                if reply.add(INodeNo(node), off, name, &TTL, &a, Generation(0)) {
                    break;
                }
                continue;
            };
            let a = self.remember(ino.0, name, &f);
            if reply.add(a.ino, off, name, &TTL, &a, Generation(0)) {
                // Not sent: the kernel did not get this lookup.
                self.unremember(a.ino.0);
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _g = self.rlock();
        let rel = tryr!(reply, self.rel(ino.0));
        let p = self.rw_path(&rel);
        // Only branch 0 can hold unsynced changes; a directory not copied up has none.
        if let Ok(d) = File::open(&p) {
            tryr!(reply, d.sync_all().map_err(io_errno));
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = tryr!(
            reply,
            nix::sys::statvfs::statvfs(&self.rw).map_err(nix_errno)
        );
        reply.statfs(
            s.blocks(),
            s.blocks_free(),
            s.blocks_available(),
            s.files(),
            s.files_free(),
            s.block_size() as u32,
            s.name_max() as u32,
            s.fragment_size() as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _g = self.wlock();
        let rel = tryr!(reply, self.rel(ino.0));
        tryr!(reply, self.copy_up_node(ino.0, &rel));
        let r = rustix::fs::lsetxattr(
            self.rw_path(&rel),
            name,
            value,
            rustix::fs::XattrFlags::from_bits_retain(flags as u32),
        );
        tryr!(reply, r.map_err(|e| Errno::from_i32(e.raw_os_error())));
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _g = self.rlock();
        let f = tryr!(reply, self.locate(ino.0));
        let v = tryr!(reply, read_xattr_value(&f.path, name));
        reply_xattr(reply, size, &v);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _g = self.rlock();
        let f = tryr!(reply, self.locate(ino.0));
        let v = tryr!(reply, list_xattr_names(&f.path));
        reply_xattr(reply, size, &v);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _g = self.wlock();
        let rel = tryr!(reply, self.rel(ino.0));
        let f = tryr!(reply, self.found(&rel));
        // Nothing to remove: answer without copying up.
        tryr!(reply, read_xattr_value(&f.path, name));
        tryr!(reply, self.copy_up_node(ino.0, &rel));
        let r = rustix::fs::lremovexattr(self.rw_path(&rel), name);
        tryr!(reply, r.map_err(|e| Errno::from_i32(e.raw_os_error())));
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has checked the mode bits already.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if !self.passthrough {
            // Without opens the kernel makes the file with MKNOD and opens it itself:
            // one round trip, and no RELEASE later.
            reply.error(Errno::ENOSYS);
            return;
        }
        let _g = self.wlock();
        let (_prel, rel, pf, had_wh) = tryr!(reply, self.prepare_new(parent.0, name));
        let fd = tryr!(
            reply,
            open(
                &self.rw_path(&rel),
                OFlag::from_bits_truncate(flags & PASSED_OPEN_FLAGS)
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode & 0o7777),
            )
            .map_err(nix_errno)
        );
        let file = File::from(fd);
        let a = tryr!(
            reply,
            self.finish_new(
                req,
                parent.0,
                name,
                &rel,
                &pf.meta,
                Some(mode),
                false,
                had_wh
            )
        );
        let fh = self.fh();
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(file));
        {
            // A new file is empty: cached I/O (see `open`).
            let mut b = self.backing.lock().unwrap_or_else(|p| p.into_inner());
            b.by_fh.insert(fh, a.ino.0);
            b.by_node.entry(a.ino.0).or_insert((IoMode::Cached, 0)).1 += 1;
        }
        reply.created(
            &TTL,
            &a,
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let f = tryr!(reply, self.io_file(ino.0, fh.0, true));
        let r = nix::fcntl::fallocate(
            f.as_fd(),
            nix::fcntl::FallocateFlags::from_bits_retain(mode),
            offset as i64,
            length as i64,
        );
        tryr!(reply, r.map_err(nix_errno));
        reply.ok();
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let f = tryr!(reply, self.io_file(ino.0, fh.0, false));
        let w = match whence {
            libc::SEEK_SET => nix::unistd::Whence::SeekSet,
            libc::SEEK_CUR => nix::unistd::Whence::SeekCur,
            libc::SEEK_END => nix::unistd::Whence::SeekEnd,
            libc::SEEK_DATA => nix::unistd::Whence::SeekData,
            libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
            _ => {
                reply.error(Errno::EINVAL);
                return;
            }
        };
        let off = tryr!(
            reply,
            nix::unistd::lseek(f.as_fd(), offset, w).map_err(nix_errno)
        );
        reply.offset(off);
    }
}
