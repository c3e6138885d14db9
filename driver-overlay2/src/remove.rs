//! `remove`: refuse while mounted, rename to `.<id>-removing`, drop the short link,
//! then delete. A crash mid-way leaves a `-removing` dir that startup finishes.
//!
//! "Mounted?" is asked of each path with statx (`is_mount_root`, O(1)), not by reading
//! `/proc/self/mountinfo`: a removal asked it four times, and with a few thousand mounts
//! on the machine (other stores' containers, deep stacks' internal mounts, test runs)
//! each read is ~240 KB of table; with 3,000 extra mounts that made `layerctl bench`'s
//! rm step 3.4-3.5x containers-storage vfs, 0.4-0.8x without them (BENCHMARKS.md).

use std::fs;
use std::path::Path;

use driver_core::error::{DriverError, Result};
use driver_core::fsutil::fsync_dir;
use driver_core::mountinfo::is_mount_root;
use driver_core::{Driver, LayerId};

use crate::layout::REMOVING_SUFFIX;
use crate::Overlay2Driver;

pub(crate) fn remove(d: &Overlay2Driver, id: &LayerId) -> Result<()> {
    let l = &d.layout;
    let dir = l.dir(id);
    if !dir.exists() {
        return Err(DriverError::NotFound { id: id.to_string() });
    }
    let count = d.mount_count(id)?;
    if count > 0 || is_mount_root(&l.merged(id))? {
        return Err(DriverError::Busy {
            id: id.to_string(),
            reason: format!("mounted ({count} references)"),
        });
    }
    if is_mount_root(&l.lower_merged(id))? {
        // The layer tops a group of a deep stack that is mounted: busy, unless no mount
        // uses it any more.
        crate::internal::sweep_stale(d)?;
        if is_mount_root(&l.lower_merged(id))? {
            return Err(DriverError::Busy {
                id: id.to_string(),
                reason: format!(
                    "{} is a lower layer of a mounted deep stack",
                    l.lower_merged(id).display()
                ),
            });
        }
    }
    let link = l.read_link(id).ok();
    let removing = l.home().join(format!(".{}{REMOVING_SUFFIX}", id.as_str()));
    if removing.exists() {
        remove_tree(&removing)?;
    }
    fs::rename(&dir, &removing).map_err(|e| DriverError::io("rename for removal", &dir, e))?;
    if let Some(link) = link {
        let p = l.link_path(&link);
        if let Err(e) = fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "removing short link");
            }
        }
    }
    fsync_dir(l.home())?;
    remove_tree(&removing)?;
    if let Ok(g) = d.refs.lock() {
        g.set(id, 0)?;
    }
    Ok(())
}

/// Deletes a layer directory that is no longer published, refusing if its `merged`
/// is still a mount point. A concurrent remover having got there first is fine.
pub(crate) fn remove_tree(p: &Path) -> Result<()> {
    for m in ["merged", crate::plan::LOWER_MERGED] {
        if is_mount_root(&p.join(m))? {
            return Err(DriverError::Busy {
                id: p.display().to_string(),
                reason: format!("{m} is still mounted"),
            });
        }
    }
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io("remove directory", p, e)),
    }
}
