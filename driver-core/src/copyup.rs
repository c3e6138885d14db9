//! Copy-up: making a private copy of a lower branch's entry in the writable branch
//! before it is changed or linked to, as overlayfs (`copy_up.c`) and aufs (`cpup.c`)
//! do: content, then owner, then xattrs (except the union's own `trusted.overlay.*`),
//! then mode (chown clears setuid/setgid), then times.
//!
//! The destination is named relative to an open directory fd and created exclusively
//! (`O_EXCL`, `mkdirat`, `symlinkat`, `mknodat`), never through a symlink. A regular
//! file is written complete under a temp name (`.wh..wh.cpup.<pid>.<n>`, AUFS metadata
//! that unions hide and the exporter skips) and renamed into place (`RENAME_NOREPLACE`),
//! so a copy-up cut short never shows a partial file over the lower one. Directories are
//! copied without their children (the union merges them). Holes of sparse files are
//! kept ([`crate::fsutil::copy_file_data`]), as the kernel's own copy-up keeps them.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmodat, makedev, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, Gid, Uid};

use crate::changes::read_xattrs;
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::fd_path;
use crate::whiteout::WH_META_PREFIX;

/// Prefix of the xattrs overlayfs keeps for itself; never copied.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Copies the entry `src` (with `lstat` metadata `meta`) to `name` in the directory
/// `dst_dir`: regular files with their content, symlinks with their target, devices,
/// FIFOs and sockets as nodes, directories empty. Owner (when `preserve_owners`),
/// xattrs, mode and times follow.
///
/// Errors: [`DriverError::Io`] naming `src` or the destination (`dst_label/name`) for a
/// failed call; `EEXIST` when `name` exists. A failure may leave a partial destination,
/// which the caller removes or discards with its layer.
pub fn copy_up_at(
    src: &Path,
    meta: &Metadata,
    dst_dir: BorrowedFd<'_>,
    name: &OsStr,
    dst_label: &Path,
    preserve_owners: bool,
) -> Result<()> {
    let dst = dst_label.join(name);
    let ft = meta.file_type();
    let perm = Mode::from_bits_truncate(meta.mode() & 0o7777);
    if ft.is_file() {
        // Copied under a temp name and renamed into place once complete (as overlayfs
        // copies up in its work dir), so a copy-up cut short (server killed, crash)
        // never leaves a partial file hiding the lower one. The temp name is AUFS
        // metadata (`.wh..wh.*`): hidden by the union, skipped by the exporter.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = std::ffi::OsString::from(format!(
            "{WH_META_PREFIX}cpup.{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let r = copy_file_at(src, meta, dst_dir, &tmp, &dst, preserve_owners).and_then(|()| {
            rustix::fs::renameat_with(
                dst_dir,
                tmp.as_os_str(),
                dst_dir,
                name,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| DriverError::io("rename copy-up into place", &dst, e.into()))
        });
        if r.is_err() {
            let _ = nix::unistd::unlinkat(
                dst_dir,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        return r;
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(src).ctx("read link", src)?;
        symlinkat(target.as_os_str(), dst_dir, name)
            .map_err(|e| DriverError::errno("symlink", &dst, e))?;
    } else if ft.is_dir() {
        mkdirat(dst_dir, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| DriverError::errno("mkdir", &dst, e))?;
    } else {
        let Some(kind) = node_kind(&ft) else {
            return Err(DriverError::io(
                "copy up",
                src,
                io::Error::new(io::ErrorKind::Unsupported, "unknown file type"),
            ));
        };
        let rdev = meta.rdev();
        let dev = makedev(libc::major(rdev).into(), libc::minor(rdev).into());
        mknodat(dst_dir, name, kind, Mode::from_bits_truncate(0o600), dev)
            .map_err(|e| DriverError::errno("mknod", &dst, e))?;
    }
    if preserve_owners {
        fchownat(
            dst_dir,
            name,
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| DriverError::errno("chown", &dst, e))?;
    }
    copy_xattrs(src, &fd_path(dst_dir, Some(name.as_bytes())), &dst)?;
    if !ft.is_symlink() {
        // Just created by us: not a symlink, following is harmless.
        fchmodat(dst_dir, name, perm, FchmodatFlags::FollowSymlink)
            .map_err(|e| DriverError::errno("chmod", &dst, e))?;
    }
    utimensat(
        dst_dir,
        name,
        &atime(meta),
        &mtime(meta),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| DriverError::errno("set times", &dst, e))
}

/// The regular file `src` copied to the new name `name` in `dst_dir` (`dst` names the
/// final destination in errors): content with its holes, owner, xattrs, mode, times.
fn copy_file_at(
    src: &Path,
    meta: &Metadata,
    dst_dir: BorrowedFd<'_>,
    name: &OsStr,
    dst: &Path,
    preserve_owners: bool,
) -> Result<()> {
    let from = File::open(src).ctx("open copy-up source", src)?;
    let fd = openat(
        dst_dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| DriverError::errno("create copy-up", dst, e))?;
    let to = File::from(fd);
    crate::fsutil::copy_file_data(&from, &to, meta.len()).ctx("copy up", dst)?;
    if preserve_owners {
        nix::unistd::fchown(
            to.as_fd(),
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
        )
        .map_err(|e| DriverError::errno("chown", dst, e))?;
    }
    copy_xattrs(src, &fd_path(dst_dir, Some(name.as_bytes())), dst)?;
    nix::sys::stat::fchmod(to.as_fd(), Mode::from_bits_truncate(meta.mode() & 0o7777))
        .map_err(|e| DriverError::errno("chmod", dst, e))?;
    nix::sys::stat::futimens(to.as_fd(), &atime(meta), &mtime(meta))
        .map_err(|e| DriverError::errno("set times", dst, e))
}

/// Gives the existing directory `dst` the owner (when this process may chown), xattrs
/// except `trusted.overlay.*`, mode and times of the directory `src`: a new layer's root
/// copying the root of the layer below it.
///
/// Errors: [`DriverError::Io`] naming `src` or `dst`.
pub fn copy_dir_attrs(src: &Path, dst: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(src).ctx("stat", src)?;
    match nix::unistd::chown(
        dst,
        Some(Uid::from_raw(m.uid())),
        Some(Gid::from_raw(m.gid())),
    ) {
        Ok(()) => {}
        // Unprivileged: owners cannot be kept, as everywhere else then.
        Err(nix::errno::Errno::EPERM) => {
            tracing::debug!(path = %dst.display(), "cannot chown: owner not copied")
        }
        Err(e) => return Err(DriverError::errno("chown", dst, e)),
    }
    copy_xattrs(src, dst, dst)?;
    // `dst` is the caller's own new directory: following is harmless.
    nix::sys::stat::fchmodat(
        AT_FDCWD,
        dst,
        Mode::from_bits_truncate(m.mode() & 0o7777),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| DriverError::errno("chmod", dst, e))?;
    utimensat(
        AT_FDCWD,
        dst,
        &atime(&m),
        &mtime(&m),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| DriverError::errno("set times", dst, e))
}

/// The `mknod` kind of a device, FIFO or socket; `None` for anything else.
pub fn node_kind(ft: &std::fs::FileType) -> Option<SFlag> {
    if ft.is_char_device() {
        Some(SFlag::S_IFCHR)
    } else if ft.is_block_device() {
        Some(SFlag::S_IFBLK)
    } else if ft.is_fifo() {
        Some(SFlag::S_IFIFO)
    } else if ft.is_socket() {
        Some(SFlag::S_IFSOCK)
    } else {
        None
    }
}

/// Copies every xattr of `src` except `trusted.overlay.*` to `dst` (not following a
/// final symlink on either side).
pub fn copy_xattrs(src: &Path, dst: &Path, dst_label: &Path) -> Result<()> {
    for (n, v) in read_xattrs(src)? {
        if n.as_bytes().starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        xattr::set(dst, &n, &v).map_err(|e| {
            DriverError::io(
                "set xattr",
                dst_label,
                io::Error::new(e.kind(), format!("{}: {e}", n.to_string_lossy())),
            )
        })?;
    }
    Ok(())
}

/// Opens `name` in `dir` as an `O_PATH` directory fd without following it.
pub(crate) fn open_dir_path(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name.as_bytes(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn atime(m: &Metadata) -> TimeSpec {
    TimeSpec::new(m.atime(), m.atime_nsec())
}

fn mtime(m: &Metadata) -> TimeSpec {
    TimeSpec::new(m.mtime(), m.mtime_nsec())
}
