//! The layer database: `layerdb/sha256/<chain hex>/{diff,size,cache-id,parent}`.

use std::path::PathBuf;

use driver_core::LayerId;

use crate::error::{Result, StoreError};
use crate::ids::{ChainId, DiffId};
use crate::store::LayerStore;
use crate::writeset::{list_dir, publish, read_field, read_optional, remove_entry};

/// One layer of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// ChainID: the layer with all its ancestors.
    pub chain_id: ChainId,
    /// DiffID: sha256 of the layer's uncompressed tar.
    pub diff_id: DiffId,
    /// The driver's id of the layer's directory.
    pub cache_id: LayerId,
    /// The ChainID of the layer below, `None` for a base layer.
    pub parent: Option<ChainId>,
    /// Content bytes applied (moby's "size").
    pub size: u64,
}

impl LayerStore {
    fn layer_path(&self, chain: &ChainId) -> PathBuf {
        self.layerdb_dir().join(chain.hex())
    }

    /// Whether the layer database holds `chain`.
    pub fn has_layer(&self, chain: &ChainId) -> bool {
        self.layer_path(chain).is_dir()
    }

    /// Reads the record of `chain`.
    pub fn layer(&self, chain: &ChainId) -> Result<LayerRecord> {
        let dir = self.layer_path(chain);
        if !dir.is_dir() {
            return Err(StoreError::LayerNotFound {
                chain: chain.to_string(),
            });
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            path: dir.clone(),
            reason,
        };
        let diff_id =
            DiffId::new(&read_field(&dir, "diff")?).map_err(|e| corrupt(e.to_string()))?;
        let cache_id =
            LayerId::new(read_field(&dir, "cache-id")?).map_err(|e| corrupt(e.to_string()))?;
        let size_s = read_field(&dir, "size")?;
        let size = size_s
            .parse::<u64>()
            .map_err(|_| corrupt(format!("size {size_s:?} is not a number")))?;
        let parent = match read_optional(&dir, "parent")? {
            Some(p) => Some(ChainId::new(&p).map_err(|e| corrupt(e.to_string()))?),
            None => None,
        };
        let want = ChainId::of(parent.as_ref(), &diff_id);
        if &want != chain {
            return Err(corrupt(format!(
                "parent and diff give chain id {want}, not the directory's {chain}"
            )));
        }
        Ok(LayerRecord {
            chain_id: chain.clone(),
            diff_id,
            cache_id,
            parent,
            size,
        })
    }

    /// Every layer of the database, sorted by chain id.
    pub fn layers(&self) -> Result<Vec<LayerRecord>> {
        let mut out = Vec::new();
        for name in list_dir(&self.layerdb_dir())? {
            let Ok(chain) = ChainId::from_hex(&name) else {
                tracing::warn!(name, "ignoring unexpected entry in layerdb");
                continue;
            };
            out.push(self.layer(&chain)?);
        }
        Ok(out)
    }

    /// The chain of `top`, bottom to top.
    pub fn layer_chain(&self, top: &ChainId) -> Result<Vec<LayerRecord>> {
        let mut out = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let rec = self.layer(&c)?;
            cur = rec.parent.clone();
            out.push(rec);
        }
        out.reverse();
        Ok(out)
    }

    /// Publishes a layer record atomically, with `extra` = (name, fsynced file in
    /// `tmp/`) moved into the entry (the tar-split metadata).
    pub(crate) fn write_layer_with(
        &self,
        rec: &LayerRecord,
        extra: Option<(&str, &std::path::Path)>,
    ) -> Result<()> {
        let size = rec.size.to_string();
        let mut files: Vec<(&str, &[u8])> = vec![
            ("diff", rec.diff_id.as_str().as_bytes()),
            ("size", size.as_bytes()),
            ("cache-id", rec.cache_id.as_str().as_bytes()),
        ];
        if let Some(p) = &rec.parent {
            files.push(("parent", p.as_str().as_bytes()));
        }
        publish(
            &self.tmp_dir(),
            &self.layer_path(&rec.chain_id),
            &files,
            extra,
        )
    }

    /// Removes a layer: metadata first (so a crash leaves an orphan driver layer, which
    /// `check` finds, never a record pointing at nothing), then the driver's layer.
    pub(crate) fn remove_layer(&self, rec: &LayerRecord) -> Result<()> {
        remove_entry(&self.tmp_dir(), &self.layer_path(&rec.chain_id))?;
        match self.driver.remove(&rec.cache_id) {
            Ok(()) => Ok(()),
            Err(driver_core::DriverError::NotFound { .. }) => {
                tracing::warn!(cache_id = %rec.cache_id, "driver layer already gone");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
