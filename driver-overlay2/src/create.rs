//! `create`: a new layer is assembled in `.creating-<pid>-<id>` and renamed into place
//! whole, then its short link is added.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::{fsync_dir, mkdir_mode};
use driver_core::{CreateOpts, Driver, LayerId, LayerKind, MountOpts};

use crate::layout::{format_lower, new_short_id, CREATING_PREFIX, LINK_DIR};
use crate::mounter::MountApi;
use crate::plan::{check_depth, lower_count, plan, StackInfo};
use crate::Overlay2Driver;

fn write_synced(p: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(p).ctx("create", p)?;
    f.write_all(data).ctx("write", p)?;
    f.sync_all().ctx("fsync", p)
}

pub(crate) fn create(
    d: &Overlay2Driver,
    id: &LayerId,
    parent: Option<&LayerId>,
    opts: &CreateOpts,
) -> Result<()> {
    if let Some(k) = opts.storage_opt.keys().next() {
        return Err(DriverError::InvalidOption {
            key: k.clone(),
            reason: "overlay2 takes no per-layer storage options".into(),
        });
    }
    let l = &d.layout;
    if d.exists(id) || l.dir(id).exists() {
        return Err(DriverError::AlreadyExists { id: id.to_string() });
    }
    let mut ancestors = Vec::new();
    if let Some(p) = parent {
        if !d.exists(p) {
            return Err(DriverError::ParentNotFound {
                id: id.to_string(),
                parent: p.to_string(),
            });
        }
        ancestors.push(l.read_link(p)?);
        ancestors.extend(l.read_lowers(p)?);
    }
    let read_write = opts.kind == LayerKind::ReadWrite;
    // Before anything is created: the stack must be mountable.
    let lowers = lower_count(ancestors.len(), read_write);
    let name_image = |e: DriverError| image_depth_error(d, &ancestors, lowers, e);
    check_depth(lowers).map_err(name_image)?;
    let link = new_short_id();
    if d.api == MountApi::Classic {
        // mount(2) must also fit the options in one page: plan the mount now (the
        // layer's own link and the groups' keys do not exist yet; their lengths are
        // what matters).
        let resolve = |_: &str| Ok(id.clone());
        let stack = StackInfo {
            id,
            link: &link,
            lowers: &ancestors,
            read_write,
            resolve: &resolve,
        };
        if let Some(p) = plan(l, stack, &d.opts, &MountOpts::default())? {
            p.check_classic_fits().map_err(name_image)?;
            for im in &p.internal {
                im.plan.check_classic_fits().map_err(name_image)?;
            }
        }
    }

    let tmp = l.home().join(format!(
        "{CREATING_PREFIX}{}-{}",
        std::process::id(),
        id.as_str()
    ));
    let build = || -> Result<()> {
        mkdir_mode(&tmp, 0o700)?;
        mkdir_mode(&tmp.join("diff"), 0o755)?;
        if let Some(p) = parent {
            // The merged root takes its attributes from the top layer's root: copy the
            // parent's, so the image's `./` (mode, owner, xattrs) is what every layer and
            // container above it shows, as on a full copy.
            driver_core::copyup::copy_dir_attrs(&l.diff(p), &tmp.join("diff"))?;
        }
        mkdir_mode(&tmp.join("merged"), 0o700)?;
        if read_write {
            mkdir_mode(&tmp.join("work"), 0o700)?;
        }
        write_synced(&tmp.join("link"), link.as_bytes())?;
        if !ancestors.is_empty() {
            write_synced(&tmp.join("lower"), format_lower(&ancestors).as_bytes())?;
        }
        fsync_dir(&tmp)?;
        fs::rename(&tmp, l.dir(id)).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) {
                DriverError::AlreadyExists { id: id.to_string() }
            } else {
                DriverError::io("rename into place", l.dir(id), e)
            }
        })
    };
    if let Err(e) = build() {
        if let Err(re) = fs::remove_dir_all(&tmp) {
            if re.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %re, "removing partial layer");
            }
        }
        return Err(e);
    }
    let publish = || -> Result<()> {
        fsync_dir(l.home())?;
        make_link(l.home(), id, &link)?;
        fsync_dir(&l.links())
    };
    if let Err(e) = publish() {
        if let Err(re) = crate::remove::remove(d, id) {
            tracing::warn!(%id, error = %re, "rolling back failed create");
        }
        return Err(e);
    }
    tracing::debug!(%id, link, depth = ancestors.len(), read_write, "created layer");
    Ok(())
}

/// A depth error of the mount planner counts lower dirs; the user knows their image's
/// layer count. Read-write layers in the stack (a container's init layer, or the layer
/// itself) are not image layers: they are taken off both the depth and the limit, so a
/// 500-layer image is named as 500 layers, whatever a container adds on top. Only on
/// this error path: one `stat` per ancestor (`l/<short>/../work` marks a read-write one).
/// `lowers` is the whole stack's lower count (an internal mount's page-limit error counts
/// only its own group).
fn image_depth_error(
    d: &Overlay2Driver,
    ancestors: &[String],
    lowers: usize,
    e: DriverError,
) -> DriverError {
    let DriverError::TooDeep { driver, limit, .. } = e else {
        return e;
    };
    let rw_ancestors = ancestors
        .iter()
        .filter(|s| d.layout.link_path(s).join("../work").is_dir())
        .count();
    // The layer itself is among the lowers only as a read-only view, i.e. when it is
    // an image layer.
    DriverError::TooDeep {
        driver,
        depth: lowers.saturating_sub(rw_ancestors),
        limit: limit.saturating_sub(rw_ancestors),
    }
}

/// Creates `l/<link> -> ../<id>/diff`; an existing link with that target is fine
/// (another process's startup repair may have made it).
pub(crate) fn make_link(home: &Path, id: &LayerId, link: &str) -> Result<()> {
    let p = home.join(LINK_DIR).join(link);
    let target = Path::new("..").join(id.as_str()).join("diff");
    match std::os::unix::fs::symlink(&target, &p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if fs::read_link(&p).ok().as_deref() == Some(target.as_path()) {
                Ok(())
            } else {
                Err(DriverError::io("create short link", p, e))
            }
        }
        Err(e) => Err(DriverError::io("create short link", p, e)),
    }
}
