//! Committing a container (`docker commit`): its read-write layer becomes a new
//! read-only layer on top of its image, with a new image config.
//!
//! Pipeline (one pass, constant memory, the same as an import's layer):
//! ```text
//! driver.diff(mount-id, init-id)  -> sha256 = DiffID (thread) -> driver.apply_diff(new cache id,
//!  (driver-core's one exporter:                                    parent = image top layer)
//!   deterministic OCI-whiteout tar)
//! ```
//! - The diff is taken against the container's **init layer**, so the init files
//!   (`/etc/hosts`, `/etc/hostname`, ...) never enter the image (moby diffs a mounted
//!   layer against its init layer too). It is applied on the image's top layer.
//! - The exporter's tar is deterministic (sorted entries, fixed headers, mtimes in
//!   whole seconds), so the same changes give the same DiffID; with the same parent that
//!   is the same ChainID, and the layer is stored once (dedupe as in import).
//! - The new config is the image's config (parsed as JSON, every other field kept) with
//!   the DiffID appended to `rootfs.diff_ids`, one `history` entry appended
//!   (`created`, `created_by` = `layerctl commit <container>`, `comment` = the message)
//!   and `created` set to now (RFC 3339, UTC, seconds). A base config whose history has
//!   fewer non-empty entries than layers first gets one empty entry `{}` per missing
//!   layer, so history and `rootfs.diff_ids` stay aligned (Docker requires it).
//! - Being the import pipeline, it records the layer's tar-split metadata too
//!   ([`crate::tarsplit`]), so `save` replays the committed tar itself; a committed
//!   layer without it (stored before tar-split existed) is re-exported by the same
//!   deterministic exporter, which gives the same bytes.
//! - The container is untouched: it stays mounted (or not) and usable.
//!
//! ## Crash safety
//! As import: the layer is applied into a fresh driver layer and published in the
//! layerdb (write-set rename) only after `syncfs`; then the image is published the same
//! way. The new driver layer is listed in a staging lease before it is created
//! ([`crate::staging`]), so a crash before the layer's publish leaves a dead lease that
//! the next exclusive open removes it by; a crash between the two publishes
//! leaves a valid layer no image uses (as an interrupted multi-layer import does). A
//! failed commit removes the layer it created.

use std::cell::Cell;

use serde_json::{json, Value};

use crate::error::{Result, StoreError};
use crate::ids::{ContainerName, ImageId};
use crate::import::{Ctx, LayerInput};
use crate::layer::LayerRecord;
use crate::store::LayerStore;

/// Options of [`LayerStore::commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Name for the new image (moved away from any image that had it).
    pub name: Option<String>,
    /// The history entry's `comment` (`docker commit -m`).
    pub message: Option<String>,
}

/// What a commit did.
#[derive(Debug, Clone)]
pub struct CommitReport {
    /// The new image.
    pub image: ImageId,
    /// The layer made of the container's changes (its `size` is the content bytes).
    pub layer: LayerRecord,
    /// False when an identical layer (same ChainID) was stored already.
    pub new_layer: bool,
}

impl LayerStore {
    /// Commits container `name` (see the module doc). Needs the exclusive lock.
    ///
    /// Errors: [`StoreError::ContainerNotFound`], [`StoreError::InvalidId`] for a bad
    /// `--name`, the driver's diff/apply errors, [`StoreError::BadJson`] when the
    /// image's config is not a JSON object.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn commit(&self, name: &str, opts: &CommitOptions) -> Result<CommitReport> {
        self.require_exclusive("commit")?;
        let name = ContainerName::new(name)?;
        if let Some(n) = &opts.name {
            crate::ids::validate_new_image_name(n)?;
        }
        let rec = self.container(&name)?;
        let parent = match &rec.parent {
            Some(c) => Some(self.layer(c)?),
            None => None,
        };
        let cfg_path = self.images_dir().join(rec.image.hex()).join("config.json");
        let base_config = self.image_config(&rec.image)?;
        let created = rfc3339_now();
        // Validate the config before doing any work.
        child_config(&cfg_path, &base_config, None, &created, &name, opts)?;

        let ctx = Ctx {
            progress: None,
            limits: crate::import::ImportLimits::NONE,
            read: Cell::new(0),
            new_layers: Cell::new(0),
            existing_layers: Cell::new(0),
            created: Default::default(),
            // Lists the new layer before it exists (see crate::staging).
            lease: Some(self.work_lease("commit")?),
            registered: Default::default(),
        };
        let mut ctx = ctx;
        let result = (|| -> Result<CommitReport> {
            let reader = self.driver.diff(&rec.mount_id, Some(&rec.init_id))?;
            let layer = self.import_layer(
                parent.as_ref(),
                LayerInput {
                    what: format!("changes of container {name}"),
                    reader,
                    blob: None,
                    diff_id: None,
                },
                &ctx,
            )?;
            let new_layer = ctx.new_layers.get() == 1;
            let result = child_config(&cfg_path, &base_config, Some(&layer), &created, &name, opts)
                .and_then(|config| {
                    let names: Vec<String> = opts.name.iter().cloned().collect();
                    self.register_image(&cfg_path, &config, &names)
                });
            match result {
                Ok(image) => {
                    tracing::debug!(container = %name, image = %image, chain = %layer.chain_id, new_layer, "committed");
                    Ok(CommitReport {
                        image,
                        layer,
                        new_layer,
                    })
                }
                Err(e) => {
                    if new_layer {
                        if let Err(re) = self.remove_layer(&layer) {
                            tracing::warn!(chain = %layer.chain_id, error = %re, "rollback of committed layer failed");
                        }
                    }
                    Err(e)
                }
            }
        })();
        if let Some(lease) = ctx.lease.take() {
            self.end_lease(lease);
        }
        result
    }
}

/// The config of the committed image: `base` plus `layer` (when given; `None` only
/// validates). See the module doc for the exact edits.
fn child_config(
    file: &std::path::Path,
    base: &[u8],
    layer: Option<&LayerRecord>,
    created: &str,
    container: &ContainerName,
    opts: &CommitOptions,
) -> Result<Vec<u8>> {
    let bad = |reason: &str| StoreError::BadArchive {
        file: file.to_owned(),
        reason: format!("image config: {reason}"),
    };
    let mut cfg: Value = serde_json::from_slice(base).map_err(|e| StoreError::BadJson {
        file: file.to_owned(),
        what: "image config".into(),
        source: e,
    })?;
    let obj = cfg.as_object_mut().ok_or_else(|| bad("not an object"))?;
    let layers = obj
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let history = obj
        .entry("history")
        .or_insert_with(|| Value::Array(Vec::new()));
    if history.is_null() {
        *history = Value::Array(Vec::new());
    }
    let history = history
        .as_array_mut()
        .ok_or_else(|| bad("history is not an array"))?;
    let non_empty = history
        .iter()
        .filter(|h| h.get("empty_layer").and_then(Value::as_bool) != Some(true))
        .count();
    for _ in non_empty..layers {
        history.push(json!({}));
    }
    let mut entry = json!({
        "created": created,
        "created_by": format!("layerctl commit {container}"),
    });
    if let Some(m) = &opts.message {
        entry["comment"] = Value::String(m.clone());
    }
    history.push(entry);
    obj.insert("created".into(), Value::String(created.to_owned()));
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs
        .as_object_mut()
        .ok_or_else(|| bad("rootfs is not an object"))?
        .entry("diff_ids")
        .or_insert_with(|| Value::Array(Vec::new()));
    if diff_ids.is_null() {
        *diff_ids = Value::Array(Vec::new());
    }
    let diff_ids = diff_ids
        .as_array_mut()
        .ok_or_else(|| bad("rootfs.diff_ids is not an array"))?;
    if let Some(l) = layer {
        diff_ids.push(Value::String(l.diff_id.to_string()));
    }
    serde_json::to_vec(&cfg).map_err(|e| StoreError::BadJson {
        file: file.to_owned(),
        what: "image config".into(),
        source: e,
    })
}

/// Now as RFC 3339 in UTC with whole seconds (`2026-12-01T01:50:13Z`), the form of
/// Docker's `created` fields.
pub(crate) fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// `secs` since the epoch as RFC 3339 UTC (Howard Hinnant's civil-from-days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_089_813), "2026-12-01T01:50:13Z");
    }
}
