//! Naive diff/changes/diff_size/apply_diff that work for any driver by mounting layers
//! and comparing or writing whole trees (moby's `NaiveDiffDriver`). A driver overrides
//! them only where it can do better (overlay2 reads its upper directory).
//!
//! Every mount taken here is released by a [`MountGuard`], also on error. The reader
//! [`naive_diff`] returns owns its guards, so the layers stay mounted until the tar has
//! been read (or the reader dropped).

use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{apply_layer_stream, ApplyOptions, LayerStream};
use crate::driver::{Change, Driver, MountOpts};
use crate::error::Result;
use crate::export::{self, DiffSource};
use crate::id::LayerId;
use crate::whiteout::WhiteoutFormat;

/// One reference taken by [`Driver::mount`], dropped (unmounted) on drop. `H` is how the
/// guard holds the driver: `&D` for a scoped guard, `Arc<D>` for one that must outlive
/// the call (see [`naive_diff`]).
#[derive(Debug)]
pub struct MountGuard<H>
where
    H: Deref,
    H::Target: Driver,
{
    driver: H,
    id: LayerId,
    path: PathBuf,
}

impl<H> MountGuard<H>
where
    H: Deref,
    H::Target: Driver,
{
    /// Mounts `id` with default options.
    pub fn mount(driver: H, id: &LayerId) -> Result<Self> {
        let path = driver.mount(id, &MountOpts::default())?;
        Ok(MountGuard {
            driver,
            id: id.clone(),
            path,
        })
    }

    /// Where the layer is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<H> Drop for MountGuard<H>
where
    H: Deref,
    H::Target: Driver,
{
    fn drop(&mut self) {
        if let Err(e) = self.driver.unmount(&self.id) {
            tracing::warn!(id = %self.id, error = %e, "unmount after naive diff failed");
        }
    }
}

/// The source of a naive diff: the two mounted trees.
fn trees<H: Deref>(layer: &MountGuard<H>, parent: Option<&MountGuard<H>>) -> DiffSource
where
    H::Target: Driver,
{
    DiffSource::Trees {
        layer: layer.path().to_path_buf(),
        parent: parent.map(|g| g.path().to_path_buf()),
    }
}

/// Changes of `id` relative to `parent`: mounts both, compares the trees with
/// [`export::changes`], unmounts both.
pub fn naive_changes<D: Driver + ?Sized>(
    d: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<Vec<Change>> {
    let layer = MountGuard::mount(d, id)?;
    let parent = parent.map(|p| MountGuard::mount(d, p)).transpose()?;
    export::changes(&trees(&layer, parent.as_ref()))
}

/// Bytes of regular-file content [`naive_diff`] would export ([`export::size`]).
pub fn naive_diff_size<D: Driver + ?Sized>(
    d: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<u64> {
    let layer = MountGuard::mount(d, id)?;
    let parent = parent.map(|p| MountGuard::mount(d, p)).transpose()?;
    export::size(&trees(&layer, parent.as_ref()))
}

/// The tar of the changes of `id` relative to `parent` ([`crate::export`]'s format), streamed. Both
/// layers stay mounted until the returned reader is dropped. The driver is cloned into
/// an `Arc` so the reader can unmount later; drivers are cheap handles (paths and
/// options), so that costs nothing.
pub fn naive_diff<D: Driver + Clone + 'static>(
    d: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<Box<dyn Read + Send>> {
    let d = Arc::new(d.clone());
    let layer = MountGuard::mount(Arc::clone(&d), id)?;
    let parent = parent
        .map(|p| MountGuard::mount(Arc::clone(&d), p))
        .transpose()?;
    let tar = export::diff(trees(&layer, parent.as_ref()))?;
    Ok(Box::new(GuardedReader {
        tar,
        _guards: (layer, parent),
    }))
}

/// A reader that keeps mounts alive. Fields drop in order: the tar (whose drop waits for
/// its writer thread) before the guards.
struct GuardedReader<D: Driver> {
    tar: export::ExportReader,
    _guards: (MountGuard<Arc<D>>, Option<MountGuard<Arc<D>>>),
}

impl<D: Driver> Read for GuardedReader<D> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tar.read(buf)
    }
}

/// Applies the layer tar `diff` to `id`: mounts it, [`crate::apply_tar`] with `format`,
/// unmounts. Returns the content bytes applied. `parent` is not needed: the mount shows
/// the parent's content already.
pub fn naive_apply_diff<D: Driver + ?Sized>(
    d: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
    diff: &mut dyn Read,
    format: WhiteoutFormat,
) -> Result<u64> {
    naive_apply_layer_stream(d, id, parent, LayerStream::Read(diff), format)
}

/// [`naive_apply_diff`] of either kind of [`LayerStream`] (a chunked one for
/// [`Driver::apply_diff_chunked`]).
pub fn naive_apply_layer_stream<D: Driver + ?Sized>(
    d: &D,
    id: &LayerId,
    parent: Option<&LayerId>,
    diff: LayerStream<'_>,
    format: WhiteoutFormat,
) -> Result<u64> {
    let _ = parent;
    let layer = MountGuard::mount(d, id)?;
    let stats = apply_layer_stream(layer.path(), diff, &ApplyOptions::new(format))?;
    tracing::debug!(id = %id, entries = stats.entries, bytes = stats.content_bytes, "applied diff");
    Ok(stats.content_bytes)
}
