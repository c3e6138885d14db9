//! # driver-vfs: every layer a full copy of its parent
//!
//! The simplest storage driver and the fallback that works on any filesystem: a layer
//! is a plain directory holding the layer's complete root filesystem. Creating a child
//! copies the parent (reflink where the filesystem can, else in-kernel
//! `copy_file_range`, on a few threads), so there is no mount at all: "mounting" returns
//! the directory and only counts references. Slow to create and heavy on disk, but
//! simple and exact, like moby's vfs driver.
//!
//! ## On-disk layout
//! ```text
//! <home>/                       the driver home, <root>/vfs
//!   dir/<id>/                   layer <id>: its full root filesystem
//!   dir/.<id>-tmp-<pid>-<rand>/ a layer being created (copied), renamed to <id> when done;
//!                               left alone by cleanup while process <pid> lives
//!   dir/.<id>-removing/         a layer being removed
//!   refs/<id>                   mount reference count: `<count> <boot id>`; absent = 0
//!   refs/.lock                  flock serialising count updates
//! ```
//! Temporary names start with `.`, which no [`LayerId`] may, so they can never collide
//! with a layer; [`Driver::cleanup`](driver_core::Driver::cleanup) deletes them.
//!
//! ## Locking and crash rules
//! - Calls that create, apply or remove a layer are serialised by the caller (the layer
//!   store's lock); the driver takes no lock of its own for them.
//! - `mount`/`unmount`/`mount_count` read-modify-write `refs/<id>` under an exclusive
//!   flock of `refs/.lock`, so concurrent processes count correctly. vfs has no kernel
//!   mount: its counts use [`Liveness::ThisBoot`](driver_core::refcount::Liveness), so
//!   a count written under another boot id reads as 0 (a reboot unmounts everything).
//! - `create` copies into a temp directory and renames it into place
//!   (`RENAME_NOREPLACE`, then fsync of `dir/`): a crash leaves no half layer under a
//!   real id. `remove` renames to the `-removing` name first, then deletes.

use std::fs;
use std::path::{Path, PathBuf};

use driver_core::refcount::MountRefs;
use driver_core::{DriverEntry, DriverError, DriverOptions, IoContext, LayerId, Result};

mod copy;
mod driver;
mod status;

pub use copy::{copy_tree, CopyStats};

/// Registry name.
pub const NAME: &str = "vfs";

/// Preference when picking a default driver: vfs is the last resort.
pub const PRIORITY: u32 = 100;

/// The vfs driver. A cheap handle (paths only): clone it freely.
#[derive(Debug, Clone)]
pub struct VfsDriver {
    home: PathBuf,
    dir: PathBuf,
    refs: MountRefs,
}

impl VfsDriver {
    /// Opens (creating if needed) the driver tree at `home`. vfs knows no driver
    /// options: any key is an [`DriverError::InvalidOption`].
    pub fn new(home: &Path, options: &DriverOptions) -> Result<Self> {
        if let Some(key) = options.keys().next() {
            return Err(DriverError::InvalidOption {
                key: key.clone(),
                reason: "the vfs driver has no options".into(),
            });
        }
        let dir = home.join("dir");
        fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        let refs = home.join("refs");
        fs::create_dir_all(&refs).ctx("create directory", &refs)?;
        Ok(VfsDriver {
            home: home.to_path_buf(),
            refs: MountRefs::new(refs),
            dir,
        })
    }

    /// `dir/<id>`.
    fn path_of(&self, id: &LayerId) -> PathBuf {
        self.dir.join(id.as_str())
    }
}

/// The registry entry for vfs.
pub fn entry() -> DriverEntry {
    DriverEntry {
        name: NAME,
        priority: PRIORITY,
        factory: |home, options| Ok(Box::new(VfsDriver::new(home, options)?)),
        probe,
    }
}

/// vfs works on any filesystem we can create directories and files in.
fn probe(home: &Path) -> Result<()> {
    let unusable = |reason: String| DriverError::NotSupported {
        driver: NAME.into(),
        reason,
    };
    fs::create_dir_all(home)
        .map_err(|e| unusable(format!("cannot create {}: {e}", home.display())))?;
    let probe = home.join(format!(".probe-{}", driver_core::id::random_hex(6)));
    fs::write(&probe, b"")
        .map_err(|e| unusable(format!("cannot write in {}: {e}", home.display())))?;
    fs::remove_file(&probe).ctx("remove probe file", &probe)
}
