//! Owners, modes and times of applied entries.
//!
//! Order matters: content is written first (a write drops `security.capability`), then
//! chown (which clears setuid/setgid and capabilities), then xattrs, then chmod, then
//! times. Directory modes and times are applied at the end, deepest first, because
//! creating children changes a directory's mtime.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fchmodat, futimens, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::path::{depth, Resolver};

/// Metadata of one entry, from its header and PAX records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
    /// Size of the entry's content (regular files).
    pub size: u64,
}

impl Meta {
    pub(crate) fn perm(&self) -> Mode {
        Mode::from_bits_truncate(self.mode & 0o7777)
    }
}

/// Parses a PAX time (`1234567890.123456789`, possibly negative) into a TimeSpec.
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    let (secs, nanos) = if neg {
        if nanos == 0 {
            (-secs, 0)
        } else {
            (-secs - 1, 1_000_000_000 - nanos)
        }
    } else {
        (secs, nanos)
    };
    Some(TimeSpec::new(secs, nanos))
}

/// chown of an open file.
pub(crate) fn chown_fd(fd: BorrowedFd<'_>, m: &Meta) -> Result<(), Errno> {
    fchown(fd, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
}

/// lchown of `name` in `dir`.
pub(crate) fn chown_at(dir: BorrowedFd<'_>, name: &[u8], m: &Meta) -> Result<(), Errno> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(m.uid)),
        Some(Gid::from_raw(m.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// chmod + times of an open regular file.
pub(crate) fn mode_times_fd(fd: BorrowedFd<'_>, m: &Meta) -> Result<(), Errno> {
    fchmod(fd, m.perm())?;
    futimens(fd, &m.atime, &m.mtime)
}

/// [`mode_times_fd`], without the chmod when `chmod` is false (a file created with
/// its final mode, see `entry.rs`, `Applier::create_mode`).
pub(crate) fn finish_fd(fd: BorrowedFd<'_>, m: &Meta, chmod: bool) -> Result<(), Errno> {
    if chmod {
        fchmod(fd, m.perm())?;
    }
    futimens(fd, &m.atime, &m.mtime)
}

/// chmod of a device or FIFO we just created in `dir` (never a symlink: we made it).
pub(crate) fn chmod_node_at(dir: BorrowedFd<'_>, name: &[u8], m: &Meta) -> Result<(), Errno> {
    fchmodat(dir, name, m.perm(), FchmodatFlags::FollowSymlink)
}

/// Times of `name` in `dir`, not following a final symlink.
pub(crate) fn times_at(dir: BorrowedFd<'_>, name: &[u8], m: &Meta) -> Result<(), Errno> {
    utimensat(
        dir,
        name,
        &m.atime,
        &m.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
}

/// A directory whose mode and times are applied once the whole tar is in.
#[derive(Debug)]
pub(crate) struct DeferredDir {
    /// Cleaned path relative to the root ("" for the root itself).
    pub path: Vec<u8>,
    pub meta: Meta,
}

/// Applies deferred directory modes and times (only times when `times_only`), deepest
/// first (a later entry for the same path wins). A directory that is gone or was
/// replaced by a non-directory is skipped. Returns the path and errno of the first
/// failure.
pub(crate) fn apply_deferred(
    res: &mut Resolver,
    mut dirs: Vec<DeferredDir>,
    times_only: bool,
) -> Result<(), (Vec<u8>, Errno)> {
    dirs.sort_by_key(|d| std::cmp::Reverse(depth(&d.path)));
    for d in &dirs {
        let fd = match res.open_dir_nofollow(&d.path) {
            Ok(Some(fd)) => fd,
            Ok(None) | Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => continue,
            Err(e) => return Err((d.path.clone(), e)),
        };
        let r = if times_only {
            futimens(fd.as_fd(), &d.meta.atime, &d.meta.mtime)
        } else {
            mode_times_fd(fd.as_fd(), &d.meta)
        };
        r.map_err(|e| (d.path.clone(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
        assert_eq!(t("1234567890"), Some((1234567890, 0)));
        assert_eq!(t("1234567890.5"), Some((1234567890, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("0."), Some((0, 0)));
        assert_eq!(t(""), None);
        assert_eq!(t("abc"), None);
        assert_eq!(t("1.2x"), None);
    }
}
