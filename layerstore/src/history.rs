//! An image's history (`docker history`): its layers bottom to top with DiffID and
//! recorded size, and the entries of the config's `history` array matched to them.
//!
//! Matching follows the image spec: each entry without `"empty_layer": true` belongs to
//! the next layer of `rootfs.diff_ids`, in order. Layers left over when the history is
//! shorter (images without history, like a flat import's synthesized config) get an
//! entry with no fields; entries left over when it is longer have no layer.

use serde::Deserialize;

use crate::error::{Result, StoreError};
use crate::ids::ImageId;
use crate::layer::LayerRecord;
use crate::store::LayerStore;

/// One history entry of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    /// When it was made (RFC 3339, as the config says).
    #[serde(default)]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// A free comment (`commit --message`).
    #[serde(default)]
    pub comment: Option<String>,
    /// True when it made no layer.
    #[serde(default)]
    pub empty_layer: bool,
    /// Index into [`ImageHistory::layers`] (bottom = 0) of the layer it made; filled in
    /// by [`LayerStore::image_history`], `None` for empty-layer entries.
    #[serde(skip)]
    pub layer: Option<usize>,
}

/// What [`LayerStore::image_history`] returns.
#[derive(Debug, Clone)]
pub struct ImageHistory {
    /// The image.
    pub id: ImageId,
    /// Its layers, bottom to top (each with its recorded size).
    pub layers: Vec<LayerRecord>,
    /// The config's history entries, oldest first, matched to layers.
    pub entries: Vec<HistoryEntry>,
}

#[derive(Deserialize)]
struct WithHistory {
    #[serde(default)]
    history: Option<Vec<HistoryEntry>>,
}

impl LayerStore {
    /// The history of image `reference` (see the module doc). Reads only metadata: the
    /// config and one layer record per layer.
    pub fn image_history(&self, reference: &str) -> Result<ImageHistory> {
        let id = self.resolve_image(reference)?;
        let img = self.image(&id)?;
        let layers = match img.top_layer() {
            Some(top) => self.layer_chain(top)?,
            None => Vec::new(),
        };
        let config = self.image_config(&id)?;
        let file = self.images_dir().join(id.hex()).join("config.json");
        let parsed: WithHistory =
            serde_json::from_slice(&config).map_err(|e| StoreError::BadJson {
                file,
                what: "image config history".into(),
                source: e,
            })?;
        let mut entries = parsed.history.unwrap_or_default();
        let mut next = 0;
        for e in &mut entries {
            if !e.empty_layer && next < layers.len() {
                e.layer = Some(next);
                next += 1;
            }
        }
        for i in next..layers.len() {
            entries.push(HistoryEntry {
                layer: Some(i),
                ..Default::default()
            });
        }
        Ok(ImageHistory {
            id,
            layers,
            entries,
        })
    }
}
