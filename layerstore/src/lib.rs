//! # layerstore: content-addressed layers, images and containers
//!
//! The layer store keeps image layers content addressed as Docker and OCI do, on top of
//! any [`driver_core::Driver`], and assembles containers from them.
//!
//! - **DiffID** = sha256 of a layer's uncompressed tar, hashed while it streams into the
//!   driver (on a second thread); **ChainID**(L0) = DiffID(L0), ChainID(L0..Ln) =
//!   sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)) over the `sha256:<hex>` strings.
//! - **Image id** = sha256 of the image config JSON (for a flat tar: a synthesized OCI
//!   config with only os, architecture and `rootfs.diff_ids`, so the same tar always
//!   gives the same id).
//! - Importing the same content twice stores it once (dedupe by ChainID).
//! - A container's changes become an image with [`LayerStore::commit`] (the same
//!   one-layer pipeline as import, fed by the driver's `diff` against the container's
//!   init layer); [`LayerStore::export_rootfs`] writes a flat root filesystem tar;
//!   [`LayerStore::image_history`] matches the config's history to the layers;
//!   [`LayerStore::disk_usage`] sums the layer sizes recorded at import/commit
//!   (O(layers)) plus the containers' changes; [`LayerStore::gc`] removes what nothing
//!   needs (measured bytes freed); names move with
//!   [`LayerStore::tag_image`] / [`LayerStore::untag_image`].
//! - Every layer applied through the import pipeline (imports and commits) keeps
//!   tar-split metadata ([`tarsplit`]): what is needed, besides the layer's own content,
//!   to write its original tar back byte for byte. [`LayerStore::layer_tar`] streams it
//!   back verified against the DiffID; [`LayerStore::save`] writes images as one archive
//!   that is both an OCI image layout and a docker-save archive ([`save`]);
//!   [`LayerStore::verify_contents`] recomputes every DiffID (`check --verify-content`).
//!
//! ## On-disk layout
//! ```text
//! <root>/                               mode 0700, as the driver's home ([`perms`])
//! <root>/driver                          name of the driver that owns this root
//! <root>/lock                            flock: shared for readers, exclusive for writers
//! <root>/tmp/                            metadata temp dirs and entries being removed
//!                                        (made and used under the exclusive lock only);
//!                                        emptied on every exclusive open
//! <root>/staging/<lease>/                a running command's lease: `lock` (flocked by
//!                                        its process), `layer-<cache id>` (driver layers
//!                                        it creates or removes), `chain-<hex>` (layers an
//!                                        import holds), spooled input ([`staging`])
//! <root>/layerdb/sha256/<chain hex>/     diff, size, cache-id, parent (absent for a base layer),
//!                                        tar-split.zst (zstd of the layer tar's non-content
//!                                        bytes and per-file path + size, see [`tarsplit`];
//!                                        absent for layers stored before it existed)
//! <root>/images/sha256/<id hex>/         config.json (image config, verbatim), names (one a line)
//! <root>/containers/<name>/              mount-id, init-id, parent (chain id of the image top),
//!                                        image; mountpoint (last mount path, for `ps`)
//! <root>/<driver>/...                    the driver's own tree (cache ids are its layer ids;
//!                                        a container has `<mount-id>-init` and `<mount-id>`)
//! ```
//!
//! ## Durability and atomicity
//! - Every layerdb, image and container entry is written as a directory in `tmp/` (each
//!   file fsynced), renamed into place, and the parent directory fsynced (moby's
//!   write-set). Removal renames the entry into `tmp/` first, so it is either whole or
//!   gone; metadata is removed before the driver's layer, so a crash leaves at worst an
//!   orphan driver layer, which [`LayerStore::check`] finds and `--repair` removes.
//! - After applying a layer the driver's filesystem is flushed with `syncfs(2)` BEFORE
//!   its metadata is published, so metadata never survives a crash that its data did not
//!   (containerd#14164). Always on: the benchmark shows its cost.
//! - `[store] sync = "none"` ([`SyncMode::None`]) skips the syncfs, for throwaway stores.
//! - A failed import leaves nothing: the half layer is removed through the driver, temp
//!   files are deleted, and `tmp/` is emptied on open; the driver's `cleanup()` runs on
//!   every exclusive open.
//! - A command killed at any moment leaves at most a dead lease in `staging/` (and the
//!   driver's own `-removing`/`.creating-` entries): every mutating command lists the
//!   driver layers it is about to create or remove in its lease first, and every
//!   exclusive open removes the listed layers that no record names, then the lease
//!   ([`staging`]). `tests/tests/crash_harness.rs` kills every mutating command at
//!   random moments on every driver to hold this.
//!
//! ## Locking rules
//! - `<root>/lock` is flocked shared by readers (`images`, `layers`, `ps`, `info`,
//!   `check` (also `--verify-content`), `diff`, `history`, `du`, `save`) and exclusive
//!   by writers (`create`, `rm`, `rmi`, `tag`, `untag`, `mount`, `umount`, `commit`, `export` (it mounts), `gc`,
//!   `check --repair`), for the whole operation ([`LockMode`]).
//! - `import` ([`LockMode::Staged`]) holds no lock while it reads, applies and syncs its
//!   layers: it applies each into a fresh driver layer listed in its lease, and takes the
//!   exclusive lock only for the short steps that change what others see (create the
//!   driver layer where the driver needs it, publish or dedupe the record, register the
//!   image, roll back). Two imports run side by side; a second import of the same layer
//!   drops its copy at publish time; `mount`, `ps`, `images` wait at most one such
//!   step. gc and rmi keep what a live lease holds; gc, check and startup cleanup never
//!   touch a live lease's layers ([`staging`]).
//! - Mount reference counts are the driver's (its own lock), so `mount`/`umount` from
//!   several processes count right.

pub mod check;
pub mod commit;
pub mod container;
pub mod du;
pub mod error;
pub mod export;
pub mod gc;
pub mod history;
pub mod ids;
pub mod image;
pub mod import;
pub mod initlayer;
pub mod layer;
pub mod owner;
pub mod perms;
pub mod save;
pub mod staging;
mod stale_mounts;
pub mod store;
pub mod tarsplit;
mod writeset;

pub use check::{CheckReport, CheckStatus, Problem};
pub use commit::{CommitOptions, CommitReport};
pub use container::{ContainerRecord, ContainerStatus};
pub use du::{ContainerUsage, DiskUsage, ImageUsage};
pub use error::{ErrorKind, Result, StoreError};
pub use export::ExportTarget;
pub use gc::GcReport;
pub use history::{HistoryEntry, ImageHistory};
pub use ids::{ChainId, ContainerName, DiffId, ImageId};
pub use image::{ImageRecord, RemovedImage};
pub use import::{Format, ImportLimits, ImportOptions, ImportReport, ImportSource};
pub use layer::LayerRecord;
pub use save::{SaveCompression, SaveOptions, SaveReport};
pub use store::{LayerStore, LockMode, SyncMode};

#[cfg(test)]
mod sec_tests;
#[cfg(test)]
mod tests;
