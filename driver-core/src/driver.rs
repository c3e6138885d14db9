//! The `Driver` trait: the contract every storage driver implements.
//!
//! It mirrors moby's graphdriver contract (ProtoDriver + DiffDriver). The rustdoc of each
//! method is the specification the conformance suite checks.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::id::LayerId;

/// Whether a new layer is an image layer or a container's writable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerKind {
    /// An image layer: written once by `apply_diff`, then only read.
    #[default]
    ReadOnly,
    /// A container's read-write (or init) layer.
    ReadWrite,
}

/// Options for [`Driver::create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// Read-only image layer or read-write container layer.
    pub kind: LayerKind,
    /// Driver specific per-layer options (Docker's `--storage-opt`). Unknown keys are an
    /// [`crate::DriverError::InvalidOption`].
    pub storage_opt: BTreeMap<String, String>,
}

impl CreateOpts {
    /// Options for a read-write layer.
    pub fn read_write() -> Self {
        CreateOpts {
            kind: LayerKind::ReadWrite,
            ..Default::default()
        }
    }
}

/// Options for [`Driver::mount`].
#[derive(Debug, Clone, Default)]
pub struct MountOpts {
    /// SELinux mount label (`context=`), if any.
    pub mount_label: Option<String>,
    /// Extra mount options appended to the driver's own (e.g. `volatile` for overlay).
    pub options: Vec<String>,
}

/// Key/value lines describing a driver's state, for `layerctl info`.
pub type DriverStatus = Vec<(String, String)>;

/// Driver-wide options from `[driver_options.NAME]` in config.toml, as strings.
/// Each driver rejects keys it does not know with [`crate::DriverError::InvalidOption`].
pub type DriverOptions = BTreeMap<String, String>;

/// What happened to one path between a layer and its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Content or metadata differs.
    Modify,
    /// Present in the layer, absent from the parent.
    Add,
    /// Present in the parent, absent (whited out) in the layer.
    Delete,
}

/// One entry of [`Driver::changes`], like `docker diff` prints. Display: `A|C|D PATH`,
/// the path escaped as GNU `ls -b` does ([`crate::escape`]: unambiguous for any bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    /// Absolute path inside the layer, e.g. `/etc/hosts`.
    pub path: PathBuf,
    /// What happened.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.kind {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        };
        write!(f, "{c} {}", crate::escape::escape_path(&self.path))
    }
}

/// A storage driver: stores layers as directories and assembles them into a root
/// filesystem. Object safe: the CLI holds a `Box<dyn Driver>` picked by name.
///
/// The driver keeps no knowledge of images or containers; the layer store does. In
/// particular the driver does not track children: refusing to remove a layer that
/// others build on is the layer store's job. All paths live under [`Driver::home`].
///
/// Concurrency: methods take `&self` and are safe to call from several threads for
/// different ids. Calls for the same id are serialised by the caller (the layer store
/// holds its store lock), except `mount`/`unmount`, which the driver serialises itself
/// across processes (see [`crate::refcount`]).
pub trait Driver: Send + Sync + fmt::Debug {
    /// The driver's registry name: `vfs`, `overlay2`, `aufs`.
    fn name(&self) -> &'static str;

    /// The driver's own tree, `<root>/<name>`.
    fn home(&self) -> &Path;

    /// Key/value facts for `layerctl info` (backing filesystem, probe results...).
    fn status(&self) -> DriverStatus;

    /// Creates layer `id` on top of `parent` (or empty when `None`).
    ///
    /// Errors: [`AlreadyExists`](crate::DriverError::AlreadyExists) if `id` exists;
    /// [`ParentNotFound`](crate::DriverError::ParentNotFound) if `parent` does not;
    /// [`TooDeep`](crate::DriverError::TooDeep) if the stack would exceed the driver's
    /// depth limit (checked before anything is created);
    /// [`InvalidOption`](crate::DriverError::InvalidOption) for unknown `storage_opt`
    /// keys. On error nothing is left behind.
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()>;

    /// Whether [`Driver::create`] of a new id may run without the store lock, beside
    /// other processes' calls for other ids, [`Driver::cleanup`] and
    /// [`Driver::leftovers`] included: the create's work in progress is named with the
    /// creating process's id and left alone while that process lives. The layer store
    /// then creates an import's staging layers unlocked (vfs copies the whole parent
    /// tree in `create`, so there it matters); otherwise (the default) it creates them
    /// under the lock. [`Driver::apply_diff`] to a layer only its importer knows
    /// always runs unlocked: it writes only below that layer and reads its ancestors,
    /// which the store keeps while an import holds them.
    fn unlocked_create(&self) -> bool {
        false
    }

    /// Removes layer `id` and everything the driver keeps for it.
    ///
    /// Errors: [`NotFound`](crate::DriverError::NotFound) if it does not exist;
    /// [`Busy`](crate::DriverError::Busy) if it is mounted. Removal renames the layer to
    /// a `-removing` name first, so a crash mid-way leaves something [`Driver::cleanup`]
    /// finishes, never a half layer under the real id.
    fn remove(&self, id: &LayerId) -> Result<()>;

    /// Whether layer `id` exists.
    fn exists(&self, id: &LayerId) -> bool;

    /// Makes the layer's full root filesystem (its content over all its ancestors)
    /// available and returns its path. Reference counted across processes: every
    /// successful `mount` must be paired with one `unmount`; the second and later calls
    /// return the same path without mounting again.
    ///
    /// Errors: [`NotFound`](crate::DriverError::NotFound);
    /// [`Mount`](crate::DriverError::Mount) if the kernel refuses.
    fn mount(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf>;

    /// Drops one reference taken by [`Driver::mount`]; unmounts on the last one.
    ///
    /// Errors: [`NotFound`](crate::DriverError::NotFound); unmounting a layer that is not
    /// mounted is not an error (returns Ok, logs at debug).
    fn unmount(&self, id: &LayerId) -> Result<()>;

    /// How many references [`Driver::mount`] holds on `id` now (0 when not mounted).
    /// Re-derived from the kernel's mount table where the driver mounts for real, so a
    /// stale count from before a reboot reads as 0.
    fn mount_count(&self, id: &LayerId) -> Result<u32>;

    /// Applies a layer tar (OCI/AUFS whiteout format, plain, uncompressed) to layer `id`,
    /// whose parent is `parent`. Returns the number of content bytes applied.
    ///
    /// Hostile input is refused with [`UnsafeEntry`](crate::DriverError::UnsafeEntry) or
    /// [`Tar`](crate::DriverError::Tar); nothing is ever written outside the layer. After
    /// an error the layer's content is unspecified: the caller removes the layer.
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<u64>;

    /// [`Driver::apply_diff`] of a stream held in shared chunks
    /// ([`ChunkedRead`](crate::apply::ChunkedRead), layerstore's import): driver-core's
    /// apply then writes regular files' content from the chunks without copying it
    /// first. Same rules, errors and resulting tree as `apply_diff`; the default reads
    /// the stream as a plain one, drivers that apply through driver-core's apply
    /// (vfs, overlay2, aufs) pass it on.
    fn apply_diff_chunked(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn crate::apply::ChunkedRead,
    ) -> Result<u64> {
        self.apply_diff(id, parent, diff)
    }

    /// Exports the changes of `id` relative to `parent` as a tar stream with OCI
    /// whiteouts (`.wh.<name>`), made by [`crate::export`]: the same changes give the
    /// same bytes on every driver. A file whose size changes while it is exported makes
    /// the stream's `read` fail with an error naming it.
    fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Box<dyn Read + Send>>;

    /// Lists the changes of `id` relative to `parent`, sorted by path: exactly the
    /// entries of [`Driver::diff`]'s tar, in its order (rules in [`crate::export`]).
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>>;

    /// Bytes of regular-file content `diff` exports (added/modified files, each
    /// hard-link group once).
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64>;

    /// Finishes interrupted work (`-removing` leftovers, temp dirs) and repairs what can
    /// be re-derived. Called when a store opens the driver and by `layerctl check`.
    fn cleanup(&self) -> Result<()>;

    /// The thorough form of [`Driver::cleanup`], run by `layerctl check --repair`: may
    /// take O(layers) work that opening a store must not (overlay2 re-derives every
    /// short link). Afterwards [`Driver::leftovers`] lists only what cannot be repaired.
    fn repair(&self) -> Result<()> {
        self.cleanup()
    }

    /// The directory holding the layer's own content (vfs: the full tree; overlay2:
    /// `<id>/diff`). Used by naive diff and by `layerctl check`.
    fn layer_dir(&self, id: &LayerId) -> Result<PathBuf>;

    /// Every path [`Driver::remove`] deletes for the layer: its content directory and
    /// the driver's bookkeeping of it (overlay2: the whole `<id>/` with `link`, `lower`,
    /// `work/`, `merged/`, and the `l/<short>` link; aufs: `diff/<id>`, `layers/<id>`,
    /// `mnt/<id>`). `gc --dry-run` sums their apparent sizes, so its "Would reclaim"
    /// is what `gc` then frees (it counted `layer_dir` alone: 8% short on overlay2).
    /// Paths that do not exist may be listed. Default: `[layer_dir]`.
    fn layer_paths(&self, id: &LayerId) -> Result<Vec<PathBuf>> {
        Ok(vec![self.layer_dir(id)?])
    }

    /// The layer as a stack of branch directories, its own first, then its ancestors
    /// nearest first, in the driver's whiteout format: what the layer's root filesystem
    /// looks like without mounting it. Every union lookup outside the driver (init
    /// layer, check, changes) goes through it ([`crate::stack::LayerStack`]); a
    /// full-tree driver (vfs) answers a one-branch stack.
    ///
    /// Errors: [`NotFound`](crate::DriverError::NotFound); [`Corrupt`](crate::DriverError::Corrupt)
    /// when the driver's record of the ancestors is unreadable.
    fn stack(&self, id: &LayerId) -> Result<crate::stack::LayerStack>;

    /// Every layer the driver holds, sorted. `layerctl check` compares it with the
    /// store's records (a layer no record names is an orphan); the driver alone knows
    /// its own tree, so the store never matches folder names.
    ///
    /// Errors: [`Io`](crate::DriverError::Io) naming the directory that cannot be read.
    fn layers(&self) -> Result<Vec<LayerId>>;

    /// Leftovers of interrupted work in the driver's tree (half-created or half-removed
    /// layers, stale temp files) that [`Driver::cleanup`] would finish now. Work of a
    /// process still running is not a leftover.
    ///
    /// Errors: [`Io`](crate::DriverError::Io) naming the directory that cannot be read.
    fn leftovers(&self) -> Result<Vec<PathBuf>>;

    /// Fault injection for the conformance suite's recovery cases: makes the live mount
    /// of `id` at `mountpoint` (the path [`Driver::mount`] returned) fail under the
    /// driver as a crash would, without touching the driver's records. A userspace
    /// backend kills its server (the mount then answers "Transport endpoint is not
    /// connected"); the default, for kernel mounts, detaches the mount lazily
    /// (`umount -l` behind the driver's back). Returns whether a mount was broken:
    /// `false` when nothing is mounted at `mountpoint` (vfs, a base layer that is its own
    /// root), and the driver's state is then unchanged.
    ///
    /// After it, the next [`Driver::mount`], [`Driver::unmount`] or [`Driver::cleanup`]
    /// must find the broken mount, clear it, and count the lost references as 0; data
    /// written and fsynced through the mount before must still be in the layer.
    ///
    /// Errors: [`Unmount`](crate::DriverError::Unmount) when the detach fails.
    fn crash_mount(&self, id: &LayerId, mountpoint: &Path) -> Result<bool> {
        crash_mount_by_detach(id, mountpoint)
    }
}

/// The default [`Driver::crash_mount`]: detaches the mount at `mountpoint` lazily when
/// there is one (`false` when nothing is mounted there).
///
/// Errors: [`Unmount`](crate::DriverError::Unmount) when the detach fails.
pub fn crash_mount_by_detach(id: &LayerId, mountpoint: &Path) -> Result<bool> {
    if !crate::mountinfo::is_mount_root(mountpoint)? {
        return Ok(false);
    }
    nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        crate::DriverError::Unmount {
            target: mountpoint.to_owned(),
            source: std::io::Error::from_raw_os_error(e as i32),
        }
    })?;
    tracing::warn!(%id, mountpoint = %mountpoint.display(), "crash_mount: mount detached under the driver");
    Ok(true)
}
