//! Images: `images/sha256/<id hex>/{config.json,names}`; lookup, naming, removal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use driver_core::fsutil::write_atomic;
use serde::Deserialize;

use crate::error::{IoCtx, Result, StoreError};
use crate::ids::{same_image_name, validate_image_name, ChainId, DiffId, ImageId};
use crate::layer::LayerRecord;
use crate::store::LayerStore;
use crate::writeset::{list_dir, publish, read_optional, remove_entry};

/// One image of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// sha256 of the config JSON.
    pub id: ImageId,
    /// Names (`busybox:latest`), sorted.
    pub names: Vec<String>,
    /// The config's `rootfs.diff_ids`, bottom to top.
    pub diff_ids: Vec<DiffId>,
    /// ChainIDs of every layer, bottom to top.
    pub chain: Vec<ChainId>,
}

impl ImageRecord {
    /// ChainID of the top layer (`None` for an image without layers).
    pub fn top_layer(&self) -> Option<&ChainId> {
        self.chain.last()
    }
}

/// What `remove_image` did.
#[derive(Debug, Clone)]
pub struct RemovedImage {
    /// The image concerned.
    pub id: ImageId,
    /// Names taken away: only the name given when the image keeps others, else all of
    /// the image's names.
    pub untagged: Vec<String>,
    /// Whether the image itself was removed (false: only `untagged` went).
    pub deleted: bool,
    /// Layers freed (no other image used them), top first.
    pub layers: Vec<ChainId>,
}

#[derive(Deserialize)]
struct MinimalConfig {
    rootfs: MinimalRootFs,
}

#[derive(Deserialize)]
struct PlatformOfConfig {
    #[serde(default)]
    os: Option<String>,
}

/// [`config_diff_ids`] of a config being imported, which must also be for Linux: its
/// `os`, when set, must be `linux` (OCI image-spec config `os`; a Windows image's layers
/// hold `Files/` and `Hives/`, not a root filesystem). A config without `os` is taken as
/// Linux, as Docker's old configs are. Errors: [`StoreError::UnsupportedPlatform`]
/// (exit 6), else those of [`config_diff_ids`].
pub(crate) fn importable_config_diff_ids(file: &Path, config: &[u8]) -> Result<Vec<DiffId>> {
    check_config_os(file, config)?;
    config_diff_ids(file, config)
}

fn check_config_os(file: &Path, config: &[u8]) -> Result<()> {
    let c: PlatformOfConfig = serde_json::from_slice(config).map_err(|e| StoreError::BadJson {
        file: file.to_owned(),
        what: "image config".into(),
        source: e,
    })?;
    match c.os {
        Some(os) if os != "linux" => Err(StoreError::UnsupportedPlatform {
            file: file.to_owned(),
            os,
        }),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct MinimalRootFs {
    #[serde(rename = "type")]
    typ: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The `rootfs.diff_ids` of an image config (OCI or Docker), validated.
pub(crate) fn config_diff_ids(file: &Path, config: &[u8]) -> Result<Vec<DiffId>> {
    let c: MinimalConfig = serde_json::from_slice(config).map_err(|e| StoreError::BadJson {
        file: file.to_owned(),
        what: "image config".into(),
        source: e,
    })?;
    if c.rootfs.typ != "layers" {
        return Err(StoreError::BadArchive {
            file: file.to_owned(),
            reason: format!(
                "image config rootfs.type is {:?}, not \"layers\"",
                c.rootfs.typ
            ),
        });
    }
    c.rootfs
        .diff_ids
        .iter()
        .map(|d| DiffId::new(d))
        .collect::<Result<Vec<_>>>()
}

impl LayerStore {
    fn image_path(&self, id: &ImageId) -> PathBuf {
        self.images_dir().join(id.hex())
    }

    /// Reads image `id`.
    pub fn image(&self, id: &ImageId) -> Result<ImageRecord> {
        let dir = self.image_path(id);
        if !dir.is_dir() {
            return Err(StoreError::ImageNotFound {
                reference: id.to_string(),
            });
        }
        let cfg_path = dir.join("config.json");
        let config = std::fs::read(&cfg_path).ctx("read", &cfg_path)?;
        let diff_ids = config_diff_ids(&cfg_path, &config)?;
        let names = read_optional(&dir, "names")?
            .map(|s| {
                s.lines()
                    .map(str::to_owned)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(ImageRecord {
            id: id.clone(),
            names,
            chain: ChainId::chain(&diff_ids),
            diff_ids,
        })
    }

    /// The raw config JSON of image `id`.
    pub fn image_config(&self, id: &ImageId) -> Result<Vec<u8>> {
        let p = self.image_path(id).join("config.json");
        std::fs::read(&p).ctx("read", &p)
    }

    /// Every image, sorted by id.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for name in list_dir(&self.images_dir())? {
            let Ok(id) = ImageId::from_hex(&name) else {
                tracing::warn!(name, "ignoring unexpected entry in images/");
                continue;
            };
            out.push(self.image(&id)?);
        }
        Ok(out)
    }

    /// Sum of the sizes of the image's layers.
    pub fn image_size(&self, img: &ImageRecord) -> Result<u64> {
        let mut total = 0;
        for c in &img.chain {
            total += self.layer(c)?.size;
        }
        Ok(total)
    }

    /// Finds an image by name (`busybox` also matches `busybox:latest`), full id (with
    /// or without `sha256:`) or unique id prefix.
    pub fn resolve_image(&self, reference: &str) -> Result<ImageId> {
        self.resolve_image_ref(reference).map(|(id, _)| id)
    }

    /// [`Self::resolve_image`], also returning the name that matched, if any.
    pub(crate) fn resolve_image_ref(&self, reference: &str) -> Result<(ImageId, Option<String>)> {
        let images = self.images()?;
        // The exact name first (a store written before names were compared in
        // canonical form may hold both `foo` and `foo:latest`), then its equivalents.
        for same in [
            &(|n: &str| n == reference) as &dyn Fn(&str) -> bool,
            &|n: &str| same_image_name(n, reference),
        ] {
            for i in &images {
                if let Some(n) = i.names.iter().find(|n| same(n)) {
                    return Ok((i.id.clone(), Some(n.clone())));
                }
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let hits: Vec<_> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            match hits.len() {
                0 => {}
                1 => return Ok((hits[0].id.clone(), None)),
                n => {
                    return Err(StoreError::AmbiguousImage {
                        reference: reference.to_owned(),
                        count: n,
                    })
                }
            }
        }
        Err(StoreError::ImageNotFound {
            reference: reference.to_owned(),
        })
    }

    /// Records an image for `config` (all its layers must be in the layer database) and
    /// gives it `names`, taking each name away from any other image that had it.
    /// Idempotent: the same config again only adds names.
    pub(crate) fn register_image(
        &self,
        file: &Path,
        config: &[u8],
        names: &[String],
    ) -> Result<ImageId> {
        for n in names {
            validate_image_name(n)?;
        }
        let _g = self.exclusive("import")?;
        let diff_ids = config_diff_ids(file, config)?;
        for c in ChainId::chain(&diff_ids) {
            if !self.has_layer(&c) {
                return Err(StoreError::LayerNotFound {
                    chain: c.to_string(),
                });
            }
        }
        let id = ImageId::of_bytes(config);
        // Move names: drop them from other images first.
        if !names.is_empty() {
            for other in self.images()? {
                if other.id == id {
                    continue;
                }
                let kept: Vec<String> = other
                    .names
                    .iter()
                    .filter(|n| !names.iter().any(|m| same_image_name(m, n)))
                    .cloned()
                    .collect();
                if kept.len() != other.names.len() {
                    tracing::debug!(image = %other.id, "name moved away from image");
                    self.write_names(&other.id, &kept)?;
                }
            }
        }
        let dir = self.image_path(&id);
        if dir.is_dir() {
            let old: BTreeSet<String> = self.image(&id)?.names.into_iter().collect();
            // A new name replaces an equivalent old one (`foo` -> `foo:latest`).
            let mut all: BTreeSet<String> = old
                .iter()
                .filter(|o| !names.iter().any(|m| m != *o && same_image_name(m, o)))
                .cloned()
                .collect();
            all.extend(names.iter().cloned());
            if all != old {
                self.write_names(&id, &all.into_iter().collect::<Vec<_>>())?;
            }
        } else {
            let set: BTreeSet<&String> = names.iter().collect();
            let names_text = join_names(set.into_iter());
            publish(
                &self.tmp_dir(),
                &dir,
                &[("config.json", config), ("names", names_text.as_bytes())],
                None,
            )?;
        }
        Ok(id)
    }

    pub(crate) fn write_names(&self, id: &ImageId, names: &[String]) -> Result<()> {
        let text = join_names(names.iter());
        write_atomic(&self.image_path(id).join("names"), text.as_bytes())?;
        Ok(())
    }

    /// Gives image `reference` the name `name` (taken away from any image that had it).
    /// Idempotent. Errors: [`StoreError::InvalidId`] for a bad name, not found /
    /// ambiguous for the reference.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn tag_image(&self, reference: &str, name: &str) -> Result<ImageId> {
        self.require_exclusive("tag")?;
        crate::ids::validate_new_image_name(name)?;
        let id = self.resolve_image(reference)?;
        let config = self.image_config(&id)?;
        let file = self.image_path(&id).join("config.json");
        self.register_image(&file, &config, &[name.to_owned()])
    }

    /// Takes name `name` (`busybox` also matches `busybox:latest`) away from its image;
    /// the image stays, even without names. Returns the image and the name removed.
    /// Errors: [`StoreError::ImageNotFound`] when no image has that name,
    /// [`StoreError::NotAName`] (also "not found") when `name` is an image's id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn untag_image(&self, name: &str) -> Result<(ImageId, String)> {
        self.require_exclusive("untag")?;
        let (id, matched) = self.resolve_image_ref(name)?;
        let Some(matched) = matched else {
            let names = self.image(&id)?.names;
            return Err(StoreError::NotAName {
                reference: name.to_owned(),
                id: id.to_string(),
                names: if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
            });
        };
        let img = self.image(&id)?;
        let kept: Vec<String> = img.names.into_iter().filter(|n| *n != matched).collect();
        self.write_names(&id, &kept)?;
        Ok((id, matched))
    }

    /// Removes image `reference` (Docker's `rmi`): given a name of an image that has
    /// other names, only that name goes ([`Self::untag_image`]); otherwise (its last
    /// name, or an id) the image goes under all its names, refused when a container
    /// uses it, and every layer of its chain that no other image (or container) uses
    /// is freed, top down.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn remove_image(&self, reference: &str) -> Result<RemovedImage> {
        self.require_exclusive("rmi")?;
        let (id, matched) = self.resolve_image_ref(reference)?;
        let img = self.image(&id)?;
        if let Some(name) = matched {
            if img.names.len() > 1 {
                self.untag_image(&name)?;
                return Ok(RemovedImage {
                    id,
                    untagged: vec![name],
                    deleted: false,
                    layers: Vec::new(),
                });
            }
        }
        let users: Vec<String> = self
            .containers()?
            .into_iter()
            .filter(|c| c.image == id)
            .map(|c| c.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(StoreError::ImageInUse {
                image: id.to_string(),
                containers: users,
            });
        }
        // Chains still needed by other images and by containers (and their ancestors).
        let mut keep: BTreeSet<ChainId> = BTreeSet::new();
        for other in self.images()? {
            if other.id != id {
                keep.extend(other.chain.iter().cloned());
            }
        }
        for c in self.containers()? {
            if let Some(p) = &c.parent {
                for l in self.layer_chain(p)? {
                    keep.insert(l.chain_id);
                }
            }
        }
        // And what a running import builds on.
        keep.extend(self.leased_chains()?);
        let mut to_free: Vec<LayerRecord> = Vec::new();
        for chain in img.chain.iter().rev() {
            if keep.contains(chain) {
                break; // everything below is an ancestor of a kept layer
            }
            to_free.push(self.layer(chain)?);
        }
        // Listed before anything goes: a kill mid-way leaves a dead lease that the next
        // start finishes the removal by.
        let lease = self.work_lease("rmi")?;
        for rec in &to_free {
            lease.add_layer(&rec.cache_id)?;
        }
        remove_entry(&self.tmp_dir(), &self.image_path(&id))?;
        let mut freed = Vec::new();
        for rec in &to_free {
            self.remove_layer(rec)?;
            freed.push(rec.chain_id.clone());
        }
        self.end_lease(lease);
        tracing::debug!(image = %id, freed = freed.len(), "image removed");
        Ok(RemovedImage {
            id,
            untagged: img.names,
            deleted: true,
            layers: freed,
        })
    }
}

fn join_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut s = String::new();
    for n in names {
        s.push_str(n);
        s.push('\n');
    }
    s
}
