//! The kernel aufs backend: probe and mount plan.
//!
//! aufs was never merged into mainline Linux; some distribution kernels (Ubuntu up to
//! 20.04, Debian's `aufs-dkms`) carry it. Where `/proc/filesystems` lists `aufs`, a
//! container's stack is mounted the way Docker's aufs driver did
//! (`daemon/graphdriver/aufs/aufs.go`, `aufsMount`):
//!
//! ```text
//! mount("none", <mnt>, "aufs", 0, "br:<rw>=rw:<ro1>=ro+wh:...,dio,xino=/dev/shm/aufs.xino")
//! mount("none", <mnt>, "aufs", MS_REMOUNT, "append:<roN>=ro+wh")   one per branch that
//!                                                                  did not fit the page
//! ```
//!
//! mount(2) copies at most one page of option data, so the first call carries as many
//! branches as fit in `PAGE_SIZE - 54 - len(label)` bytes (Docker's arithmetic: room for
//! the trailing options) and every other branch is added by a remount with `append:`.
//! The plan is plain data ([`KernelMountPlan`]) so it is tested without root and
//! without aufs; [`execute`] carries it out.

use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Branches a kernel aufs mount can hold: aufs' default `CONFIG_AUFS_BRANCH_MAX_127`.
pub const KERNEL_MAX_BRANCHES: usize = 127;

/// The page size mount(2) copies option data into (x86-64, arm64 with 4 KiB pages).
pub const PAGE_SIZE: usize = 4096;

/// Bytes Docker keeps free in the first page for the trailing options (`,dio,xino=...`).
const TRAILER_ROOM: usize = 54;

/// Options after the branch list, as Docker passed them.
pub const TRAILING_OPTIONS: &str = "dio,xino=/dev/shm/aufs.xino";

/// Whether `/proc/filesystems` text lists `aufs`.
pub fn filesystems_lists_aufs(text: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().last() == Some("aufs"))
}

/// Reads `/proc/filesystems`: `Ok(())` when the kernel has aufs, else `NotSupported`
/// with the reason.
pub fn probe_kernel() -> Result<()> {
    let p = Path::new("/proc/filesystems");
    let text = std::fs::read_to_string(p).map_err(|e| DriverError::io("read", p, e))?;
    if filesystems_lists_aufs(&text) {
        Ok(())
    } else {
        Err(DriverError::NotSupported {
            driver: "aufs (kernel)".into(),
            reason: "/proc/filesystems does not list aufs (not in mainline Linux)".into(),
        })
    }
}

/// A kernel aufs mount as plain data: the first mount(2) and the remounts that append
/// the branches that did not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelMountPlan {
    /// The mount point.
    pub target: PathBuf,
    /// Data of the first mount: `br:<rw>=rw:<ro>=ro+wh...,<options>` (at most one page).
    pub data: String,
    /// Data of each `MS_REMOUNT`, in order: `append:<ro>=ro+wh`.
    pub appends: Vec<String>,
}

/// Characters that would end a branch path inside aufs' option syntax.
fn check_branch(p: &Path) -> Result<&str> {
    let s = p.to_str().ok_or_else(|| DriverError::InvalidOption {
        key: "branch".into(),
        reason: format!("{} is not UTF-8; aufs mount data is text", p.display()),
    })?;
    if let Some(c) = s.chars().find(|c| matches!(c, ':' | ',' | '=' | '\n')) {
        return Err(DriverError::InvalidOption {
            key: "branch".into(),
            reason: format!("{s:?} holds {c:?}, which aufs' br: syntax cannot carry"),
        });
    }
    Ok(s)
}

/// Plans the mount of `rw` (writable branch) over `ro` (read-only branches, nearest
/// first) at `target`, with an optional SELinux `mount_label`.
///
/// Errors: [`DriverError::TooDeep`] past [`KERNEL_MAX_BRANCHES`];
/// [`DriverError::InvalidOption`] for a branch path holding `:`, `,`, `=` or a newline,
/// or one so long that a single branch does not fit a page.
pub fn plan(
    target: &Path,
    rw: &Path,
    ro: &[PathBuf],
    mount_label: Option<&str>,
) -> Result<KernelMountPlan> {
    if ro.len() + 1 > KERNEL_MAX_BRANCHES {
        return Err(DriverError::TooDeep {
            driver: "aufs (kernel)".into(),
            depth: ro.len() + 1,
            limit: KERNEL_MAX_BRANCHES,
        });
    }
    let label = mount_label
        .map(|l| format!(",context=\"{l}\""))
        .unwrap_or_default();
    let room = PAGE_SIZE
        .checked_sub(TRAILER_ROOM + label.len())
        .ok_or_else(|| DriverError::InvalidOption {
            key: "mount_label".into(),
            reason: "longer than a page".into(),
        })?;
    let mut data = format!("br:{}=rw", check_branch(rw)?);
    if data.len() > room {
        return Err(DriverError::InvalidOption {
            key: "branch".into(),
            reason: format!("{} alone does not fit one page of mount data", rw.display()),
        });
    }
    let mut appends = Vec::new();
    for b in ro {
        let part = format!(":{}=ro+wh", check_branch(b)?);
        if appends.is_empty() && data.len() + part.len() <= room {
            data.push_str(&part);
        } else {
            let a = format!("append{part}{label}");
            if a.len() > PAGE_SIZE - 1 {
                return Err(DriverError::InvalidOption {
                    key: "branch".into(),
                    reason: format!("{} does not fit one page of mount data", b.display()),
                });
            }
            appends.push(a);
        }
    }
    data.push(',');
    data.push_str(TRAILING_OPTIONS);
    data.push_str(&label);
    Ok(KernelMountPlan {
        target: target.to_path_buf(),
        data,
        appends,
    })
}

/// Carries out a plan: the first mount, then each append. On a failed append the
/// half-built mount is unmounted again.
///
/// Errors: [`DriverError::Mount`] naming the target (fstype `aufs`).
pub fn execute(p: &KernelMountPlan) -> Result<()> {
    let err = |e: nix::errno::Errno| DriverError::Mount {
        target: p.target.clone(),
        fstype: "aufs".into(),
        source: std::io::Error::from_raw_os_error(e as i32),
    };
    mount(
        Some("none"),
        &p.target,
        Some("aufs"),
        MsFlags::empty(),
        Some(p.data.as_str()),
    )
    .map_err(err)?;
    for a in &p.appends {
        if let Err(e) = mount(
            Some("none"),
            &p.target,
            Some("aufs"),
            MsFlags::MS_REMOUNT,
            Some(a.as_str()),
        ) {
            if let Err(ue) = umount2(&p.target, MntFlags::empty()) {
                tracing::warn!(target = %p.target.display(), error = %ue, "unmounting half-built aufs mount");
            }
            return Err(err(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branches(n: usize, len: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let name = format!("{i:0width$}", width = len);
                PathBuf::from(format!("/var/lib/layerctl/aufs/diff/{name}"))
            })
            .collect()
    }

    #[test]
    fn proc_filesystems() {
        assert!(filesystems_lists_aufs(
            "nodev\tsysfs\nnodev\taufs\n\text4\n"
        ));
        assert!(!filesystems_lists_aufs(
            "nodev\tsysfs\n\text4\nnodev\tfuse\n"
        ));
        assert!(!filesystems_lists_aufs("nodev\taufsx\n"));
    }

    #[test]
    fn short_stack_fits_one_mount() {
        let ro = branches(3, 8);
        let p = plan(Path::new("/m"), Path::new("/rw"), &ro, None).unwrap();
        assert_eq!(
            p.data,
            format!(
                "br:/rw=rw:{}=ro+wh:{}=ro+wh:{}=ro+wh,{TRAILING_OPTIONS}",
                ro[0].display(),
                ro[1].display(),
                ro[2].display()
            )
        );
        assert!(p.appends.is_empty());
        assert_eq!(p.target, Path::new("/m"));
    }

    #[test]
    fn long_stack_appends_the_rest_in_order() {
        // 126 read-only branches of ~100 bytes: far more than a page.
        let ro = branches(126, 64);
        let p = plan(
            Path::new("/m"),
            Path::new("/rw"),
            &ro,
            Some("system_u:object_r:x:s0"),
        )
        .unwrap();
        assert!(
            p.data.len() < PAGE_SIZE,
            "first page {} bytes",
            p.data.len()
        );
        assert!(!p.appends.is_empty());
        let in_first = p.data.matches("=ro+wh").count();
        assert_eq!(in_first + p.appends.len(), 126);
        // Order is kept: the first append is the branch after the last one in `data`.
        assert!(p.appends[0].starts_with(&format!("append:{}=ro+wh", ro[in_first].display())));
        assert!(p
            .appends
            .last()
            .unwrap()
            .contains(&ro[125].display().to_string()));
        assert!(p.data.ends_with(",context=\"system_u:object_r:x:s0\""));
        assert!(p
            .appends
            .iter()
            .all(|a| a.ends_with("\"system_u:object_r:x:s0\"")));
        // Branches in `data`, in order.
        let listed: Vec<&str> = p.data["br:".len()..]
            .split(',')
            .next()
            .unwrap()
            .split(':')
            .collect();
        assert_eq!(listed[0], "/rw=rw");
        for (i, l) in listed[1..].iter().enumerate() {
            assert_eq!(*l, format!("{}=ro+wh", ro[i].display()));
        }
    }

    #[test]
    fn depth_limit() {
        let ro = branches(KERNEL_MAX_BRANCHES, 4);
        assert!(matches!(
            plan(Path::new("/m"), Path::new("/rw"), &ro, None),
            Err(DriverError::TooDeep {
                limit: KERNEL_MAX_BRANCHES,
                ..
            })
        ));
        let ro = branches(KERNEL_MAX_BRANCHES - 1, 4);
        assert!(plan(Path::new("/m"), Path::new("/rw"), &ro, None).is_ok());
    }

    #[test]
    fn odd_paths() {
        for bad in ["/a:b", "/a,b", "/a=b", "/a\nb"] {
            let r = plan(Path::new("/m"), Path::new(bad), &[], None);
            assert!(
                matches!(r, Err(DriverError::InvalidOption { .. })),
                "{bad:?}"
            );
            let r = plan(
                Path::new("/m"),
                Path::new("/rw"),
                &[PathBuf::from(bad)],
                None,
            );
            assert!(
                matches!(r, Err(DriverError::InvalidOption { .. })),
                "{bad:?}"
            );
        }
        // Spaces, quotes and non-ASCII UTF-8 pass through unchanged.
        let ok = PathBuf::from("/srv/my layers/\u{e9}t\u{e9}'s");
        let p = plan(Path::new("/m"), &ok, std::slice::from_ref(&ok), None).unwrap();
        assert!(p.data.starts_with("br:/srv/my layers/\u{e9}t\u{e9}'s=rw:"));
        // One branch longer than a page cannot be mounted at all.
        let huge = PathBuf::from(format!("/{}", "x".repeat(PAGE_SIZE)));
        assert!(plan(Path::new("/m"), &huge, &[], None).is_err());
        assert!(plan(Path::new("/m"), Path::new("/rw"), &[huge], None).is_err());
    }
}
