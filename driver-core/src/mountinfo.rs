//! Reading the kernel's mount table (`/proc/self/mountinfo`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id (field 1).
    pub id: u32,
    /// Where it is mounted (field 5), unescaped.
    pub mount_point: PathBuf,
    /// Per-mount options (field 6).
    pub mount_options: String,
    /// Filesystem type (after the ` - ` separator).
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options (e.g. `lowerdir=...`).
    pub super_options: String,
}

/// Parses mountinfo text. Malformed lines are skipped (and logged).
pub fn parse(text: &str) -> Vec<MountInfo> {
    parse_bytes(text.as_bytes())
}

/// Parses the mount table as the kernel gives it: bytes. A mount point is any bytes
/// but NUL (`/mnt/caf\xe9`, anyone's mount on the host), so it is kept exactly
/// ([`MountInfo::mount_point`] compares equal to the path a driver mounted at); the
/// other fields are text, non-UTF-8 bytes there replaced. Malformed lines are skipped.
pub fn parse_bytes(text: &[u8]) -> Vec<MountInfo> {
    use std::os::unix::ffi::OsStringExt;
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|raw| {
            let mut m = parse_line(&String::from_utf8_lossy(raw))?;
            // Field 5: no escape sequence contains a space, so the raw split matches.
            let point = raw.split(|&b| b == b' ').nth(4)?;
            m.mount_point = PathBuf::from(std::ffi::OsString::from_vec(unescape_bytes(point)));
            Some(m)
        })
        .collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = match line.split_once(" - ") {
        Some(x) => x,
        None => {
            tracing::debug!(line, "skipping malformed mountinfo line");
            return None;
        }
    };
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.splitn(3, ' ').collect();
    if l.len() < 6 || r.len() < 2 {
        tracing::debug!(line, "skipping malformed mountinfo line");
        return None;
    }
    Some(MountInfo {
        id: l[0].parse().ok()?,
        mount_point: PathBuf::from(unescape(l[4])),
        mount_options: l[5].to_owned(),
        fstype: r[0].to_owned(),
        source: unescape(r[1]),
        super_options: r.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash.
fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s.as_bytes())).into_owned()
}

/// [`unescape`] on bytes.
fn unescape_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

std::thread_local! {
    /// Reads of the table by this thread ([`reads_by_this_thread`]).
    static READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times this thread has read the mount table ([`read`] and the functions on
/// it). Reading it costs in proportion to every mount of the namespace, so tests pin
/// hot paths that must not (overlay2's remove asks [`is_mount_root`] instead).
pub fn reads_by_this_thread() -> u64 {
    READS.with(|r| r.get())
}

/// The current process's mount table.
pub fn read() -> Result<Vec<MountInfo>> {
    READS.with(|r| r.set(r.get() + 1));
    let p = Path::new("/proc/self/mountinfo");
    Ok(parse_bytes(&fs::read(p).ctx("read", p)?))
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at(path: &Path) -> Result<Option<MountInfo>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Whether something is mounted at exactly `path`.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(mount_at(path)?.is_some())
}

/// Whether something is mounted at `path` (symlinks not followed at the last
/// component), asked of the path itself: statx's `STATX_ATTR_MOUNT_ROOT` (Linux >= 5.8).
/// The same answer as [`is_mount_point`] (a mount whose mount point the table lists is
/// the root of that mount), but O(1): reading `/proc/self/mountinfo` costs in proportion
/// to the whole table, and overlay lines list every lower dir (an internal mount of 500
/// layers is ~40 KB). Falls back to the table when the kernel does not report the
/// attribute. A missing path is not mounted.
pub fn is_mount_root(path: &Path) -> Result<bool> {
    match mount_root_state(path)? {
        MountRootState::NotMounted => Ok(false),
        MountRootState::Mounted => Ok(true),
        // A dead FUSE mount: an error, as statx gave it.
        MountRootState::Disconnected => Err(crate::error::DriverError::io(
            "statx",
            path,
            std::io::Error::from_raw_os_error(libc::ENOTCONN),
        )),
    }
}

/// What a path is as a mount point, asked of the path itself ([`mount_root_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountRootState {
    /// Not the root of a mount (or missing).
    NotMounted,
    /// The root of a mount that answered `statx`.
    Mounted,
    /// The root of a mount whose filesystem no longer answers: `statx` of the path failed
    /// with `ENOTCONN` or `ECONNABORTED`, which only a FUSE connection whose server is
    /// gone (or was aborted) gives (fs/fuse/dev.c). A mount point of a live filesystem
    /// never answers so, so this means "mounted, dead".
    Disconnected,
}

/// [`is_mount_root`] that tells a dead FUSE mount apart instead of failing on it: statx
/// of `path` (last component not followed), O(1), no table read. A FUSE mount whose
/// server died may still answer statx from the kernel's attribute cache
/// ([`MountRootState::Mounted`]); callers that must know whether it answers ask a call
/// that always reaches the server (`statfs`).
///
/// Errors: [`crate::DriverError::Io`] naming `statx` and `path` for any other failure.
pub fn mount_root_state(path: &Path) -> Result<MountRootState> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    match statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(if st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
                MountRootState::Mounted
            } else {
                MountRootState::NotMounted
            })
        }
        Ok(_) | Err(rustix::io::Errno::NOSYS) => Ok(if is_mount_point(path)? {
            MountRootState::Mounted
        } else {
            MountRootState::NotMounted
        }),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
            Ok(MountRootState::NotMounted)
        }
        Err(rustix::io::Errno::NOTCONN) | Err(rustix::io::Errno::CONNABORTED) => {
            Ok(MountRootState::Disconnected)
        }
        Err(e) => Err(crate::error::DriverError::io(
            "statx",
            path,
            std::io::Error::from_raw_os_error(e.raw_os_error()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overlay_line_with_escapes() {
        let t = "36 35 98:0 / /var/lib/a\\040b rw,noatime master:1 - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/u\n\
                 garbage line\n";
        let m = parse(t);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, PathBuf::from("/var/lib/a b"));
        assert_eq!(m[0].fstype, "overlay");
        assert_eq!(m[0].source, "overlay");
        assert!(m[0].super_options.contains("lowerdir=l/A:l/B"));
    }

    #[test]
    fn non_utf8_mount_points_are_kept_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let t = b"36 35 98:0 / /mnt/caf\xe9\\040x rw - ext4 /dev/sda1 rw\n\
                  37 35 98:0 / /var/lib/l rw - overlay overlay rw,lowerdir=/a\xff\n";
        let m = parse_bytes(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point.as_os_str().as_bytes(), b"/mnt/caf\xe9 x");
        assert_eq!(m[1].mount_point, PathBuf::from("/var/lib/l"));
        assert_eq!(m[1].fstype, "overlay");
    }

    #[test]
    fn root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_root(Path::new("/")).unwrap());
        assert!(is_mount_root(Path::new("/proc")).unwrap());
    }

    #[test]
    fn mount_root_agrees_with_the_table() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_mount_root(d.path()).unwrap());
        assert!(!is_mount_root(&d.path().join("missing")).unwrap());
        assert_eq!(
            mount_root_state(d.path()).unwrap(),
            MountRootState::NotMounted
        );
        assert_eq!(
            mount_root_state(Path::new("/proc")).unwrap(),
            MountRootState::Mounted
        );
        for m in read().unwrap().iter().take(20) {
            if m.mount_point.is_dir()
                && m.mount_point.canonicalize().ok().as_ref() == Some(&m.mount_point)
            {
                assert!(
                    is_mount_root(&m.mount_point).unwrap(),
                    "{}",
                    m.mount_point.display()
                );
            }
        }
    }
}
