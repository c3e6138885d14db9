//! Exporting a root filesystem (`docker export`): the merged tree of a container (init
//! files and its changes included) or of an image, as one flat tar without whiteouts.
//!
//! The tar is driver-core's one exporter run as a full-tree diff against nothing
//! ([`driver_core::export::DiffSource::Trees`] with no parent) over the **mounted**
//! tree, so its format is the exporter's (sorted entries, fixed ustar/PAX headers,
//! mtimes in whole seconds, hard links to the first path of their group, `user.*` and
//! other xattrs except `trusted.overlay.*`): the same tree gives the same bytes on
//! every driver. Sockets are not exported; the root directory has no entry.
//!
//! - A container is mounted for the export (one more reference, dropped afterwards;
//!   its other references and its content are untouched).
//! - An image is mounted through a temporary read-write layer on its top layer
//!   (`LayerId::random()`, never published), removed afterwards. A crash leaves an
//!   orphan driver layer that `check --repair` removes. On vfs that layer is a full
//!   copy of the image.
//! - Holds the exclusive store lock for the whole export (it mounts).

use std::io::Write;

use driver_core::export::{write_diff, DiffSource};
use driver_core::{CreateOpts, LayerId, MountOpts};

use crate::error::{Result, StoreError};
use crate::ids::ContainerName;
use crate::store::LayerStore;

/// What [`LayerStore::export_rootfs`] exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// A container, by name.
    Container(String),
    /// An image, by id.
    Image(crate::ids::ImageId),
}

impl LayerStore {
    /// Writes the flat root filesystem tar of `reference` into `out`: the container of
    /// that name if there is one, else the image it resolves to (name, id, prefix).
    /// Errors: not found when neither exists; the driver's mount and export errors
    /// (a write error of `out` is an I/O error of the export).
    #[tracing::instrument(level = "debug", skip(self, out))]
    pub fn export_rootfs<W: Write>(&self, reference: &str, out: W) -> Result<(ExportTarget, W)> {
        self.require_exclusive("export")?;
        if let Ok(name) = ContainerName::new(reference) {
            match self.container(&name) {
                Ok(rec) => {
                    let path = self.driver.mount(&rec.mount_id, &MountOpts::default())?;
                    let result = write_diff(
                        &DiffSource::Trees {
                            layer: path,
                            parent: None,
                        },
                        out,
                    );
                    let unmounted = self.driver.unmount(&rec.mount_id);
                    let out = result?;
                    unmounted?;
                    return Ok((ExportTarget::Container(name.to_string()), out));
                }
                Err(StoreError::ContainerNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let id = self.resolve_image(reference)?;
        let img = self.image(&id)?;
        let top = match img.top_layer() {
            Some(c) => Some(self.layer(c)?.cache_id),
            None => None,
        };
        let tmp = LayerId::random();
        self.driver
            .create(&tmp, top.as_ref(), &CreateOpts::read_write())?;
        let result = (|| -> Result<W> {
            let path = self.driver.mount(&tmp, &MountOpts::default())?;
            let result = write_diff(
                &DiffSource::Trees {
                    layer: path,
                    parent: None,
                },
                out,
            );
            let unmounted = self.driver.unmount(&tmp);
            let out = result?;
            unmounted?;
            Ok(out)
        })();
        if let Err(e) = self.driver.remove(&tmp) {
            tracing::warn!(layer = %tmp, error = %e, "removing the export's temporary layer failed; `check --repair` removes it");
        }
        Ok((ExportTarget::Image(id), result?))
    }
}
