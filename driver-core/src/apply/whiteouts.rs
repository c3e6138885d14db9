//! Whiteout entries, by the driver's [`WhiteoutFormat`].
//!
//! - `Delete` (vfs: the layer is a full copy of its parent): `.wh.x` removes `x`, an
//!   opaque marker removes every child of its directory, in both cases except what this
//!   same tar wrote (OCI: whiteouts only hide lower layers).
//! - `Overlay`: `.wh.x` becomes a 0/0 character device `x` owned like the whiteout
//!   entry; an opaque marker becomes `trusted.overlay.opaque=y` on the directory.
//! - `Aufs`: whiteouts stay ordinary files; only `.wh..wh.*` metadata is skipped.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mknodat, Mode, SFlag};

use super::meta::{self, Meta};
use super::path;
use super::remove::{is_dir_at, remove_at, walk_dirs};
use super::xattr::set_on_dir_fd;
use super::Applier;
use crate::error::Result;
use crate::whiteout::{
    WhiteoutFormat, OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR, WH_META_PREFIX, WH_OPAQUE,
    WH_PREFIX,
};

/// [`crate::whiteout::classify`] on raw bytes (names need not be UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name<'a> {
    Plain,
    Whiteout(&'a [u8]),
    Opaque,
    Meta,
    Invalid,
}

pub(crate) fn classify_bytes(name: &[u8]) -> Name<'_> {
    if name == WH_OPAQUE.as_bytes() {
        return Name::Opaque;
    }
    if name.starts_with(WH_META_PREFIX.as_bytes()) {
        return Name::Meta;
    }
    match name.strip_prefix(WH_PREFIX.as_bytes()) {
        None => Name::Plain,
        Some(b"") | Some(b".") | Some(b"..") => Name::Invalid,
        Some(t) if t.contains(&b'/') => Name::Invalid,
        Some(t) => Name::Whiteout(t),
    }
}

/// A whiteout-named entry, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wh {
    Whiteout(Vec<u8>),
    Opaque,
    Meta,
}

impl Applier<'_> {
    /// Handles a whiteout-named entry. Returns `false` when the entry must be applied as
    /// an ordinary entry (AUFS keeps whiteout files).
    pub(super) fn whiteout(&mut self, w: Wh, m: &Meta) -> Result<bool> {
        tracing::debug!(entry = %String::from_utf8_lossy(&self.raw), format = ?self.opts.whiteouts, "whiteout");
        match (self.opts.whiteouts, w) {
            (_, Wh::Meta) => Ok(true),
            (WhiteoutFormat::Aufs, Wh::Whiteout(t)) => {
                self.aufs_whiteout(&t)?;
                Ok(false)
            }
            (WhiteoutFormat::Aufs, Wh::Opaque) => {
                self.aufs_opaque_root()?;
                Ok(false)
            }
            (WhiteoutFormat::Delete, Wh::Whiteout(t)) => {
                self.delete_whiteout(&t)?;
                Ok(true)
            }
            (WhiteoutFormat::Delete, Wh::Opaque) => {
                self.delete_opaque()?;
                Ok(true)
            }
            (WhiteoutFormat::Overlay, Wh::Whiteout(t)) => {
                self.overlay_whiteout(&t, m)?;
                Ok(true)
            }
            (WhiteoutFormat::Overlay, Wh::Opaque) => {
                self.overlay_opaque(m)?;
                Ok(true)
            }
        }
    }

    /// The directory holding the whiteout entry.
    fn wh_dir(&mut self, create: bool) -> Result<Option<std::rc::Rc<std::os::fd::OwnedFd>>> {
        let (parent, _) = path::split(&self.path);
        let parent = parent.to_vec();
        self.res
            .dir(&parent, create)
            .map_err(|e| self.io("resolve whiteout directory", &parent, e))
    }

    /// The cleaned path of the whiteout's target: `target` beside the whiteout entry.
    fn whited_out_path(&self, target: &[u8]) -> Vec<u8> {
        let (parent, _) = path::split(&self.path);
        let mut full = parent.to_vec();
        if !full.is_empty() {
            full.push(b'/');
        }
        full.extend_from_slice(target);
        full
    }

    /// Whether this same tar wrote `full` (or something below it): then a whiteout of
    /// it only hides what lies below this layer (OCI: whiteouts apply to lower layers).
    fn written_here(&self, full: &[u8]) -> bool {
        self.written.as_ref().is_some_and(|w| w.contains(full))
    }

    fn delete_whiteout(&mut self, target: &[u8]) -> Result<()> {
        let Some(dfd) = self.wh_dir(false)? else {
            return Ok(());
        };
        let full = self.whited_out_path(target);
        if self.written_here(&full) {
            // A directory of this layer hides everything below it, like an opaque one;
            // a non-directory of this layer already does.
            if is_dir_at(dfd.as_fd(), target).map_err(|e| self.io("stat", &full, e))? == Some(true)
            {
                self.res.invalidate();
                let fd = openat(
                    dfd.as_fd(),
                    target,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io("open", &full, e))?;
                let written = self.written.as_ref().expect("written_here checked it");
                prune(fd.as_fd(), &full, written).map_err(|e| {
                    self.io("remove what lies below a directory of this layer", &full, e)
                })?;
            }
            return Ok(());
        }
        self.res.invalidate();
        remove_at(dfd.as_fd(), target).map_err(|e| self.io("remove whited-out path", &full, e))?;
        Ok(())
    }

    fn delete_opaque(&mut self) -> Result<()> {
        let Some(dfd) = self.wh_dir(true)? else {
            return Ok(());
        };
        let (parent, _) = path::split(&self.path);
        let prefix = parent.to_vec();
        // The opaque directory itself belongs to this layer.
        if let Some(w) = &mut self.written {
            if !prefix.is_empty() {
                super::mark_written(w, &prefix);
            }
        }
        self.res.invalidate();
        let empty = HashSet::new();
        let written = self.written.as_ref().unwrap_or(&empty);
        prune(dfd.as_fd(), &prefix, written)
            .map_err(|e| self.io("remove children of opaque directory", parent, e))
    }

    /// AUFS keeps the `.wh.<target>` file (applied as an ordinary entry by the caller).
    /// When the layer is applied over a lower stack, an entry `<target>` that this
    /// layer holds but this tar did not write can only be a copy-up of lower content
    /// (made for a hard link to a lower group): it goes, as the overlay form replaces it
    /// with the whiteout device. Without a lower stack the directory's prior content is
    /// left alone.
    fn aufs_whiteout(&mut self, target: &[u8]) -> Result<()> {
        if self
            .opts
            .lower
            .as_ref()
            .is_none_or(|l| l.branches().is_empty())
        {
            return Ok(());
        }
        let Some(dfd) = self.wh_dir(false)? else {
            return Ok(());
        };
        let full = self.whited_out_path(target);
        if self.written_here(&full) {
            return Ok(());
        }
        self.res.invalidate();
        remove_at(dfd.as_fd(), target).map_err(|e| self.io("remove whited-out path", &full, e))?;
        Ok(())
    }

    /// An opaque marker at the root of an AUFS layer with layers below: the marker file
    /// hides the lower roots; what this layer holds at the top without having written
    /// it (directories made for its whiteouts) goes, as a full copy prunes it.
    fn aufs_opaque_root(&mut self) -> Result<()> {
        let (parent, _) = path::split(&self.path);
        if !parent.is_empty()
            || self
                .opts
                .lower
                .as_ref()
                .is_none_or(|l| l.branches().is_empty())
        {
            return Ok(());
        }
        let root = self.res.root().clone();
        let names = list_names(root.as_fd()).map_err(|e| self.io("read directory", b"", e))?;
        self.res.invalidate();
        for n in names {
            if n.starts_with(WH_PREFIX.as_bytes()) || self.written_here(&n) {
                continue;
            }
            remove_at(root.as_fd(), &n)
                .map_err(|e| self.io("remove below an opaque root", &n, e))?;
        }
        Ok(())
    }

    fn overlay_whiteout(&mut self, target: &[u8], m: &Meta) -> Result<()> {
        let Some(dfd) = self.wh_dir(true)? else {
            return Ok(());
        };
        let full = self.whited_out_path(target);
        if self.written_here(&full) {
            if is_dir_at(dfd.as_fd(), target).map_err(|e| self.io("stat", &full, e))? == Some(true)
            {
                self.set_opaque_at(dfd.as_fd(), target)?;
            }
            return Ok(());
        }
        self.res.invalidate();
        remove_at(dfd.as_fd(), target).map_err(|e| self.io("remove whited-out path", &full, e))?;
        mknodat(dfd.as_fd(), target, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(|e| self.io("mknod whiteout", &full, e))?;
        if self.opts.preserve_owners {
            meta::chown_at(dfd.as_fd(), target, m).map_err(|e| self.io("chown", &full, e))?;
        }
        // The whiteout entry's times, so the layer is the same whenever it is applied.
        meta::times_at(dfd.as_fd(), target, m).map_err(|e| self.io("set times", &full, e))
    }

    /// Makes the directory `name` in `dir` opaque in this layer's format (overlay
    /// xattr, or an AUFS `.wh..wh..opq` file).
    pub(super) fn set_opaque_at(&mut self, dir: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
        let mut full = path::split(&self.path).0.to_vec();
        if !full.is_empty() {
            full.push(b'/');
        }
        full.extend_from_slice(name);
        let fd = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io("open", &full, e))?;
        match self.opts.whiteouts {
            WhiteoutFormat::Overlay => {
                set_on_dir_fd(fd.as_fd(), OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_VALUE).map_err(|e| {
                    crate::error::DriverError::io("set opaque xattr", self.abs(&full), e)
                })
            }
            WhiteoutFormat::Aufs => {
                let rd = openat(
                    fd.as_fd(),
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io("open", &full, e))?;
                match openat(
                    rd.as_fd(),
                    WH_OPAQUE,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o444),
                ) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(self.io("create opaque marker", &full, e)),
                }
            }
            WhiteoutFormat::Delete => Ok(()),
        }
    }

    fn overlay_opaque(&mut self, m: &Meta) -> Result<()> {
        let Some(dfd) = self.wh_dir(true)? else {
            return Ok(());
        };
        let (parent, _) = path::split(&self.path);
        let parent = parent.to_vec();
        // The opaque directory itself belongs to this layer (as with `Delete`).
        if let Some(w) = &mut self.written {
            if !parent.is_empty() {
                super::mark_written(w, &parent);
            }
        }
        if parent.is_empty() {
            return self.overlay_opaque_root(dfd.as_fd(), m);
        }
        set_on_dir_fd(dfd.as_fd(), OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_VALUE)
            .map_err(|e| crate::error::DriverError::io("set opaque xattr", self.abs(&parent), e))
    }

    /// An opaque layer root: overlayfs ignores the opaque xattr on a layer's root, so the
    /// same tree as on a full copy (vfs prunes the root) is made explicitly: this layer's
    /// own top-level directories become opaque, whatever else it holds at the top is
    /// removed, and every name below it gets a whiteout.
    fn overlay_opaque_root(&mut self, root: BorrowedFd<'_>, m: &Meta) -> Result<()> {
        let lower_names: Vec<Vec<u8>> = match &self.opts.lower {
            Some(lower) if !lower.branches().is_empty() => lower
                .read_dir(std::path::Path::new(""))?
                .map(|l| {
                    l.into_keys()
                        .map(|n| n.as_encoded_bytes().to_vec())
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        self.res.invalidate();
        let (mine, others): (Vec<Vec<u8>>, Vec<Vec<u8>>) = list_names(root)
            .map_err(|e| self.io("read directory", b"", e))?
            .into_iter()
            .partition(|n| self.written_here(n));
        for n in &others {
            remove_at(root, n).map_err(|e| self.io("remove below an opaque root", n, e))?;
        }
        for n in &mine {
            if is_dir_at(root, n).map_err(|e| self.io("stat", n, e))? == Some(true) {
                self.set_opaque_at(root, n)?;
            }
        }
        for n in lower_names {
            if self.written_here(&n) {
                continue;
            }
            mknodat(root, n.as_slice(), SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| self.io("mknod whiteout", &n, e))?;
            meta::times_at(root, &n, m).map_err(|e| self.io("set times", &n, e))?;
        }
        Ok(())
    }
}

/// Whether `st` (an `fstatat` result) is an overlay whiteout: a 0/0 character device
/// ([`crate::stack::is_overlay_whiteout`] for `std::fs::Metadata`).
pub(crate) fn is_whiteout_stat(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && st.st_rdev == 0
}

/// The names in directory `dir` (which may be an `O_PATH` fd), without `.` and `..`.
fn list_names(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for ent in d.iter() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Removes every child of `dir` (whose cleaned path is `prefix`) not in `written`,
/// descending into written directories, with [`walk_dirs`]: fd-relative, never follows
/// symlinks, one directory fd whatever the depth. A written name that is no longer a
/// directory is left alone.
fn prune(dir: BorrowedFd<'_>, prefix: &[u8], written: &HashSet<Vec<u8>>) -> Result<(), Errno> {
    // `dir` may be an O_PATH fd: reopen it for reading.
    let start = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    walk_dirs(
        start,
        prefix,
        &mut |d, path| prune_one(d, path, written),
        &mut |_, _| Ok(()),
        &mut |_, _| Ok(()),
    )
}

/// Removes the children of `dir` (cleaned path `path`) not in `written`; returns the
/// written subdirectories to descend into.
fn prune_one(
    dir: BorrowedFd<'_>,
    path: &[u8],
    written: &HashSet<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, Errno> {
    let names = list_names(dir)?;
    let mut subdirs = Vec::new();
    let mut full = path.to_vec();
    let base = full.len();
    for n in names {
        full.truncate(base);
        if !full.is_empty() {
            full.push(b'/');
        }
        full.extend_from_slice(&n);
        if written.contains(full.as_slice()) {
            if is_dir_at(dir, &n)? == Some(true) {
                subdirs.push(n);
            }
        } else {
            remove_at(dir, &n)?;
        }
    }
    Ok(subdirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whiteout::{classify, WhiteoutName};

    #[test]
    fn classify_bytes_matches_classify() {
        for n in [
            "file",
            ".whx",
            ".wh.file",
            ".wh..hidden",
            ".wh..wh..opq",
            ".wh..wh.plnk",
            ".wh.",
            ".wh..",
            ".wh...",
        ] {
            let want = match classify(n) {
                WhiteoutName::Plain => Name::Plain,
                WhiteoutName::Whiteout(t) => Name::Whiteout(t.as_bytes()),
                WhiteoutName::Opaque => Name::Opaque,
                WhiteoutName::Meta => Name::Meta,
                WhiteoutName::Invalid => Name::Invalid,
            };
            assert_eq!(classify_bytes(n.as_bytes()), want, "{n}");
        }
        assert_eq!(classify_bytes(b".wh.\xff"), Name::Whiteout(b"\xff"));
    }
}
