//! mount/unmount with cross-process reference counts (driver_core::refcount), the lock
//! held across the syscalls. Whether a count is live is one [`Liveness`] per layer
//! ([`liveness`]): the kernel's mount table for overlays, the boot id for base layers
//! (which are never mounted). Deep stacks take their internal mounts
//! ([`crate::internal`]) before the outer mount and give them back after it is gone,
//! also when anything in between fails.

use std::fs;
use std::path::{Path, PathBuf};

use driver_core::error::{IoContext, Result};
use driver_core::refcount::{Liveness, RefsGuard};
use driver_core::{LayerId, MountOpts};

use crate::internal;
use crate::plan::{plan, MountPlan, StackInfo};
use crate::{mounter, Overlay2Driver};

/// What says whether layer `id`'s count is live: a layer with ancestors is an overlay
/// at `merged`; a base layer is never mounted (its `diff/` is returned), so its count
/// holds for this boot.
pub(crate) fn liveness<'a>(d: &Overlay2Driver, id: &LayerId, merged: &'a Path) -> Liveness<'a> {
    if d.layout.lower_file(id).exists() {
        Liveness::KernelMount(merged)
    } else {
        Liveness::ThisBoot
    }
}

/// The mount plan of `id` with default mount options (what unmount needs to find the
/// internal mounts again), or `None` for a base layer.
pub(crate) fn plan_of(
    d: &Overlay2Driver,
    id: &LayerId,
    opts: &MountOpts,
) -> Result<Option<MountPlan>> {
    let l = &d.layout;
    let lowers = l.read_lowers(id)?;
    let link = l.read_link(id)?;
    let resolve = |s: &str| l.id_of_link(s);
    let stack = StackInfo {
        id,
        link: &link,
        lowers: &lowers,
        read_write: d.is_read_write(id),
        resolve: &resolve,
    };
    plan(l, stack, &d.opts, opts)
}

pub(crate) fn mount(d: &Overlay2Driver, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
    d.check_exists(id)?;
    let l = &d.layout;
    let Some(plan) = plan_of(d, id, opts)? else {
        // No ancestors: diff/ is the whole root filesystem. Count anyway.
        let g = d.refs.lock()?;
        let n = g.get(id, Liveness::ThisBoot)?;
        g.set_nosync(id, n + 1)?;
        return Ok(l.diff(id));
    };
    let g = d.refs.lock()?;
    let n = g.get(id, Liveness::KernelMount(&plan.target))?;
    if n > 0 {
        g.set_nosync(id, n + 1)?;
        tracing::debug!(%id, count = n + 1, "already mounted");
        return Ok(plan.target);
    }
    release_stale(d, &g, id, &plan);
    internal::acquire_all(d, &g, &plan.internal)?;
    if let Err(e) = mount_outer(d, &g, id, &plan) {
        internal::release_all(d, &g, &plan.internal);
        return Err(e);
    }
    tracing::debug!(%id, lowers = plan.lowerdirs.len(), internal = plan.internal.len(), "mounted");
    Ok(plan.target)
}

/// A count file that reads as 0 is stale: its outer mount went away behind the
/// driver's back (`umount` by hand, a crash of whoever held it). The internal mounts it
/// held are given back, so their counts stay "one per outer mount".
fn release_stale(d: &Overlay2Driver, g: &RefsGuard<'_>, id: &LayerId, plan: &MountPlan) {
    if !plan.internal.is_empty() && g.dir().join(id.as_str()).exists() {
        tracing::debug!(%id, "stale mount count: giving back its internal mounts");
        internal::release_all(d, g, &plan.internal);
    }
}

/// Mounts the outer overlay and records count 1 (unmounting again if that fails).
fn mount_outer(
    d: &Overlay2Driver,
    g: &RefsGuard<'_>,
    id: &LayerId,
    plan: &MountPlan,
) -> Result<()> {
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
    mounter::mount(plan, d.api)?;
    if let Err(e) = g.set_nosync(id, 1) {
        if let Err(ue) = mounter::unmount(id.as_str(), &plan.target) {
            tracing::error!(%id, error = %ue, "unmount after failing to record the mount");
        }
        return Err(e);
    }
    Ok(())
}

pub(crate) fn unmount(d: &Overlay2Driver, id: &LayerId) -> Result<()> {
    d.check_exists(id)?;
    let merged = d.layout.merged(id);
    let live = liveness(d, id, &merged);
    let g = d.refs.lock()?;
    let n = g.get(id, live)?;
    match n {
        0 => {
            tracing::debug!(%id, "unmount of a layer that is not mounted");
            if live != Liveness::ThisBoot {
                if let Ok(Some(p)) = plan_of(d, id, &MountOpts::default()) {
                    release_stale(d, &g, id, &p);
                }
            }
            g.set(id, 0)
        }
        1 => {
            if live == Liveness::ThisBoot {
                return g.set(id, 0);
            }
            mounter::unmount(id.as_str(), &merged)?;
            g.set(id, 0)?;
            // The internal mounts it stacked on: the same plan finds them again.
            match plan_of(d, id, &MountOpts::default()) {
                Ok(Some(p)) => internal::release_all(d, &g, &p.internal),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%id, error = %e, "cannot plan the unmounted layer; stale internal mounts are left to cleanup")
                }
            }
            Ok(())
        }
        n => g.set_nosync(id, n - 1),
    }
}

pub(crate) fn mount_count(d: &Overlay2Driver, id: &LayerId) -> Result<u32> {
    d.check_exists(id)?;
    let merged = d.layout.merged(id);
    let g = d.refs.lock()?;
    g.get(id, liveness(d, id, &merged))
}
