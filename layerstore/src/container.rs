//! Containers: `containers/<name>/{mount-id,init-id,parent,image}` plus the driver's
//! init layer `<mount-id>-init` and read-write layer `<mount-id>`.

use std::path::PathBuf;

use driver_core::fsutil::write_atomic;
use driver_core::{CreateOpts, DriverError, LayerId, MountOpts};

use crate::error::{Result, StoreError};
use crate::ids::{ChainId, ContainerName, ImageId};
use crate::initlayer::{build_init_tar_for_host, validate_hostname};
use crate::store::LayerStore;
use crate::writeset::{list_dir, publish, read_field, read_optional, remove_entry, remove_logged};

/// Where the last mount's path is remembered, for `ps` (not part of the write-set: it
/// changes with every mount and is only trusted while the driver counts a mount).
const MOUNTPOINT_FILE: &str = "mountpoint";

/// One container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Its name.
    pub name: ContainerName,
    /// The read-write layer's id in the driver.
    pub mount_id: LayerId,
    /// The init layer's id (`<mount-id>-init`).
    pub init_id: LayerId,
    /// ChainID of the image's top layer (`None` for an image without layers).
    pub parent: Option<ChainId>,
    /// The image it was created from.
    pub image: ImageId,
}

/// A container with its mount state, for `ps`.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    /// The record.
    pub record: ContainerRecord,
    /// References held by `mount`.
    pub mount_count: u32,
    /// Where it is mounted (when `mount_count > 0`).
    pub mountpoint: Option<PathBuf>,
}

impl LayerStore {
    fn container_path(&self, name: &ContainerName) -> PathBuf {
        self.containers_dir().join(name.as_str())
    }

    /// Reads container `name`.
    pub fn container(&self, name: &ContainerName) -> Result<ContainerRecord> {
        let dir = self.container_path(name);
        if !dir.is_dir() {
            return Err(StoreError::ContainerNotFound {
                name: name.to_string(),
            });
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            path: dir.clone(),
            reason,
        };
        let mount_id =
            LayerId::new(read_field(&dir, "mount-id")?).map_err(|e| corrupt(e.to_string()))?;
        let init_id =
            LayerId::new(read_field(&dir, "init-id")?).map_err(|e| corrupt(e.to_string()))?;
        let image =
            ImageId::new(&read_field(&dir, "image")?).map_err(|e| corrupt(e.to_string()))?;
        let parent = match read_optional(&dir, "parent")? {
            Some(p) => Some(ChainId::new(&p).map_err(|e| corrupt(e.to_string()))?),
            None => None,
        };
        Ok(ContainerRecord {
            name: name.clone(),
            mount_id,
            init_id,
            parent,
            image,
        })
    }

    /// Every container, sorted by name.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        for n in list_dir(&self.containers_dir())? {
            let Ok(name) = ContainerName::new(&n) else {
                tracing::warn!(name = n, "ignoring unexpected entry in containers/");
                continue;
            };
            out.push(self.container(&name)?);
        }
        Ok(out)
    }

    /// Every container with its mount state.
    pub fn container_statuses(&self) -> Result<Vec<ContainerStatus>> {
        self.containers()?
            .into_iter()
            .map(|record| self.status_of(record))
            .collect()
    }

    /// Container `name` with its mount state. Errors: not found, invalid name.
    pub fn container_status(&self, name: &str) -> Result<ContainerStatus> {
        let name = ContainerName::new(name)?;
        self.status_of(self.container(&name)?)
    }

    fn status_of(&self, record: ContainerRecord) -> Result<ContainerStatus> {
        let mount_count = self.driver.mount_count(&record.mount_id).unwrap_or(0);
        let mountpoint = if mount_count > 0 {
            read_optional(&self.container_path(&record.name), MOUNTPOINT_FILE)?.map(PathBuf::from)
        } else {
            None
        };
        Ok(ContainerStatus {
            record,
            mount_count,
            mountpoint,
        })
    }

    /// Creates container `name` from image `image_ref`: init layer on the image's top
    /// layer, read-write layer on top, then the metadata. Nothing is left on error.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn create_container(&self, name: &str, image_ref: &str) -> Result<ContainerRecord> {
        self.create_container_with_hostname(name, image_ref, None)
    }

    /// [`Self::create_container`] with `hostname` (checked by
    /// [`crate::initlayer::validate_hostname`]; `None`: the container name) in the init
    /// layer's `/etc/hostname` and `/etc/hosts`, so they never enter `diff` or `commit`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn create_container_with_hostname(
        &self,
        name: &str,
        image_ref: &str,
        hostname: Option<&str>,
    ) -> Result<ContainerRecord> {
        self.require_exclusive("create")?;
        let name = ContainerName::new(name)?;
        if let Some(h) = hostname {
            validate_hostname(h)?;
        }
        if self.container_path(&name).exists() {
            return Err(StoreError::ContainerExists {
                name: name.to_string(),
            });
        }
        let image = self.resolve_image(image_ref)?;
        let img = self.image(&image)?;
        let chain = match img.top_layer() {
            Some(top) => self.layer_chain(top)?,
            None => Vec::new(),
        };
        let top_cache = chain.last().map(|l| l.cache_id.clone());
        // What the image's root looks like, for the init layer's directories.
        let image_root = match &top_cache {
            Some(top) => Some(self.driver.stack(top)?),
            None => None,
        };
        let mount_id = LayerId::random();
        let init_id = mount_id.init_of();
        let record = ContainerRecord {
            name: name.clone(),
            mount_id: mount_id.clone(),
            init_id: init_id.clone(),
            parent: img.top_layer().cloned(),
            image,
        };
        let mut created: Vec<LayerId> = Vec::new();
        // Listed before they exist: a kill before the publish leaves a dead lease the
        // next start removes them by.
        let lease = self.work_lease("create")?;
        lease.add_layer(&init_id)?;
        lease.add_layer(&mount_id)?;
        let result = (|| -> Result<()> {
            let init_tar =
                build_init_tar_for_host(hostname.unwrap_or(name.as_str()), image_root.as_ref())?;
            self.driver
                .create(&init_id, top_cache.as_ref(), &CreateOpts::read_write())?;
            created.push(init_id.clone());
            self.driver
                .apply_diff(&init_id, top_cache.as_ref(), &mut &init_tar[..])?;
            self.driver
                .create(&mount_id, Some(&init_id), &CreateOpts::read_write())?;
            created.push(mount_id.clone());
            self.sync_content()?;
            let mut files: Vec<(&str, &[u8])> = vec![
                ("mount-id", mount_id.as_str().as_bytes()),
                ("init-id", init_id.as_str().as_bytes()),
                ("image", record.image.as_str().as_bytes()),
            ];
            if let Some(p) = &record.parent {
                files.push(("parent", p.as_str().as_bytes()));
            }
            publish(&self.tmp_dir(), &self.container_path(&name), &files, None)
        })();
        if let Err(e) = result {
            for id in created.iter().rev() {
                if let Err(re) = self.driver.remove(id) {
                    tracing::warn!(layer = %id, error = %re, "rollback of container layer failed");
                }
            }
            self.end_lease(lease);
            return Err(e);
        }
        self.end_lease(lease);
        tracing::debug!(container = %name, mount_id = %mount_id, "container created");
        Ok(record)
    }

    /// Mounts container `name` (one more reference) and returns its root path.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn mount_container(&self, name: &str) -> Result<PathBuf> {
        self.require_exclusive("mount")?;
        let name = ContainerName::new(name)?;
        let rec = self.container(&name)?;
        let path = self.driver.mount(&rec.mount_id, &MountOpts::default())?;
        // Informational only (`ps` re-derives the count from the driver), so a repeated
        // mount of a mounted container does not pay two fsyncs to rewrite the same bytes.
        let mp = self.container_path(&name).join(MOUNTPOINT_FILE);
        let text = path.to_string_lossy();
        if std::fs::read(&mp).ok().as_deref() != Some(text.as_bytes()) {
            write_atomic(&mp, text.as_bytes())?;
        }
        Ok(path)
    }

    /// Drops one mount reference of container `name`; returns the references left.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn unmount_container(&self, name: &str) -> Result<u32> {
        self.require_exclusive("umount")?;
        let name = ContainerName::new(name)?;
        let rec = self.container(&name)?;
        self.driver.unmount(&rec.mount_id)?;
        let left = self.driver.mount_count(&rec.mount_id)?;
        if left == 0 {
            remove_logged(&self.container_path(&name).join(MOUNTPOINT_FILE));
        }
        Ok(left)
    }

    /// Removes container `name`. Refuses a mounted container unless `force`, which
    /// drops every mount reference first.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn remove_container(&self, name: &str, force: bool) -> Result<ContainerRecord> {
        self.require_exclusive("rm")?;
        let name = ContainerName::new(name)?;
        let rec = self.container(&name)?;
        // A container whose read-write layer is gone (`check` reports it) is removed
        // like any other: its missing layer has no mounts. Asking the count of it
        // failed with "layer .. does not exist" (exit 3), so `rm` could not remove it.
        let count = match self.driver.mount_count(&rec.mount_id) {
            Ok(n) => n,
            Err(DriverError::NotFound { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        if count > 0 {
            if !force {
                return Err(StoreError::ContainerMounted {
                    name: name.to_string(),
                    count,
                });
            }
            for _ in 0..count {
                self.driver.unmount(&rec.mount_id)?;
            }
            let left = self.driver.mount_count(&rec.mount_id)?;
            if left > 0 {
                return Err(StoreError::ContainerMounted {
                    name: name.to_string(),
                    count: left,
                });
            }
        }
        // Metadata first; the layers are listed in a lease before, so a crash after it
        // leaves a dead lease that the next start finishes the removal by.
        let lease = self.work_lease("rm")?;
        lease.add_layer(&rec.mount_id)?;
        lease.add_layer(&rec.init_id)?;
        remove_entry(&self.tmp_dir(), &self.container_path(&name))?;
        for id in [&rec.mount_id, &rec.init_id] {
            match self.driver.remove(id) {
                Ok(()) | Err(DriverError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.end_lease(lease);
        tracing::debug!(container = %name, "container removed");
        Ok(rec)
    }
}
