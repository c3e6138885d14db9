//! mount/unmount with cross-process reference counts (driver_core::refcount), the lock
//! held across the syscall; "is it mounted" always comes from /proc/self/mountinfo.

use std::fs;
use std::path::PathBuf;

use driver_core::error::{IoContext, Result};
use driver_core::mountinfo::is_mount_point;
use driver_core::{LayerId, MountOpts};

use crate::plan::{plan, StackInfo};
use crate::{mounter, Overlay2Driver};

pub(crate) fn mount(d: &Overlay2Driver, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
    d.check_exists(id)?;
    let l = &d.layout;
    let lowers = l.read_lowers(id)?;
    let link = l.read_link(id)?;
    let stack = StackInfo {
        id,
        link: &link,
        lowers: &lowers,
        read_write: d.is_read_write(id),
    };
    let Some(plan) = plan(l, stack, &d.opts, opts)? else {
        // No ancestors: diff/ is the whole root filesystem. Count anyway.
        let g = d.refs.lock()?;
        let has = g.dir().join(id.as_str()).exists();
        let n = g.get(id, has)?;
        g.set_nosync(id, n + 1)?;
        return Ok(l.diff(id));
    };
    let g = d.refs.lock()?;
    let mounted = is_mount_point(&plan.target)?;
    let n = g.get(id, mounted)?;
    if n > 0 {
        g.set_nosync(id, n + 1)?;
        tracing::debug!(%id, count = n + 1, "already mounted");
        return Ok(plan.target);
    }
    if !plan.target.is_dir() {
        fs::create_dir_all(&plan.target).ctx("create directory", &plan.target)?;
    }
    if let Some(w) = &plan.workdir {
        // A `volatile` mount leaves this behind and the kernel refuses to reuse the
        // workdir until it is gone (what podman does too).
        let v = plan.abs(w).join("work/incompat/volatile");
        if v.exists() {
            fs::remove_dir_all(&v).ctx("remove volatile marker", &v)?;
        }
    }
    mounter::mount(&plan, d.api)?;
    if let Err(e) = g.set_nosync(id, 1) {
        if let Err(ue) = mounter::unmount(id.as_str(), &plan.target) {
            tracing::error!(%id, error = %ue, "unmount after failing to record the mount");
        }
        return Err(e);
    }
    tracing::debug!(%id, lowers = plan.lowerdirs.len(), "mounted");
    Ok(plan.target)
}

pub(crate) fn unmount(d: &Overlay2Driver, id: &LayerId) -> Result<()> {
    d.check_exists(id)?;
    let l = &d.layout;
    let merged = l.merged(id);
    let g = d.refs.lock()?;
    let base = l.read_lowers(id)?.is_empty();
    let mounted = if base {
        g.dir().join(id.as_str()).exists()
    } else {
        is_mount_point(&merged)?
    };
    let n = g.get(id, mounted)?;
    match n {
        0 => {
            tracing::debug!(%id, "unmount of a layer that is not mounted");
            g.set(id, 0)
        }
        1 => {
            if !base {
                mounter::unmount(id.as_str(), &merged)?;
            }
            g.set(id, 0)
        }
        n => g.set_nosync(id, n - 1),
    }
}

pub(crate) fn mount_count(d: &Overlay2Driver, id: &LayerId) -> Result<u32> {
    d.check_exists(id)?;
    let l = &d.layout;
    let g = d.refs.lock()?;
    let mounted = if l.lower_file(id).exists() {
        is_mount_point(&l.merged(id))?
    } else {
        g.dir().join(id.as_str()).exists()
    };
    g.get(id, mounted)
}
