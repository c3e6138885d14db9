//! One function per entry kind. Each resolves the parent in the root, then creates the
//! final component relative to the parent fd without following it, replacing whatever
//! was there.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, makedev, mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, mkfifoat, symlinkat};

use super::meta::{self, DeferredDir, Meta};
use super::path;
use super::remove::{is_dir_at, remove_at, Removed};
use super::shared::SharedBytes;
use super::sparse::Layout;
use super::writer::{Content, End, Job, Writer, WRITE_CHUNK};
use super::{Applier, Kind};
use crate::error::{DriverError, Result};

/// Mode a directory is created with; its real mode is applied at the end.
const NEW_DIR_MODE: u32 = 0o700;
/// Mode a regular file is created with when its real mode is applied after chown
/// (`Applier::create_mode`).
const NEW_FILE_MODE: u32 = 0o600;

impl Applier<'_> {
    /// Opens the current entry's parent, creating missing directories.
    fn parent(&mut self) -> Result<Rc<OwnedFd>> {
        let (parent, _) = path::split(&self.path);
        match self.res.dir(parent, true) {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(self.io("resolve parent directory", parent, Errno::ENOENT)),
            Err(e) => Err(self.io("resolve parent directory", parent, e)),
        }
    }

    /// Removes whatever is at `name` in `dir`, forgetting cached directory fds.
    pub(super) fn remove_existing(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<Removed> {
        self.res.invalidate();
        remove_at(dir, name).map_err(|e| self.io("remove existing", &self.path, e))
    }

    /// Runs `make`; if the name exists, removes it and runs `make` once more.
    fn create<T>(
        &mut self,
        op: &'static str,
        dir: BorrowedFd<'_>,
        name: &[u8],
        mut make: impl FnMut(BorrowedFd<'_>, &[u8]) -> nix::Result<T>,
    ) -> Result<T> {
        match make(dir, name) {
            Ok(t) => return Ok(t),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.io(op, &self.path, e)),
        }
        self.remove_existing(dir, name)?;
        make(dir, name).map_err(|e| self.io(op, &self.path, e))
    }

    fn chown_at(&self, dir: BorrowedFd<'_>, name: &[u8], m: &Meta) -> Result<()> {
        if self.opts.preserve_owners {
            meta::chown_at(dir, name, m).map_err(|e| self.io("chown", &self.path, e))?;
        }
        Ok(())
    }

    /// [`Self::chown_at`] of `name`, just created in `pfd`: skipped when the new inode
    /// already has the entry's owner ([`Self::new_file_owner`]).
    fn chown_new_at(&mut self, pfd: &Rc<OwnedFd>, name: &[u8], m: &Meta) -> Result<()> {
        if self.opts.preserve_owners && self.new_file_owner(pfd) != Some((m.uid, m.gid)) {
            meta::chown_at(pfd.as_fd(), name, m).map_err(|e| self.io("chown", &self.path, e))?;
        }
        Ok(())
    }

    fn xattrs_at(&self, dir: BorrowedFd<'_>, name: Option<&[u8]>) -> Result<()> {
        self.xattrs
            .set_at(dir, name)
            .map_err(|(attr, e)| self.xattr_err(&attr, e))
    }

    /// Refuses the entry (on every driver) when its xattrs leave no room for overlay's
    /// copy-up xattrs (see `xattr::has_headroom`). `room` is the probe's answer.
    fn require_headroom(&self, room: io::Result<bool>) -> Result<()> {
        match room {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.unsafe_entry(
                "its xattrs leave no room in the filesystem's xattr space for the ones overlayfs adds when a container changes it (trusted.overlay.origin, impure): refused on every driver",
            )),
            Err(e) => Err(self.xattr_err("(headroom probe)", e)),
        }
    }

    /// Whether the layer's filesystem is (nearly) out of blocks, so that an ENOSPC from
    /// `setxattr` means a full disk, not a full xattr space.
    fn disk_full(&self) -> bool {
        match nix::sys::statvfs::fstatvfs(self.res.root().as_fd()) {
            Ok(st) => st.blocks_available() < 64,
            Err(_) => true,
        }
    }

    fn xattr_err(&self, attr: &str, e: io::Error) -> DriverError {
        if super::xattr::is_xattr_space_error(&e) && !self.disk_full() {
            return self.unsafe_entry(format!(
                "xattr {attr}: its xattrs do not fit the filesystem's xattr space ({e})"
            ));
        }
        // EINVAL / ERANGE: the kernel refuses the name or value itself (a malformed
        // `system.posix_acl_access`, a name over XATTR_NAME_MAX): the layer is invalid,
        // whatever the driver.
        if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ERANGE)) {
            return self.unsafe_entry(format!(
                "xattr {attr}: the kernel refuses it as invalid ({e})"
            ));
        }
        DriverError::Io {
            op: "setxattr",
            path: self.abs(&self.path),
            source: io::Error::new(e.kind(), format!("xattr {attr}: {e}")),
        }
    }

    /// A regular file: created `O_EXCL | O_NOFOLLOW`, content copied, then owner,
    /// xattrs, mode (unless it was created with it, [`Self::create_mode`]) and times
    /// through the open fd, on the writer thread (`writer.rs`) for plain files without
    /// xattrs unless the writer is behind.
    ///
    /// Sparse entries keep their holes (see `sparse.rs`).
    pub(super) fn file(&mut self, data: &mut dyn Read, m: &Meta, layout: &Layout) -> Result<()> {
        let pfd = self.parent()?;
        let (_, name) = path::split(&self.path);
        let name = name.to_vec();
        let final_mode = self.create_mode(m);
        let create_mode = final_mode.unwrap_or(NEW_FILE_MODE);
        let fd = self.create("create file", pfd.as_fd(), &name, |d, n| {
            openat(
                d,
                n,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(create_mode),
            )
        })?;
        let chown = self.opts.preserve_owners && self.new_file_owner(&pfd) != Some((m.uid, m.gid));
        let chmod = final_mode.is_none();
        let mut file = File::from(fd);
        if matches!(layout, Layout::Plain)
            && self.xattrs.is_empty()
            && !self.writer.as_ref().is_some_and(|w| w.congested())
        {
            return self.file_to_writer(file, data, m, chown, chmod);
        }
        let copied = self.write_content(&mut file, data, m.size, layout)?;
        self.stats.content_bytes += copied;
        let fd = file.as_fd();
        if chown {
            meta::chown_fd(fd, m).map_err(|e| self.io("chown", &self.path, e))?;
        }
        if !self.xattrs.is_empty() {
            self.xattrs
                .set_on_file(&file)
                .map_err(|(attr, e)| self.xattr_err(&attr, e))?;
            self.require_headroom(self.xattrs.headroom_on_file(&file))?;
        }
        meta::finish_fd(fd, m, chmod).map_err(|e| self.io("set mode and times", &self.path, e))
    }

    /// The mode to create the current regular file with when that is already its final
    /// mode (so no chmod follows), else `None` (created [`NEW_FILE_MODE`], chmod
    /// after chown). Final only when the entry has no setuid, setgid or sticky bit (a
    /// later chown would clear them; GNU tar also sets those after chown) and the
    /// umask does not strip any of its bits; [`Applier::create_umask`] says when the
    /// umask is what the kernel applies (no default ACL can be in the way).
    fn create_mode(&self, m: &Meta) -> Option<u32> {
        let umask = self.create_umask?;
        (m.mode & 0o7000 == 0 && m.mode & umask == 0).then_some(m.mode & 0o777)
    }

    /// The owner a file created now in the directory `pfd` gets: the effective uid,
    /// and the directory's group if it is setgid, else the effective gid (Linux
    /// `inode_init_owner`). A chown to exactly that is skipped: on a new, empty file it
    /// changes nothing (no setuid/setgid bits or capabilities to clear yet). `None`
    /// when the directory cannot be stat'ed (then chown is done). The same rule gives
    /// the owner of a new directory, symlink or device node. Cached per parent fd;
    /// forgotten when an entry changes an existing directory's owner or mode (the
    /// root entry, a directory entry for a directory that exists); a directory that is
    /// removed or replaced gets a new fd (the resolver's cache is invalidated), so its
    /// cached answer is never used again.
    fn new_file_owner(&mut self, pfd: &Rc<OwnedFd>) -> Option<(u32, u32)> {
        if let Some((fd, owner)) = &self.new_file_owner {
            if Rc::ptr_eq(fd, pfd) {
                return Some(*owner);
            }
        }
        let st = fstat(pfd.as_fd()).ok()?;
        let gid = if st.st_mode & libc::S_ISGID != 0 {
            st.st_gid
        } else {
            self.egid
        };
        let owner = (self.euid, gid);
        self.new_file_owner = Some((pfd.clone(), owner));
        Some(owner)
    }

    /// Hands the just-created `file` to the writer thread (`writer.rs`) with its
    /// content, read here in chunks of at most [`WRITE_CHUNK`] bytes (or lent by a
    /// chunked stream, `shared.rs`), and the metadata applied after the last one.
    fn file_to_writer(
        &mut self,
        file: File,
        data: &mut dyn Read,
        m: &Meta,
        chown: bool,
        chmod: bool,
    ) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(Writer::spawn()?);
        }
        let mut file = Some((file, self.abs(&self.path)));
        let mut left = m.size;
        let lends = self.input.borrow().lends();
        loop {
            let (content, got, want) = if lends && left > 0 {
                // At most WRITE_CHUNK a job, as for copies: the chunks the writer's
                // queue keeps from the pool stay few (`digest.rs`, POOL_CHUNKS).
                match self.take_shared(left.min(WRITE_CHUNK as u64))? {
                    Some(b) => {
                        let n = b.len();
                        (Content::Shared(b), n, n)
                    }
                    // The stream ended inside the file: short, reported below.
                    None => (Content::Buf(Vec::new(), 0), 0, 1),
                }
            } else {
                let writer = self.writer.as_mut().expect("spawned above");
                let want = left.min(WRITE_CHUNK as u64) as usize;
                let mut buf = writer.buffer();
                let mut got = 0;
                while got < want {
                    match data.read(&mut buf[got..want]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(self.tar_err(e)),
                    }
                }
                (Content::Buf(buf, got), got, want)
            };
            left -= got as u64;
            let last = got < want || left == 0;
            let end = last.then_some(End {
                meta: *m,
                chown,
                chmod,
            });
            let job = Job {
                file: file.take(),
                content,
                end,
            };
            self.writer.as_mut().expect("spawned above").send(job)?;
            if last {
                break;
            }
        }
        let copied = m.size - left;
        self.stats.content_bytes += copied;
        self.expect_len(copied, m.size)
    }

    /// Takes up to `left` (> 0) next bytes of the current entry's data from a chunked
    /// stream without a copy (`shared.rs`); the tar reader is told they are consumed
    /// (the tap's credit). `None`: the stream ended.
    pub(super) fn take_shared(&mut self, left: u64) -> Result<Option<SharedBytes>> {
        let max = usize::try_from(left).unwrap_or(usize::MAX);
        let got = self
            .input
            .borrow_mut()
            .read_shared(max)
            .map_err(|e| self.tar_err(e))?;
        if let Some(b) = &got {
            self.tape.credit(b.len() as u64);
        }
        Ok(got)
    }

    /// A directory: kept if one exists (metadata updated), else created; mode and times
    /// are applied at the end.
    pub(super) fn dir(&mut self, m: &Meta) -> Result<()> {
        let pfd = self.parent()?;
        let (_, name) = path::split(&self.path);
        let name = name.to_vec();
        let mode = Mode::from_bits_truncate(NEW_DIR_MODE);
        let mut existed = false;
        let mut opaque = false;
        match mkdirat(pfd.as_fd(), name.as_slice(), mode) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                match is_dir_at(pfd.as_fd(), &name).map_err(|e| self.io("stat", &self.path, e))? {
                    Some(true) => existed = true,
                    _ => {
                        self.create("mkdir", pfd.as_fd(), &name, |d, n| mkdirat(d, n, mode))?;
                        // What stood here (this layer's whiteout or non-directory) already
                        // hid the name below: the new directory must not merge with it.
                        // Set after the entry's xattrs and their headroom check, so
                        // that check sees the same xattrs on every driver.
                        opaque = self.opts.whiteouts == crate::whiteout::WhiteoutFormat::Overlay;
                    }
                }
            }
            Err(e) => return Err(self.io("mkdir", &self.path, e)),
        }
        if existed {
            // Its owner (and, at the end, its mode) may change: new files in it may get
            // another owner than the cached answer says.
            self.new_file_owner = None;
            self.chown_at(pfd.as_fd(), &name, m)?;
        } else {
            self.chown_new_at(&pfd, &name, m)?;
        }
        self.xattrs_at(pfd.as_fd(), Some(&name))?;
        if existed {
            self.xattrs
                .retain_only_at(pfd.as_fd(), Some(&name))
                .map_err(|(a, e)| self.xattr_err(&a, e))?;
        }
        self.require_headroom(self.xattrs.headroom_at(pfd.as_fd(), Some(&name), true))?;
        if opaque {
            self.set_opaque_at(pfd.as_fd(), &name)?;
        }
        self.deferred.push(DeferredDir {
            path: self.path.clone(),
            meta: *m,
        });
        Ok(())
    }

    /// The root entry (`./`): Docker applies its owner, mode, xattrs and times to the
    /// layer root.
    pub(super) fn root_dir(&mut self, m: Meta) -> Result<()> {
        let root = self.res.root().clone();
        self.new_file_owner = None;
        if self.opts.preserve_owners {
            meta::chown_fd(root.as_fd(), &m).map_err(|e| self.io("chown", b"", e))?;
        }
        self.xattrs_at(root.as_fd(), None)?;
        self.xattrs
            .retain_only_at(root.as_fd(), None)
            .map_err(|(a, e)| self.xattr_err(&a, e))?;
        self.require_headroom(self.xattrs.headroom_at(root.as_fd(), None, true))?;
        self.deferred.push(DeferredDir {
            path: Vec::new(),
            meta: m,
        });
        Ok(())
    }

    /// A symlink; its target is data and may point anywhere: later writes through it
    /// are resolved in the root.
    pub(super) fn symlink(&mut self, m: &Meta) -> Result<()> {
        if self.link.is_empty() {
            return Err(self.unsafe_entry("symlink with an empty target"));
        }
        let pfd = self.parent()?;
        let (_, name) = path::split(&self.path);
        let name = name.to_vec();
        let target = std::mem::take(&mut self.link);
        let r = self.create("symlink", pfd.as_fd(), &name, |d, n| {
            symlinkat(std::ffi::OsStr::from_bytes(&target), d, n)
        });
        self.link = target;
        r?;
        self.chown_new_at(&pfd, &name, m)?;
        self.xattrs_at(pfd.as_fd(), Some(&name))?;
        self.require_headroom(self.xattrs.headroom_at(pfd.as_fd(), Some(&name), false))?;
        meta::times_at(pfd.as_fd(), &name, m).map_err(|e| self.io("set times", &self.path, e))
    }

    /// A hard link. The target is cleaned like an entry name, its parent resolved in the
    /// root, and it must be an existing non-directory. Like GNU tar, the link's header
    /// metadata is not applied (it would change the shared inode).
    pub(super) fn hardlink(&mut self) -> Result<()> {
        if let Err(bad) = path::clean(&self.link, &mut self.link_clean) {
            return Err(self.unsafe_entry(format!(
                "hard link target {:?}: {}",
                String::from_utf8_lossy(&self.link),
                bad.reason()
            )));
        }
        if self.link_clean.is_empty() {
            return Err(self.unsafe_entry("hard link to the layer root (a directory)"));
        }
        let target = std::mem::take(&mut self.link_clean);
        let target = match self.union_link_target(&target) {
            Ok(t) => t,
            Err(e) => {
                self.link_clean = target;
                return Err(e);
            }
        };
        let r = self.hardlink_to(&target);
        self.link_clean = target;
        r
    }

    fn hardlink_to(&mut self, target: &[u8]) -> Result<()> {
        let missing = |me: &Self| {
            me.unsafe_entry(format!(
                "hard link target {:?} does not exist",
                String::from_utf8_lossy(&me.link)
            ))
        };
        let (tparent, tname) = path::split(target);
        let tfd = match self.res.dir(tparent, false) {
            Ok(Some(fd)) => fd,
            Ok(None) | Err(Errno::ENOTDIR) => return Err(missing(self)),
            Err(e) => {
                return Err(self.unsafe_entry(format!(
                    "hard link target {:?} cannot be resolved in the layer: {e}",
                    String::from_utf8_lossy(&self.link)
                )))
            }
        };
        let tst = match fstatat(tfd.as_fd(), tname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Err(missing(self)),
            Err(e) => return Err(self.io("stat hard link target", target, e)),
        };
        let tfmt = SFlag::from_bits_truncate(tst.st_mode) & SFlag::S_IFMT;
        if self.opts.whiteouts == crate::whiteout::WhiteoutFormat::Overlay
            && super::whiteouts::is_whiteout_stat(&tst)
        {
            // This layer's whiteout: the name is deleted, there is nothing to link to.
            return Err(missing(self));
        }
        if tfmt == SFlag::S_IFDIR {
            return Err(self.unsafe_entry(format!(
                "hard link to directory {:?}",
                String::from_utf8_lossy(&self.link)
            )));
        }
        let pfd = self.parent()?;
        let (_, name) = path::split(&self.path);
        let name = name.to_vec();
        // A link to itself (or to a name already linked to the same inode) is a no-op;
        // removing the name first would lose the target.
        if let Ok(st) = fstatat(pfd.as_fd(), name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            if st.st_dev == tst.st_dev && st.st_ino == tst.st_ino {
                return Ok(());
            }
        }
        self.create("link", pfd.as_fd(), &name, |d, n| {
            linkat(tfd.as_fd(), tname, d, n, AtFlags::empty())
        })
    }

    /// A character or block device, or a FIFO.
    pub(super) fn node(&mut self, kind: Kind, h: &tar::Header, m: &Meta) -> Result<()> {
        let (major, minor) = if kind == Kind::Fifo {
            (0, 0)
        } else {
            let major = h.device_major().map_err(|e| self.tar_err(e))?;
            let minor = h.device_minor().map_err(|e| self.tar_err(e))?;
            (major.unwrap_or(0), minor.unwrap_or(0))
        };
        if kind == Kind::Char && major == 0 && minor == 0 {
            // overlayfs reads a 0/0 character device as a whiteout: stored as a device
            // it would delete the name on overlay2 and be a device elsewhere. OCI
            // whiteouts are `.wh.` files; refuse it on every driver rather than differ.
            return Err(self.unsafe_entry(
                "a 0/0 character device is overlayfs's whiteout, not a device; use an OCI `.wh.` whiteout",
            ));
        }
        let pfd = self.parent()?;
        let (_, name) = path::split(&self.path);
        let name = name.to_vec();
        let perm = m.perm();
        match kind {
            Kind::Fifo => self.create("mkfifo", pfd.as_fd(), &name, |d, n| mkfifoat(d, n, perm))?,
            _ => {
                let sflag = if kind == Kind::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                let dev = makedev(u64::from(major), u64::from(minor));
                self.create("mknod", pfd.as_fd(), &name, |d, n| {
                    mknodat(d, n, sflag, perm, dev)
                })?
            }
        }
        self.chown_new_at(&pfd, &name, m)?;
        self.xattrs_at(pfd.as_fd(), Some(&name))?;
        self.require_headroom(self.xattrs.headroom_at(pfd.as_fd(), Some(&name), false))?;
        meta::chmod_node_at(pfd.as_fd(), &name, m).map_err(|e| self.io("chmod", &self.path, e))?;
        meta::times_at(pfd.as_fd(), &name, m).map_err(|e| self.io("set times", &self.path, e))
    }
}
