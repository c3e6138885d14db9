//! Disk usage (`docker system df -v`): per image its size, the part only it uses and
//! the part it shares with other images; per container the bytes of its changes;
//! totals.
//!
//! Cost: O(layers) metadata reads (each layer's `size`, recorded when it was imported or
//! committed: content bytes applied, moby's "size") plus one
//! [`driver_core::Driver::diff_size`] per container, which is O(changes) where the
//! driver has a native diff (overlay2's upper dir) and a walk of both trees on vfs. No
//! read-only layer is ever walked.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ids::{ChainId, ContainerName, ImageId};
use crate::store::LayerStore;

/// One image's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    /// The image.
    pub id: ImageId,
    /// Its names.
    pub names: Vec<String>,
    /// Sum of its layers' sizes (bytes).
    pub size: u64,
    /// Bytes of its layers no other image uses.
    pub unique_size: u64,
    /// Bytes of its layers other images use too (`size - unique_size`).
    pub shared_size: u64,
    /// Containers created from it.
    pub containers: usize,
}

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The container.
    pub name: ContainerName,
    /// Its image.
    pub image: ImageId,
    /// Bytes of regular-file content its changes hold (the driver's `diff_size` of the
    /// read-write layer against the init layer).
    pub rw_size: u64,
}

/// What [`LayerStore::disk_usage`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Every image, sorted by id.
    pub images: Vec<ImageUsage>,
    /// Every container, sorted by name.
    pub containers: Vec<ContainerUsage>,
    /// Layers in the layer database (used by an image or not).
    pub layers: usize,
    /// Sum of every layer's size, each layer once (bytes).
    pub layers_size: u64,
    /// Sum of the containers' `rw_size` (bytes).
    pub rw_size: u64,
}

impl LayerStore {
    /// Disk usage of the store (see the module doc).
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let layers = self.layers()?;
        let sizes: BTreeMap<ChainId, u64> = layers
            .iter()
            .map(|l| (l.chain_id.clone(), l.size))
            .collect();
        let images = self.images()?;
        let mut users: BTreeMap<&ChainId, usize> = BTreeMap::new();
        for i in &images {
            for c in &i.chain {
                *users.entry(c).or_default() += 1;
            }
        }
        let containers = self.containers()?;
        let mut image_usage = Vec::new();
        for i in &images {
            let (mut size, mut unique_size) = (0, 0);
            for c in &i.chain {
                let s = match sizes.get(c) {
                    Some(s) => *s,
                    None => self.layer(c)?.size, // reports the missing layer
                };
                size += s;
                if users.get(c) == Some(&1) {
                    unique_size += s;
                }
            }
            image_usage.push(ImageUsage {
                id: i.id.clone(),
                names: i.names.clone(),
                size,
                unique_size,
                shared_size: size - unique_size,
                containers: containers.iter().filter(|c| c.image == i.id).count(),
            });
        }
        let mut container_usage = Vec::new();
        for c in &containers {
            let rw_size = self.driver.diff_size(&c.mount_id, Some(&c.init_id))?;
            container_usage.push(ContainerUsage {
                name: c.name.clone(),
                image: c.image.clone(),
                rw_size,
            });
        }
        Ok(DiskUsage {
            layers: layers.len(),
            layers_size: sizes.values().sum(),
            rw_size: container_usage.iter().map(|c| c.rw_size).sum(),
            images: image_usage,
            containers: container_usage,
        })
    }
}
