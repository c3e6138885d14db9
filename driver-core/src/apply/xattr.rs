//! Extended attributes from PAX `SCHILY.xattr.*` records.
//!
//! Regular files get them through their open fd (`fsetxattr`); every other kind through
//! `lsetxattr("/proc/self/fd/<parent fd>/<name>")`, which resolves the already-open
//! parent and does not follow the final component, so symlinks get their own xattrs.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use xattr::FileExt;

use crate::fsutil::fd_path;

/// Prefix of the xattrs overlayfs keeps for itself (and obeys in its layers).
const OVERLAY_PRIVATE_PREFIX: &[u8] = b"trusted.overlay.";

/// What overlayfs adds to a copy-up in a container, which an entry with xattrs must
/// leave room for on the backing filesystem: `trusted.overlay.origin` (a 29-byte file
/// handle) on every copied-up node, and `trusted.overlay.impure` (1 byte) on a
/// directory whose children move. Without that room, an image whose file nearly fills
/// the xattr space (ext4: the inode's spare bytes plus one 4 KiB block) imports on
/// every driver, but writing that file or renaming in that directory fails with ENOSPC
/// on overlay2 only (vfs and aufs copy just the image's xattrs). So such an entry is
/// refused on every driver instead. The probes are set and removed at once under
/// names as long as overlay's (`trusted.*`: symlinks and devices take them too).
const HEADROOM_PROBES: [(&str, usize); 2] =
    [("trusted.layerctl.pr1", 29), ("trusted.layerctl.pr2", 1)];

/// Whether the entry still has room for overlay's copy-up xattrs (see
/// [`HEADROOM_PROBES`]; the second, `impure`, only for a directory): `set` then
/// `remove` each probe. A filesystem or caller that cannot set a `trusted.*` xattr at
/// all (unprivileged, no xattr support) has nothing to measure: true.
pub(crate) fn has_headroom(
    dir: bool,
    set: impl Fn(&OsStr, &[u8]) -> io::Result<()>,
    remove: impl Fn(&OsStr) -> io::Result<()>,
) -> io::Result<bool> {
    let probes = &HEADROOM_PROBES[..if dir { 2 } else { 1 }];
    let mut set_ok = 0;
    let mut room = true;
    for (name, len) in probes {
        match set(OsStr::new(name), &[0u8; 32][..*len]) {
            Ok(()) => set_ok += 1,
            Err(e) if is_xattr_space_error(&e) => {
                room = false;
                break;
            }
            Err(_) => break,
        }
    }
    for (name, _) in &probes[..set_ok] {
        remove(OsStr::new(name))?;
    }
    Ok(room)
}

/// ENOSPC or E2BIG from `setxattr`: the inode's xattr space is full (ext4: one block).
pub(crate) fn is_xattr_space_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::E2BIG))
}

/// PAX record key prefix carrying an xattr (`SCHILY.xattr.<name>`).
pub(crate) const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Xattrs of one entry, reused across entries (no allocation for the common
/// no-xattr case).
#[derive(Debug, Default)]
pub(crate) struct Xattrs {
    items: Vec<(Vec<u8>, Vec<u8>)>,
    len: usize,
}

impl Xattrs {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds one attribute; a later record with the same name wins. Overlay's private
    /// `trusted.overlay.*` attributes are dropped on every driver (umoci drops them too):
    /// on overlay2 the kernel would obey them (opaque, redirect, whiteout, metacopy) and
    /// the image would show a different tree there than anywhere else.
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        if name.starts_with(OVERLAY_PRIVATE_PREFIX) {
            tracing::debug!(xattr = %String::from_utf8_lossy(name), "dropping overlay's private xattr from a layer tar");
            return;
        }
        if let Some(i) = self.items[..self.len]
            .iter()
            .position(|(n, _)| n.as_slice() == name)
        {
            self.items[i].1.clear();
            self.items[i].1.extend_from_slice(value);
            return;
        }
        if self.len == self.items.len() {
            self.items.push((Vec::new(), Vec::new()));
        }
        let (n, v) = &mut self.items[self.len];
        n.clear();
        n.extend_from_slice(name);
        v.clear();
        v.extend_from_slice(value);
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.items[..self.len]
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
    }

    /// Sets all on an open regular file. Returns the failing attribute name on error.
    pub(crate) fn set_on_file(&self, file: &File) -> Result<(), (String, io::Error)> {
        for (n, v) in self.iter() {
            file.set_xattr(OsStr::from_bytes(n), v)
                .map_err(|e| (String::from_utf8_lossy(n).into_owned(), e))?;
        }
        Ok(())
    }

    /// After [`Self::set_on_file`]: whether the file keeps room for overlay's copy-up
    /// xattrs ([`has_headroom`]; always true for an entry without xattrs).
    pub(crate) fn headroom_on_file(&self, file: &File) -> io::Result<bool> {
        if self.is_empty() {
            return Ok(true);
        }
        has_headroom(false, |n, v| file.set_xattr(n, v), |n| file.remove_xattr(n))
    }

    /// After [`Self::set_at`] (and any `retain_only_at`): whether `name` in `dir` (or
    /// `dir` itself), a directory when `is_dir`, keeps room for overlay's copy-up
    /// xattrs ([`has_headroom`]; always true for an entry without xattrs).
    pub(crate) fn headroom_at(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
        is_dir: bool,
    ) -> io::Result<bool> {
        if self.is_empty() {
            return Ok(true);
        }
        let path = fd_path(dir, name);
        match name {
            Some(_) => has_headroom(
                is_dir,
                |n, v| xattr::set(&path, n, v),
                |n| xattr::remove(&path, n),
            ),
            None => has_headroom(
                is_dir,
                |n, v| xattr::set_deref(&path, n, v),
                |n| xattr::remove_deref(&path, n),
            ),
        }
    }

    /// Sets all on `name` in `dir` without following a final symlink, or on `dir`
    /// itself when `name` is `None`.
    pub(crate) fn set_at(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
    ) -> Result<(), (String, io::Error)> {
        if self.is_empty() {
            return Ok(());
        }
        let path = fd_path(dir, name);
        for (n, v) in self.iter() {
            let r = match name {
                Some(_) => xattr::set(&path, OsStr::from_bytes(n), v),
                // The fd's own /proc link: followed on purpose, it is our open directory.
                None => xattr::set_deref(&path, OsStr::from_bytes(n), v),
            };
            r.map_err(|e| (String::from_utf8_lossy(n).into_owned(), e))?;
        }
        Ok(())
    }
}

impl Xattrs {
    /// Removes from `name` in `dir` (or `dir` itself when `None`) every xattr this set
    /// does not hold: a directory entry that meets an existing directory (a full-tree
    /// layer's copy, or a layer root that copied its parent's) leaves exactly its own
    /// xattrs, as the same entry does on a new directory. Overlay's private
    /// `trusted.overlay.*` and the host's `security.selinux` label are kept.
    pub(crate) fn retain_only_at(
        &self,
        dir: BorrowedFd<'_>,
        name: Option<&[u8]>,
    ) -> Result<(), (String, io::Error)> {
        let path = fd_path(dir, name);
        let listed = match name {
            Some(_) => xattr::list(&path),
            None => xattr::list_deref(&path),
        };
        let names = match listed {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(()),
            Err(e) => return Err((String::new(), e)),
        };
        for n in names {
            let b = n.as_bytes();
            if b.starts_with(OVERLAY_PRIVATE_PREFIX)
                || b == b"security.selinux"
                || self.iter().any(|(k, _)| k == b)
            {
                continue;
            }
            let r = match name {
                Some(_) => xattr::remove(&path, &n),
                None => xattr::remove_deref(&path, &n),
            };
            match r {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
                Err(e) => return Err((String::from_utf8_lossy(b).into_owned(), e)),
            }
        }
        Ok(())
    }
}

/// Sets one xattr on the directory `dir` itself.
pub(crate) fn set_on_dir_fd(dir: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    // The fd may be O_PATH, so go through its /proc link (followed: it is our own fd).
    xattr::set_deref(fd_path(dir, None), name, value)
}
