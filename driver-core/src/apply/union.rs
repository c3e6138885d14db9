//! Placing entries in the merged tree (module doc, "Union rules"): the decisions come
//! from [`crate::stack::LayerStack`]; this file only carries them out in the layer
//! directory, fd-relative.
//!
//! Fast path: when an entry's parent is made of real directories of this layer (one
//! `openat2(RESOLVE_NO_SYMLINKS)`, cached), the merged view cannot differ (this layer is
//! on top) and nothing below is looked at. Real builders' tars list every directory
//! before its content, so the slow path runs only for implied parents and symlinked
//! parents.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmodat, fstatat, mkdirat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;

use super::meta::{DeferredDir, Meta};
use super::path;
use super::remove::remove_at;
use super::xattr::set_on_dir_fd;
use super::Applier;
use crate::copyup::{copy_up_at, copy_xattrs, open_dir_path};
use crate::error::{DriverError, Result};
use crate::fsutil::fd_path;
use crate::stack::{Found, LayerStack};
use crate::union_ops::visible_link_group;
use crate::whiteout::{WhiteoutFormat, OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR};

/// Mode of a directory made because an entry needs it and nothing below has it.
const IMPLICIT_DIR_MODE: u32 = 0o755;

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

impl Applier<'_> {
    /// The merged view: this layer over the stack below it.
    pub(super) fn merged_stack(root: &Path, opts: &super::ApplyOptions) -> LayerStack {
        match &opts.lower {
            Some(lower) => lower.with_top(root.to_path_buf()),
            None => LayerStack::new(vec![root.to_path_buf()], opts.whiteouts),
        }
    }

    /// Rewrites the current entry's path so that its parent is the canonical path of
    /// the parent in the merged view, and makes that parent exist as real directories
    /// of this layer. When `only_existing`, a parent missing from the merged view is
    /// not made and the answer is `false` (the entry is to be dropped).
    pub(super) fn union_parent(&mut self, only_existing: bool) -> Result<bool> {
        if path::split(&self.path).0.is_empty() || self.opts.whiteouts != WhiteoutFormat::Delete {
            // A layer of changes may change its root for any entry (an implied parent
            // made in it): keep the root's times from the first entry on.
            let root = self.res.root().clone();
            self.keep_times(b"", &root)?;
        }
        let (parent, name) = path::split(&self.path);
        if parent.is_empty() {
            return Ok(true);
        }
        let parent = parent.to_vec();
        match self.res.dir_plain(&parent) {
            Ok(Some(fd)) => {
                self.keep_times(&parent, &fd)?;
                return Ok(true);
            }
            Ok(None) => {}
            Err(e) => return Err(self.io("resolve parent directory", &parent, e)),
        }
        let name = name.to_vec();
        if only_existing {
            match self.merged.resolve(Path::new(os(&parent)), true) {
                Ok(r) if r.found.as_ref().is_some_and(Found::is_dir) => {}
                _ => return Ok(false),
            }
        }
        let canon = self.ensure_dirs(&parent)?;
        if let Ok(Some(fd)) = self.res.dir_plain(&canon) {
            self.keep_times(&canon, &fd)?;
        }
        if canon != parent {
            tracing::debug!(
                entry = %self.entry_name(),
                parent = %String::from_utf8_lossy(&canon),
                "parent resolved through a symlink in the merged tree"
            );
        }
        self.path = canon;
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(&name);
        Ok(true)
    }

    /// Full-tree layers (`Delete`): remembers the times of the existing directory `rel`
    /// (open as `fd`) before this tar first changes it, unless this tar made it. Layers
    /// of changes (overlay, aufs) do this for their root only: it holds the parent's
    /// root attributes (the driver copies them at create, as the merged root shows the
    /// top layer's), and a tar without a `./` entry must leave them, as on a full tree;
    /// their other directories are made by this apply with the times of the directory
    /// below (implied parents).
    pub(super) fn keep_times(&mut self, rel: &[u8], fd: &std::os::fd::OwnedFd) -> Result<()> {
        if (self.opts.whiteouts != WhiteoutFormat::Delete && !rel.is_empty())
            || self.kept_seen.contains(rel)
            || self.written.as_ref().is_some_and(|w| w.contains(rel))
        {
            return Ok(());
        }
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| self.io("stat", rel, e))?;
        self.kept_seen.insert(rel.to_vec());
        self.kept_times.push(DeferredDir {
            path: rel.to_vec(),
            meta: Meta {
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
                mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
                size: 0,
            },
        });
        Ok(())
    }

    /// Resolves the directory `rel` in the merged view and creates what this layer
    /// lacks of its canonical path; returns the canonical path.
    fn ensure_dirs(&mut self, rel: &[u8]) -> Result<Vec<u8>> {
        let r = self
            .merged
            .resolve(Path::new(os(rel)), true)
            .map_err(|e| self.union_err(rel, e))?;
        if let Some(f) = &r.found {
            if !f.is_dir() {
                return Err(self.io("resolve parent directory", rel, Errno::ENOTDIR));
            }
        }
        let canon = r.path.as_os_str().as_bytes().to_vec();
        let mut cur: Vec<u8> = Vec::with_capacity(canon.len());
        for comp in canon.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            let parent = cur.clone();
            if !cur.is_empty() {
                cur.push(b'/');
            }
            cur.extend_from_slice(comp);
            self.ensure_one(&parent, comp, &cur)?;
        }
        Ok(canon)
    }

    /// Makes `name` in this layer's directory `parent` (cleaned, canonical) a real
    /// directory; `full` is `parent/name`.
    fn ensure_one(&mut self, parent: &[u8], name: &[u8], full: &[u8]) -> Result<()> {
        let pfd = match self.res.dir_plain(parent) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Err(self.io("resolve parent directory", parent, Errno::ENOENT)),
            Err(e) => return Err(self.io("resolve parent directory", parent, e)),
        };
        let mut opaque = false;
        match fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                return Ok(())
            }
            Ok(st)
                if self.opts.whiteouts == WhiteoutFormat::Overlay
                    && super::whiteouts::is_whiteout_stat(&st) =>
            {
                // This layer deleted the name: the new directory must hide what is below.
                self.res.invalidate();
                remove_at(pfd.as_fd(), name).map_err(|e| self.io("remove whiteout", full, e))?;
                opaque = true;
            }
            Ok(_) => return Err(self.io("resolve parent directory", full, Errno::ENOTDIR)),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.io("stat", full, e)),
        }
        let below = if opaque {
            None
        } else {
            self.merged
                .lookup(Path::new(os(full)))
                .map_err(|e| self.union_err(full, e))?
                .filter(|f| f.branch > 0 && f.is_dir())
        };
        self.make_dir(pfd.as_fd(), name, full, below.as_ref(), opaque)
    }

    /// Creates directory `name` in `dir`: with the attributes of `like` (the directory
    /// it shadows) or `0755` owned by this process; opaque when asked.
    fn make_dir(
        &mut self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &[u8],
        full: &[u8],
        like: Option<&Found>,
        opaque: bool,
    ) -> Result<()> {
        let Some(like) = like else {
            let mode = Mode::from_bits_truncate(IMPLICIT_DIR_MODE);
            mkdirat(dir, name, mode).map_err(|e| self.io("mkdir", full, e))?;
            // Exactly 0755 whatever the umask (just made: following is harmless).
            fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink)
                .map_err(|e| self.io("chmod", full, e))?;
            if opaque {
                let fd = open_dir_path(dir, os(name)).map_err(|e| self.io("open", full, e))?;
                set_on_dir_fd(fd.as_fd(), OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_VALUE)
                    .map_err(|e| DriverError::io("set opaque xattr", self.abs(full), e))?;
            }
            return Ok(());
        };
        tracing::trace!(dir = %String::from_utf8_lossy(full), "implied parent copies the directory below");
        let m = &like.meta;
        mkdirat(dir, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| self.io("mkdir", full, e))?;
        if self.opts.preserve_owners {
            nix::unistd::fchownat(
                dir,
                name,
                Some(nix::unistd::Uid::from_raw(m.uid())),
                Some(nix::unistd::Gid::from_raw(m.gid())),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io("chown", full, e))?;
        }
        // `<parent fd>/<name>` through /proc: the l*xattr calls do not follow `name`.
        copy_xattrs(&like.path, &fd_path(dir, Some(name)), &self.abs(full))?;
        if self.create_umask.is_some() && super::has_default_acl(&like.path) {
            // Files created below it get their mode from that ACL, not the umask.
            tracing::debug!(dir = %String::from_utf8_lossy(full), "default ACL copied from below: files are chmod-ed after creation");
            self.create_umask = None;
        }
        // Mode and times once every entry is in (children change the mtime; a 0555
        // directory must stay writable meanwhile).
        self.deferred.push(DeferredDir {
            path: full.to_vec(),
            meta: Meta {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                atime: TimeSpec::new(m.atime(), m.atime_nsec()),
                mtime: TimeSpec::new(m.mtime(), m.mtime_nsec()),
                size: 0,
            },
        });
        Ok(())
    }

    /// The canonical path of a hard-link target (cleaned, non-empty), copied up into
    /// this layer when it exists only below.
    pub(super) fn union_link_target(&mut self, target: &[u8]) -> Result<Vec<u8>> {
        let (tparent, tname) = path::split(target);
        if let Ok(Some(fd)) = self.res.dir_plain(tparent) {
            if fstatat(fd.as_fd(), tname, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
                return Ok(target.to_vec());
            }
        }
        let r = match self.merged.resolve(Path::new(os(tparent)), true) {
            Ok(r) => r,
            // A loop or a non-directory: the caller reports the target as unresolvable.
            Err(_) => return Ok(target.to_vec()),
        };
        if !r.found.as_ref().is_some_and(Found::is_dir) {
            // Missing: the caller reports the target as missing.
            return Ok(target.to_vec());
        }
        let mut canon = r.path.as_os_str().as_bytes().to_vec();
        if !canon.is_empty() {
            canon.push(b'/');
        }
        canon.extend_from_slice(tname);
        let Some(f) = self
            .merged
            .lookup(Path::new(os(&canon)))
            .map_err(|e| self.union_err(&canon, e))?
        else {
            return Ok(canon);
        };
        if f.branch == 0 || f.is_dir() {
            return Ok(canon);
        }
        let cparent = self.ensure_dirs(path::split(&canon).0)?;
        let pfd = self.plain_dir(&cparent)?;
        tracing::debug!(target = %String::from_utf8_lossy(&canon), "copy-up of a hard-link target from below");
        copy_up_at(
            &f.path,
            &f.meta,
            pfd.as_fd(),
            os(tname),
            &self.abs(&cparent),
            self.opts.preserve_owners,
        )?;
        if f.meta.nlink() > 1 {
            self.copy_up_link_group(&f, &canon)?;
        }
        Ok(canon)
    }

    /// After `canon` (a lower file with other names) was copied up: copies up every
    /// other name of the same lower inode that the merged view shows
    /// ([`visible_link_group`], aufs' plnk rule), as hard links to the copy, so the new
    /// link joins the whole group as it does when the layers are extracted onto one tree
    /// (GNU tar, umoci, vfs). Only a layer linking to a multiply-linked lower file pays
    /// the walk of the lower layer holding the inode.
    fn copy_up_link_group(&mut self, f: &Found, canon: &[u8]) -> Result<()> {
        let group = visible_link_group(&self.merged, f, Path::new(os(canon)))?;
        for rel in group {
            let rel = rel.as_os_str().as_bytes();
            let (rparent, rname) = path::split(rel);
            let rparent = self.ensure_dirs(rparent)?;
            let (cparent, cname) = path::split(canon);
            let cfd = self.plain_dir(cparent)?;
            let rfd = self.plain_dir(&rparent)?;
            nix::unistd::linkat(cfd.as_fd(), cname, rfd.as_fd(), rname, AtFlags::empty())
                .map_err(|e| self.io("link copied-up name", rel, e))?;
        }
        Ok(())
    }

    /// This layer's directory `rel`, which must exist as real directories.
    fn plain_dir(&mut self, rel: &[u8]) -> Result<std::rc::Rc<std::os::fd::OwnedFd>> {
        match self.res.dir_plain(rel) {
            Ok(Some(fd)) => Ok(fd),
            Ok(None) => Err(self.io("resolve directory", rel, Errno::ENOENT)),
            Err(e) => Err(self.io("resolve directory", rel, e)),
        }
    }

    /// A stack lookup error, named after the entry.
    fn union_err(&self, rel: &[u8], e: DriverError) -> DriverError {
        match e {
            DriverError::Io { op, path, source } => DriverError::Io {
                op,
                path: if path.as_os_str().is_empty() {
                    self.abs(rel)
                } else {
                    path
                },
                source,
            },
            other => other,
        }
    }
}
