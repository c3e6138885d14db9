//! create, remove, listing and cleanup of the layout (see the crate doc).
//!
//! create: `mnt/<id>` and `layers/<id>` first, then `diff/.creating-<id>` renamed to
//! `diff/<id>`, which publishes the layer. remove: `diff/<id>` renamed to
//! `diff/.<id>-removing` (unpublished), then `layers/<id>`, `mnt/<id>` and the renamed
//! tree are deleted. A crash at any point leaves entries that [`cleanup`] recognises
//! (no published `diff/<id>` beside them) and finishes.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::{fsync_dir, mkdir_mode, write_atomic};
use driver_core::mountinfo::{mount_root_state, MountRootState};
use driver_core::{CreateOpts, Driver, LayerId};

use crate::layout::{format_ancestors, Layout, CREATING_PREFIX, REMOVING_SUFFIX};
use crate::AufsDriver;

fn mkdir_all(p: &Path, mode: u32) -> Result<()> {
    if p.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .mode(mode)
        .recursive(true)
        .create(p)
        .ctx("create directory", p)
}

fn remove_file_quiet(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io("remove", p, e)),
    }
}

/// Whether something is mounted at `p`, live or dead (its server gone), asked of the
/// path (statx, O(1)), not of the whole mount table.
fn is_mount_point(p: &Path) -> Result<bool> {
    Ok(mount_root_state(p)? != MountRootState::NotMounted)
}

/// Removes an unpublished directory tree, refusing a mount point.
fn remove_tree(p: &Path) -> Result<()> {
    if is_mount_point(p)? {
        return Err(DriverError::Busy {
            id: p.display().to_string(),
            reason: "still a mount point".into(),
        });
    }
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io("remove directory", p, e)),
    }
}

/// Creates `diff/`, `layers/`, `mnt/`, `run/` below `home`.
pub(crate) fn prepare_home(l: &Layout) -> Result<()> {
    mkdir_all(l.home(), 0o700)?;
    for d in [l.diff_root(), l.layers_root(), l.mnt_root(), l.run_root()] {
        mkdir_all(&d, 0o700)?;
    }
    Ok(())
}

pub(crate) fn create(
    d: &AufsDriver,
    id: &LayerId,
    parent: Option<&LayerId>,
    opts: &CreateOpts,
) -> Result<()> {
    if let Some(k) = opts.storage_opt.keys().next() {
        return Err(DriverError::InvalidOption {
            key: k.clone(),
            reason: "aufs takes no per-layer storage options".into(),
        });
    }
    let l = &d.layout;
    if d.exists(id) {
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
        ancestors.push(p.clone());
        ancestors.extend(l.read_ancestors(p)?);
    }
    if ancestors.len() + 1 > d.max_branches() {
        return Err(DriverError::TooDeep {
            driver: crate::NAME.into(),
            depth: ancestors.len() + 1,
            limit: d.max_branches(),
        });
    }
    let tmp = l.creating(id);
    let build = || -> Result<()> {
        remove_tree(&tmp)?;
        if !l.mnt(id).is_dir() {
            mkdir_mode(&l.mnt(id), 0o755)?;
        }
        write_atomic(&l.layers_file(id), format_ancestors(&ancestors).as_bytes())?;
        mkdir_mode(&tmp, 0o755)?;
        if let Some(p) = parent {
            // The union's root shows the top branch's root: copy the parent's, so the
            // image's `./` entry is the container root's, as on every driver.
            driver_core::copyup::copy_dir_attrs(&l.diff(p), &tmp)?;
        }
        fsync_dir(&l.diff_root())?;
        fs::rename(&tmp, l.diff(id)).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) {
                DriverError::AlreadyExists { id: id.to_string() }
            } else {
                DriverError::io("rename into place", l.diff(id), e)
            }
        })?;
        fsync_dir(&l.diff_root())
    };
    if let Err(e) = build() {
        for (what, r) in [
            ("removing partial layer", remove_tree(&tmp)),
            (
                "removing layers file",
                remove_file_quiet(&l.layers_file(id)),
            ),
            ("removing mount point", remove_tree(&l.mnt(id))),
        ] {
            if let Err(re) = r {
                tracing::warn!(%id, error = %re, "{what} after failed create");
            }
        }
        return Err(e);
    }
    tracing::debug!(%id, depth = ancestors.len() + 1, "created layer");
    Ok(())
}

pub(crate) fn remove(d: &AufsDriver, id: &LayerId) -> Result<()> {
    let l = &d.layout;
    if !d.exists(id) {
        return Err(DriverError::NotFound { id: id.to_string() });
    }
    crate::mount::detach_if_dead(d, id)?;
    let count = d.mount_count(id)?;
    if count > 0 || is_mount_point(&l.mnt(id))? {
        return Err(DriverError::Busy {
            id: id.to_string(),
            reason: format!("mounted ({count} references)"),
        });
    }
    let removing = l.removing(id);
    remove_tree(&removing)?;
    fs::rename(l.diff(id), &removing).ctx("rename for removal", l.diff(id))?;
    fsync_dir(&l.diff_root())?;
    remove_file_quiet(&l.layers_file(id))?;
    remove_tree(&l.mnt(id))?;
    for p in [l.pid_file(id), l.log_file(id)] {
        remove_file_quiet(&p)?;
    }
    remove_tree(&removing)?;
    if let Ok(g) = d.refs.lock() {
        g.set(id, 0)?;
    }
    Ok(())
}

fn read_dir_names(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

/// Every published layer (`diff/<id>` directories), sorted.
pub(crate) fn layers(l: &Layout) -> Result<Vec<LayerId>> {
    let mut out = Vec::new();
    for (name, p) in read_dir_names(&l.diff_root())? {
        if let Ok(id) = LayerId::new(name.as_str()) {
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// Leftovers that [`cleanup`] would finish: `diff/.creating-*`, `diff/.*-removing`,
/// `layers/<id>` and `mnt/<id>` of unpublished layers, temp files in `layers/`, and
/// dead userspace mounts (detached by `Driver::cleanup` before this list is acted on).
/// A `.creating-` tree of a create still running is indistinguishable from an
/// interrupted one; creates are serialised by the store lock, which `check` holds.
pub(crate) fn leftovers(l: &Layout) -> Result<Vec<PathBuf>> {
    let published = |name: &str| {
        LayerId::new(name)
            .is_ok_and(|id| fs::symlink_metadata(l.diff(&id)).is_ok_and(|m| m.is_dir()))
    };
    let mut out = Vec::new();
    for (name, p) in read_dir_names(&l.diff_root())? {
        if name.starts_with(CREATING_PREFIX)
            || (name.starts_with('.') && name.ends_with(REMOVING_SUFFIX))
        {
            out.push(p);
        }
    }
    for (name, p) in read_dir_names(&l.layers_root())? {
        if !published(&name) {
            out.push(p);
        }
    }
    for (name, p) in read_dir_names(&l.mnt_root())? {
        // A mount whose userspace server died ("Transport endpoint is not connected")
        // is a leftover too: cleanup detaches it.
        if !published(&name) || crate::mount::state(&p)? == crate::mount::State::Dead {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn cleanup(d: &AufsDriver) -> Result<()> {
    for p in leftovers(&d.layout)? {
        tracing::info!(path = %p.display(), "removing leftover of interrupted work");
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            remove_tree(&p)?;
        } else {
            remove_file_quiet(&p)?;
        }
    }
    Ok(())
}

/// Copy-up temps of dead processes (`.wh..wh.cpup.<pid>.<n>`, left by a server killed
/// mid copy-up) anywhere in `id`'s branch ([`driver_core::copyup::dead_copyup_temps`]).
pub(crate) fn dead_copyup_temps(l: &Layout, id: &LayerId) -> Result<Vec<PathBuf>> {
    driver_core::copyup::dead_copyup_temps(&l.diff(id))
}

/// Removes the copy-up temps of dead processes in `id`'s branch; returns how many.
///
/// Errors: [`DriverError::Io`] naming the branch or the temp.
pub(crate) fn sweep_copyup_temps(l: &Layout, id: &LayerId) -> Result<usize> {
    let temps = dead_copyup_temps(l, id)?;
    for t in &temps {
        tracing::info!(path = %t.display(), "removing the temp of a copy-up cut short");
        remove_file_quiet(t)?;
    }
    Ok(temps.len())
}
