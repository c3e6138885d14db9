//! `docker save` archives: `manifest.json` = `[{Config, RepoTags, Layers, LayerSources}]`,
//! members `<id>/layer.tar` (legacy) or `blobs/sha256/<hex>` (Docker 25+). DiffIDs come
//! from the config's `rootfs.diff_ids` and every computed DiffID is checked against them;
//! members named by digest are checked against their name.

use std::collections::HashMap;

use serde::Deserialize;

use super::archive::Archive;
use super::names::{assign, EntryNames};
use super::{blob_hex, verify_bytes, Ctx, ImportOptions};
use crate::error::{Result, StoreError};
use crate::ids::ImageId;
use crate::image::importable_config_diff_ids;
use crate::store::LayerStore;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    layer_sources: Option<HashMap<String, serde_json::Value>>,
}

/// The expected digest of a `<hex>.json` config name.
fn config_hex(name: &str) -> Option<String> {
    if let Some(h) = blob_hex(name) {
        return Some(h);
    }
    let h = name.strip_suffix(".json")?;
    (h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| h.to_owned())
}

impl LayerStore {
    pub(crate) fn import_docker_save(
        &self,
        a: &Archive,
        opts: &ImportOptions<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<ImageId>> {
        let raw = a.read_small("manifest.json")?;
        let entries: Vec<ManifestEntry> =
            serde_json::from_slice(&raw).map_err(|e| StoreError::BadJson {
                file: a.path().to_owned(),
                what: "manifest.json".into(),
                source: e,
            })?;
        if entries.is_empty() {
            return Err(StoreError::BadArchive {
                file: a.path().to_owned(),
                reason: "manifest.json lists no image".into(),
            });
        }
        let entry_names: Vec<EntryNames> = entries
            .iter()
            .map(|e| EntryNames::from_repo_tags(e.repo_tags.as_deref().unwrap_or_default()))
            .collect();
        let names = assign(opts.name.as_deref(), &entry_names);
        let mut ids = Vec::new();
        for (entry, names) in entries.iter().zip(names) {
            let config = a.read_small(&entry.config)?;
            if let Some(hex) = config_hex(&entry.config) {
                verify_bytes(&format!("config {}", entry.config), a.path(), &config, &hex)?;
            }
            let diff_ids = importable_config_diff_ids(a.path(), &config)?;
            if diff_ids.len() != entry.layers.len() {
                return Err(StoreError::BadArchive {
                    file: a.path().to_owned(),
                    reason: format!(
                        "config {} lists {} diff ids but manifest.json {} layers",
                        entry.config,
                        diff_ids.len(),
                        entry.layers.len()
                    ),
                });
            }
            let blob_of = |i: usize| {
                let m = entry.layers[i].clone();
                let blob = blob_hex(&m).map(|h| (h, None));
                (m, blob)
            };
            self.import_chain(a, &diff_ids, &blob_of, ctx)?;
            ids.push(self.register_imported(a.path(), &config, names, ctx)?);
        }
        Ok(ids)
    }
}
