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
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmodat, makedev, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, symlinkat, Gid, Uid};

use crate::changes::read_xattrs;
use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::fd_path;

/// Prefix of the temp name a regular file is copied up under (`.wh..wh.cpup.<pid>.<n>`,
/// `<pid>` the copying process): AUFS metadata, hidden by the union. A process killed
/// mid copy-up leaves one behind; [`dead_copyup_temps`] finds them.
pub const COPYUP_TEMP_PREFIX: &str = ".wh..wh.cpup.";

/// The pid of the process that made the copy-up temp `name`
/// (`.wh..wh.cpup.<pid>.<n>`); `None` for any other name.
pub fn copyup_temp_pid(name: &OsStr) -> Option<u32> {
    let rest = name
        .as_bytes()
        .strip_prefix(COPYUP_TEMP_PREFIX.as_bytes())?;
    let (pid, n) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Copy-up temps ([`COPYUP_TEMP_PREFIX`]) anywhere below the branch directory `root`
/// whose process is gone (no `/proc/<pid>`, or a zombie): left by a copy-up killed mid-way, safe to
/// remove. A temp of a live process is a copy-up in progress and is not listed (a pid
/// reused since can only hide a leftover, never expose a live copy-up). Walks the whole
/// tree without following symlinks or crossing into other filesystems; sorted.
///
/// Errors: [`DriverError::Io`] naming a directory that cannot be read (`root` missing
/// is no error: nothing found).
pub fn dead_copyup_temps(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for e in walkdir::WalkDir::new(root).same_file_system(true) {
        let e = e.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            DriverError::io("walk branch for copy-up temps", &path, e.into())
        })?;
        let Some(pid) = copyup_temp_pid(e.file_name()) else {
            continue;
        };
        if !e.file_type().is_file() {
            continue;
        }
        if !process_running(pid) {
            out.push(e.into_path());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `pid` is a running process: it exists and is not a zombie (a killed server
/// not yet reaped copies nothing up any more).
fn process_running(pid: u32) -> bool {
    if !crate::fsutil::pid_alive(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

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
            "{COPYUP_TEMP_PREFIX}{}.{}",
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
    // Everything below goes through the two descriptors (no path walks): one
    // `flistxattr` when the source has no xattrs, `fchown`/`fchmod`/`futimens`, and a
    // dense file's data in one `copy_file_range`.
    let fd = openat(
        dst_dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| DriverError::errno("create copy-up", dst, e))?;
    let to = File::from(fd);
    if meta.blocks().saturating_mul(512) >= meta.len() {
        // Every byte is allocated: no holes to keep.
        crate::fsutil::copy_dense_file_data(&from, &to, meta.len()).ctx("copy up", dst)?;
    } else {
        crate::fsutil::copy_file_data(&from, &to, meta.len()).ctx("copy up", dst)?;
    }
    if preserve_owners {
        nix::unistd::fchown(
            to.as_fd(),
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
        )
        .map_err(|e| DriverError::errno("chown", dst, e))?;
    }
    copy_xattrs_fd(&from, src, &to, dst)?;
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

/// [`copy_xattrs`] between two open files (`src` and `dst` name them in errors): one
/// `flistxattr` when the source has none, no path lookups.
fn copy_xattrs_fd(from: &File, src: &Path, to: &File, dst: &Path) -> Result<()> {
    let mut names = vec![0u8; 256];
    let n = loop {
        match rustix::fs::flistxattr(from, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::flistxattr(from, &mut [0u8; 0][..])
                    .map_err(|e| DriverError::io("list xattrs", src, e.into()))?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::NOSYS) => return Ok(()),
            Err(e) => return Err(DriverError::io("list xattrs", src, e.into())),
        }
    };
    let mut value = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|b| !b.is_empty()) {
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        value.resize(256, 0);
        let len = loop {
            match rustix::fs::fgetxattr(from, name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::fgetxattr(from, name, &mut [0u8; 0][..])
                        .map_err(|e| DriverError::io("get xattr", src, e.into()))?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                // Removed between list and get: simply gone.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(DriverError::io("get xattr", src, e.into())),
            }
        };
        let Some(len) = len else { continue };
        rustix::fs::fsetxattr(to, name, &value[..len], rustix::fs::XattrFlags::empty()).map_err(
            |e| {
                DriverError::io(
                    "set xattr",
                    dst,
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("{}: {e}", name.to_string_lossy()),
                    ),
                )
            },
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_names_carry_the_pid() {
        assert!(COPYUP_TEMP_PREFIX.starts_with(crate::whiteout::WH_META_PREFIX));
        assert_eq!(copyup_temp_pid(OsStr::new(".wh..wh.cpup.123.7")), Some(123));
        for other in [
            ".wh..wh.cpup.123",
            ".wh..wh.cpup.x.1",
            ".wh..wh.plnk",
            "cpup.1.2",
        ] {
            assert_eq!(copyup_temp_pid(OsStr::new(other)), None, "{other}");
        }
    }

    /// A pid that was used and is gone (a reaped child).
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!crate::fsutil::pid_alive(pid));
        pid
    }

    #[test]
    fn dead_temps_are_found_live_ones_are_not() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        let dead = dead_pid();
        let gone = deep.join(format!("{COPYUP_TEMP_PREFIX}{dead}.0"));
        let top = t.path().join(format!("{COPYUP_TEMP_PREFIX}{dead}.9"));
        let live = deep.join(format!("{COPYUP_TEMP_PREFIX}{}.1", std::process::id()));
        for p in [&gone, &top, &live] {
            std::fs::write(p, b"partial").unwrap();
        }
        std::fs::write(deep.join("plain"), b"x").unwrap();
        let mut want = vec![gone, top];
        want.sort();
        assert_eq!(dead_copyup_temps(t.path()).unwrap(), want);
        assert!(dead_copyup_temps(&t.path().join("missing"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn copy_up_of_a_file_keeps_data_xattrs_mode_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        std::fs::create_dir_all(&lower).unwrap();
        std::fs::create_dir_all(&upper).unwrap();
        /// (name, content, one xattr)
        type Case<'a> = (&'a str, &'a [u8], Option<(&'a str, &'a [u8])>);
        let cases: [Case<'_>; 3] = [
            ("empty", b"", None),
            ("dense", b"hello world", Some(("user.k", b"v"))),
            ("big", &[7u8; 70_000], Some(("user.long", &[1u8; 3000]))),
        ];
        let dir =
            open_dir_path(File::open(t.path()).unwrap().as_fd(), OsStr::new("upper")).unwrap();
        for (name, data, xattr) in cases {
            let src = lower.join(name);
            std::fs::write(&src, data).unwrap();
            std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
            if let Some((k, v)) = xattr {
                xattr::set(&src, k, v).unwrap();
            }
            let meta = std::fs::symlink_metadata(&src).unwrap();
            copy_up_at(&src, &meta, dir.as_fd(), OsStr::new(name), &upper, false).unwrap();
            let dst = upper.join(name);
            assert_eq!(std::fs::read(&dst).unwrap(), data, "{name}");
            let m = std::fs::symlink_metadata(&dst).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o751, "{name}");
            assert_eq!(m.mtime_nsec(), meta.mtime_nsec(), "{name}");
            let got = crate::changes::read_xattrs(&dst).unwrap();
            let want: Vec<(std::ffi::OsString, Vec<u8>)> = xattr
                .iter()
                .map(|(k, v)| (OsStr::new(k).to_owned(), v.to_vec()))
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let names: Vec<_> = std::fs::read_dir(&upper)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temp left: {names:?}");
    }
}
