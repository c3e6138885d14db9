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
//! <root>/driver                          name of the driver that owns this root
//! <root>/lock                            flock: shared for readers, exclusive for writers
//! <root>/tmp/                            staging (imports, tar-split being recorded, save
//!                                        spools, metadata temp dirs, entries
//!                                        being removed); emptied on every exclusive open
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
//! - A failed import leaves nothing: the half layer is removed through the driver, temp
//!   files are deleted, and `tmp/` is emptied on open; the driver's `cleanup()` runs on
//!   every exclusive open.
//!
//! ## Locking rules
//! - `<root>/lock` is flocked shared by readers (`images`, `layers`, `ps`, `info`,
//!   `check` (also `--verify-content`), `diff`, `history`, `du`, `save`) and exclusive by writers (`import`, `create`, `rm`,
//!   `rmi`, `tag`, `untag`, `mount`, `umount`, `commit`, `export` (it mounts), `gc`,
//!   `check --repair`), for the whole operation ([`LockMode`]).
//! - Imports apply their layers while holding the exclusive lock: simple and correct,
//!   but concurrent imports serialise (a known limitation to improve: apply into a
//!   private cache id unlocked, lock only to publish).
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
pub mod save;
pub mod store;
pub mod tarsplit;
mod writeset;

pub use check::{CheckReport, Problem};
pub use commit::{CommitOptions, CommitReport};
pub use container::{ContainerRecord, ContainerStatus};
pub use du::{ContainerUsage, DiskUsage, ImageUsage};
pub use error::{ErrorKind, Result, StoreError};
pub use export::ExportTarget;
pub use gc::GcReport;
pub use history::{HistoryEntry, ImageHistory};
pub use ids::{ChainId, ContainerName, DiffId, ImageId};
pub use image::{ImageRecord, RemovedImage};
pub use import::{Format, ImportOptions, ImportReport, ImportSource};
pub use layer::LayerRecord;
pub use save::{SaveCompression, SaveOptions, SaveReport};
pub use store::{LayerStore, LockMode};

#[cfg(test)]
mod tests;
