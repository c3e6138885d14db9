//! Carries out a [`MountPlan`]: the only place that calls the mount syscalls.
//!
//! - New mount API (kernel >= 6.8): `fsopen("overlay")`, one
//!   `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", dir)` per layer, `upperdir`, `workdir`,
//!   the options, `FSCONFIG_CMD_CREATE`, `fsmount`, `move_mount(MOVE_MOUNT_F_EMPTY_PATH)`.
//!   No length limit; the kernel's error log of the fs context is read back into errors.
//! - Classic mount(2): one option string that must fit one page. The dirs are relative
//!   to home (short links keep it short); the syscall runs on a helper thread that
//!   unshares its filesystem context (`unshare(CLONE_FS)`) and chdirs there, so the
//!   process's working directory never changes.

use std::io;
use std::path::Path;

use driver_core::{DriverError, Result};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags,
    MountAttrFlags, MoveMountFlags,
};

use crate::plan::{MountPlan, VfsFlag};

/// Which mount syscalls carry out a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountApi {
    /// fsopen/fsconfig/fsmount/move_mount with `lowerdir+`.
    New,
    /// mount(2) with a one-page option string.
    Classic,
}

impl MountApi {
    /// For `layerctl info`.
    pub fn describe(self) -> &'static str {
        match self {
            MountApi::New => "new (fsopen/fsconfig lowerdir+)",
            MountApi::Classic => "classic mount(2), one-page options",
        }
    }
}

const FSTYPE: &str = "overlay";

fn mount_err(plan: &MountPlan, source: io::Error) -> DriverError {
    DriverError::Mount {
        target: plan.target.clone(),
        fstype: FSTYPE.into(),
        source,
    }
}

/// Mounts `plan` with `api`.
pub fn mount(plan: &MountPlan, api: MountApi) -> Result<()> {
    match api {
        MountApi::New => mount_new(plan),
        MountApi::Classic => mount_classic(plan),
    }
}

/// Reads what the kernel logged into an fs context (`e overlayfs: ...` lines).
fn fs_log(fd: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match rustix::io::read(fd, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => break,
        }
    }
    out.join("; ")
}

fn with_log(fd: BorrowedFd<'_>, what: &str, e: rustix::io::Errno) -> io::Error {
    let errno = io::Error::from_raw_os_error(e.raw_os_error());
    let log = fs_log(fd);
    if log.is_empty() {
        io::Error::new(errno.kind(), format!("{what}: {errno}"))
    } else {
        io::Error::new(errno.kind(), format!("{what}: {errno} ({log})"))
    }
}

fn split_opt(o: &str) -> (&str, Option<&str>) {
    match o.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (o, None),
    }
}

/// The `fsconfig` string value for directory `key` = `dir`: the path's bytes; for
/// `upperdir` and `workdir` each backslash doubled, because overlayfs unescapes those
/// values (`ovl_mount_dir` -> `ovl_unescape`: a backslash quotes the next byte) and takes
/// `lowerdir+` / `datadir+` verbatim (`ovl_mount_dir_noesc`; fs/overlayfs/params.c,
/// Linux 6.8). Unescaped, a root such as `/srv/a\b` made every mount fail with ENOENT.
fn fsconfig_path_value(key: &str, dir: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dir.as_os_str().as_bytes();
    if !matches!(key, "upperdir" | "workdir") {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    for &b in bytes {
        if b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn mount_new(plan: &MountPlan) -> Result<()> {
    let fs = fsopen(FSTYPE, FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| mount_err(plan, io::Error::from_raw_os_error(e.raw_os_error())))?;
    let fd = fs.as_fd();
    let set = |k: &str, v: &str| {
        fsconfig_set_string(fd, k, v)
            .map_err(|e| mount_err(plan, with_log(fd, &format!("fsconfig {k}={v}"), e)))
    };
    // Directories go as their exact bytes (a root named by non-UTF-8 bytes must not be
    // mangled into U+FFFD), escaped as the kernel parses each key: `fsconfig_path_value`.
    let set_dir = |k: &str, dir: &Path| {
        fsconfig_set_string(fd, k, fsconfig_path_value(k, dir)).map_err(|e| {
            mount_err(
                plan,
                with_log(fd, &format!("fsconfig {k}={}", dir.display()), e),
            )
        })
    };
    set("source", FSTYPE)?;
    for l in &plan.lowerdirs {
        set_dir("lowerdir+", &plan.abs(l))?;
    }
    if let (Some(u), Some(w)) = (&plan.upperdir, &plan.workdir) {
        set_dir("upperdir", &plan.abs(u))?;
        set_dir("workdir", &plan.abs(w))?;
    }
    for o in &plan.options {
        match split_opt(o) {
            (k, Some(v)) => set(k, v)?,
            (k, None) => rustix::mount::fsconfig_set_flag(fd, k)
                .map_err(|e| mount_err(plan, with_log(fd, &format!("fsconfig {k}"), e)))?,
        }
    }
    if let Some(l) = &plan.label {
        set("context", l)?;
    }
    fsconfig_create(fd).map_err(|e| mount_err(plan, with_log(fd, "fsconfig create", e)))?;
    let mut attrs = MountAttrFlags::empty();
    for f in &plan.flags {
        attrs |= match f {
            VfsFlag::ReadOnly => MountAttrFlags::MOUNT_ATTR_RDONLY,
            VfsFlag::NoDev => MountAttrFlags::MOUNT_ATTR_NODEV,
            VfsFlag::NoSuid => MountAttrFlags::MOUNT_ATTR_NOSUID,
            VfsFlag::NoExec => MountAttrFlags::MOUNT_ATTR_NOEXEC,
            VfsFlag::NoAtime => MountAttrFlags::MOUNT_ATTR_NOATIME,
            VfsFlag::NoDirAtime => MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            VfsFlag::RelAtime => MountAttrFlags::MOUNT_ATTR_RELATIME,
        };
    }
    let mnt = fsmount(fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| mount_err(plan, with_log(fd, "fsmount", e)))?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        &plan.target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| mount_err(plan, io::Error::from_raw_os_error(e.raw_os_error())))
}

fn mount_classic(plan: &MountPlan) -> Result<()> {
    use nix::mount::MsFlags;
    plan.check_classic_fits()?;
    let data = plan.classic_data();
    let mut flags = MsFlags::empty();
    for f in &plan.flags {
        flags |= match f {
            VfsFlag::ReadOnly => MsFlags::MS_RDONLY,
            VfsFlag::NoDev => MsFlags::MS_NODEV,
            VfsFlag::NoSuid => MsFlags::MS_NOSUID,
            VfsFlag::NoExec => MsFlags::MS_NOEXEC,
            VfsFlag::NoAtime => MsFlags::MS_NOATIME,
            VfsFlag::NoDirAtime => MsFlags::MS_NODIRATIME,
            VfsFlag::RelAtime => MsFlags::MS_RELATIME,
        };
    }
    let home = plan.home.clone();
    let target = plan.target.clone();
    // The relative dirs in `data` resolve against the caller's working directory. A
    // helper thread with its own fs context (CLONE_FS unshared) chdirs to home, so the
    // process's cwd is untouched.
    let res = std::thread::scope(|s| {
        s.spawn(move || -> nix::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
            nix::unistd::chdir(&home)?;
            nix::mount::mount(
                Some(FSTYPE),
                &target,
                Some(FSTYPE),
                flags,
                Some(data.as_str()),
            )
        })
        .join()
    });
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(mount_err(plan, io::Error::from_raw_os_error(e as i32))),
        Err(_) => Err(mount_err(
            plan,
            io::Error::other("mount helper thread panicked"),
        )),
    }
}

/// Unmounts `target`. EBUSY becomes [`DriverError::Busy`]; "not mounted" is Ok.
pub fn unmount(id: &str, target: &Path) -> Result<()> {
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            tracing::debug!(target = %target.display(), "not mounted");
            Ok(())
        }
        Err(nix::errno::Errno::EBUSY) => Err(DriverError::Busy {
            id: id.to_owned(),
            reason: format!("{} is in use (umount: EBUSY)", target.display()),
        }),
        Err(e) => Err(DriverError::Unmount {
            target: target.to_owned(),
            source: io::Error::from_raw_os_error(e as i32),
        }),
    }
}

/// Whether this kernel's overlay takes `lowerdir+` through the new mount API.
/// `sample_dir` must be an existing directory (the kernel resolves it).
pub fn new_api_works(sample_dir: &Path) -> std::result::Result<(), String> {
    let fs =
        fsopen(FSTYPE, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| format!("fsopen(overlay): {e}"))?;
    fsconfig_set_string(fs.as_fd(), "lowerdir+", sample_dir)
        .map_err(|e| format!("fsconfig lowerdir+: {e}"))?;
    Ok(())
}
