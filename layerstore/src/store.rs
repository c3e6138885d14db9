//! Opening a store: directories, the driver record, the store lock, startup cleanup.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use driver_core::fsutil::write_atomic;
use driver_core::Driver;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{IoCtx, Result, StoreError};
use crate::writeset::{list_dir, remove_logged};

/// How the store lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Readers (`images`, `layers`, `ps`, `info`, `check` without repair).
    Shared,
    /// Writers (`create`, `rm`, `rmi`, `mount`, `umount`, `commit`, `gc`,
    /// `check --repair`).
    Exclusive,
    /// No lock held while open: the operation takes the exclusive lock only for its
    /// short publishing steps ([`LayerStore::import`]; see [`crate::staging`]). Other
    /// writing operations refuse a store opened so.
    Staged,
}

/// When the store flushes layer content (`[store] sync` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `syncfs(2)` on the driver's filesystem before a layer or container is
    /// published, so metadata never outlives its data in a crash (the default).
    #[default]
    Filesystem,
    /// No syncfs: for throwaway stores (CI, benchmarks). A power loss can leave
    /// records whose content is incomplete; `check --verify-content` finds them.
    /// Metadata files are still written atomically (temp + rename).
    None,
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "filesystem" => Ok(SyncMode::Filesystem),
            "none" => Ok(SyncMode::None),
            other => Err(format!(
                "unknown sync mode {other:?} (expected \"filesystem\" or \"none\")"
            )),
        }
    }
}

/// The store lock while held by a [`LockMode::Staged`] store for one publishing step
/// (or nothing, when the store holds the exclusive lock already). Released on drop.
#[derive(Debug)]
pub(crate) struct ExclusiveGuard<'a> {
    held: Option<(Flock<File>, &'a AtomicBool)>,
}

impl Drop for ExclusiveGuard<'_> {
    fn drop(&mut self) {
        if let Some((_lock, flag)) = self.held.take() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

/// A layer store opened on a root directory with one driver, holding the store lock
/// until dropped.
#[derive(Debug)]
pub struct LayerStore {
    pub(crate) root: PathBuf,
    pub(crate) driver: Box<dyn Driver>,
    pub(crate) mode: LockMode,
    pub(crate) sync: SyncMode,
    /// Held for the whole life for Shared/Exclusive; None for Staged.
    _lock: Option<Flock<File>>,
    /// A Staged store holds the exclusive lock right now (an [`ExclusiveGuard`]).
    holding: AtomicBool,
}

/// The file recording which driver owns a root.
const DRIVER_FILE: &str = "driver";

impl LayerStore {
    /// The driver recorded in `<root>/driver`, if the root has one.
    pub fn recorded_driver(root: &Path) -> Result<Option<String>> {
        Self::check_root(root)?;
        crate::writeset::read_optional(root, DRIVER_FILE).map(|o| o.filter(|s| !s.is_empty()))
    }

    /// For a root that records no driver: [`StoreError::DriverUnrecorded`] when it
    /// nevertheless holds layer, image or container records (its `driver` file was lost),
    /// naming which of `driver_names` have a directory there. A new or empty root is Ok.
    pub fn check_unrecorded_root(root: &Path, driver_names: &[&str]) -> Result<()> {
        let has_records = ["layerdb/sha256", "images/sha256", "containers"]
            .iter()
            .any(|d| fs::read_dir(root.join(d)).is_ok_and(|mut rd| rd.next().is_some()));
        if !has_records {
            return Ok(());
        }
        let homes: Vec<&str> = driver_names
            .iter()
            .copied()
            .filter(|n| root.join(n).is_dir())
            .collect();
        Err(StoreError::DriverUnrecorded {
            root: root.to_owned(),
            homes: if homes.is_empty() {
                "none".to_owned()
            } else {
                homes.join(", ")
            },
        })
    }

    /// [`StoreError::RootNotDirectory`] (a configuration error) when `root` exists and is
    /// not a directory, or a component of it is a file (`--root /etc/passwd`);
    /// [`StoreError::RootDanglingSymlink`] when it is a symlink to nothing.
    pub fn check_root(root: &Path) -> Result<()> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => Err(StoreError::RootNotDirectory {
                root: root.to_owned(),
            }),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                Err(StoreError::RootNotDirectory {
                    root: root.to_owned(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs::read_link(root) {
                Ok(target) => Err(StoreError::RootDanglingSymlink {
                    root: root.to_owned(),
                    target,
                }),
                Err(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Opens (creating if needed) the store at `root` with `driver`, whose home must be
    /// `<root>/<driver name>`. Fails with [`StoreError::DriverMismatch`] when the root
    /// records another driver. With [`LockMode::Exclusive`] the store finishes
    /// interrupted work: empties `tmp/`, removes the staging layers of dead imports and
    /// runs the driver's cleanup.
    pub fn open(root: &Path, driver: Box<dyn Driver>, mode: LockMode) -> Result<LayerStore> {
        Self::open_inner(root, driver, mode, mode == LockMode::Exclusive)
    }

    /// Opens the store with the exclusive lock WITHOUT finishing interrupted work, so
    /// that [`LayerStore::repair`] sees (and lists) the leftovers it then removes.
    pub fn open_for_repair(root: &Path, driver: Box<dyn Driver>) -> Result<LayerStore> {
        Self::open_inner(root, driver, LockMode::Exclusive, false)
    }

    fn open_inner(
        root: &Path,
        driver: Box<dyn Driver>,
        mode: LockMode,
        finish_interrupted: bool,
    ) -> Result<LayerStore> {
        Self::check_root(root)?;
        fs::create_dir_all(root).ctx("create root", root)?;
        let root = fs::canonicalize(root).ctx("resolve root", root)?;
        crate::perms::make_private(&root)?;
        crate::perms::make_private(driver.home())?;
        let lock = match mode {
            LockMode::Shared => Some(lock_file(&root, FlockArg::LockShared)?),
            LockMode::Exclusive => Some(lock_file(&root, FlockArg::LockExclusive)?),
            LockMode::Staged => None,
        };
        // A Staged store records the driver (first use of a root) under the lock.
        let first_use = match &lock {
            Some(_) => None,
            None => Some(lock_file(&root, FlockArg::LockExclusive)?),
        };
        match Self::recorded_driver(&root)? {
            Some(rec) if rec != driver.name() => {
                return Err(StoreError::DriverMismatch {
                    root,
                    recorded: rec,
                    requested: driver.name().to_owned(),
                })
            }
            Some(_) => {}
            None => write_atomic(
                &root.join(DRIVER_FILE),
                format!("{}\n", driver.name()).as_bytes(),
            )?,
        }
        let store = LayerStore {
            root,
            driver,
            mode,
            sync: SyncMode::default(),
            _lock: lock,
            holding: AtomicBool::new(false),
        };
        for d in [
            store.layerdb_dir(),
            store.images_dir(),
            store.containers_dir(),
            store.tmp_dir(),
            store.staging_dir(),
        ] {
            fs::create_dir_all(&d).ctx("create directory", &d)?;
        }
        drop(first_use);
        if finish_interrupted {
            store.empty_tmp()?;
            store.finish_dead_leases()?;
            store.driver.cleanup()?;
        }
        tracing::debug!(root = %store.root.display(), driver = store.driver.name(), ?mode, "store opened");
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The driver.
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    /// How the lock is held.
    pub fn lock_mode(&self) -> LockMode {
        self.mode
    }

    /// Sets when layer content is flushed (see [`SyncMode`]).
    pub fn with_sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Refuses writing operation `op` unless the exclusive lock is held (for the whole
    /// operation, or by a Staged store for the current step).
    pub(crate) fn require_exclusive(&self, op: &'static str) -> Result<()> {
        match self.mode {
            LockMode::Exclusive => Ok(()),
            LockMode::Staged if self.holding.load(Ordering::SeqCst) => Ok(()),
            LockMode::Shared | LockMode::Staged => Err(StoreError::NeedsExclusiveLock { op }),
        }
    }

    /// Refuses operation `op` unless it may stage (Staged) or holds the exclusive lock.
    pub(crate) fn require_staged_or_exclusive(&self, op: &'static str) -> Result<()> {
        match self.mode {
            LockMode::Exclusive | LockMode::Staged => Ok(()),
            LockMode::Shared => Err(StoreError::NeedsExclusiveLock { op }),
        }
    }

    /// Takes the exclusive store lock for one publishing step of a Staged store (a
    /// no-op guard when the store holds it for its life). Blocks while another
    /// process holds the lock. Errors: [`StoreError::NeedsExclusiveLock`] on a Shared
    /// store; I/O naming the lock file.
    pub(crate) fn exclusive(&self, op: &'static str) -> Result<ExclusiveGuard<'_>> {
        match self.mode {
            LockMode::Exclusive => Ok(ExclusiveGuard { held: None }),
            LockMode::Shared => Err(StoreError::NeedsExclusiveLock { op }),
            LockMode::Staged if self.holding.load(Ordering::SeqCst) => {
                Ok(ExclusiveGuard { held: None })
            }
            LockMode::Staged => {
                let lock = lock_file(&self.root, FlockArg::LockExclusive)?;
                self.holding.store(true, Ordering::SeqCst);
                Ok(ExclusiveGuard {
                    held: Some((lock, &self.holding)),
                })
            }
        }
    }

    pub(crate) fn layerdb_dir(&self) -> PathBuf {
        self.root.join("layerdb/sha256")
    }
    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images/sha256")
    }
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes every leftover in `tmp/` (staging dirs, spooled input, entries moved
    /// aside for removal). Only with the exclusive lock: nobody else can be using it.
    pub(crate) fn empty_tmp(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        for name in list_dir(&tmp)? {
            tracing::debug!(name, "removing leftover from tmp/");
            remove_logged(&tmp.join(name));
        }
        Ok(())
    }

    /// Removes the leftovers in `tmp/` whose owner is gone ([`crate::owner`]): work in
    /// progress of a process staging without the store lock is kept.
    pub(crate) fn empty_tmp_dead(&self) -> Result<()> {
        let tmp = self.tmp_dir();
        for name in list_dir(&tmp)? {
            let p = tmp.join(name);
            if !crate::owner::owner_alive(&p) {
                remove_logged(&p);
            }
        }
        Ok(())
    }

    /// Flushes the filesystem holding the driver's tree (syncfs): layer content must be
    /// durable before the metadata that publishes it.
    /// With [`SyncMode::None`] it does nothing.
    pub(crate) fn sync_content(&self) -> Result<()> {
        if self.sync == SyncMode::None {
            return Ok(());
        }
        let home = self.driver.home();
        let f = File::open(home).ctx("open driver home", home)?;
        nix::unistd::syncfs(f.as_fd()).ctx("syncfs", home)
    }

    /// The filesystem type of the root (`ext4`, `xfs`, ...), for `info`.
    pub fn backing_filesystem(&self) -> String {
        backing_filesystem(&self.root)
    }
}

/// Opens `<root>/lock` and flocks it with `arg` (blocking).
fn lock_file(root: &Path, arg: FlockArg) -> Result<Flock<File>> {
    let lock_path = root.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx("open lock file", &lock_path)?;
    Flock::lock(f, arg).map_err(|(_, e)| {
        StoreError::io(
            "flock",
            &lock_path,
            std::io::Error::from_raw_os_error(e as i32),
        )
    })
}

/// Name of the filesystem type holding `path` ([`driver_core::fsutil::filesystem_name`]).
pub fn backing_filesystem(path: &Path) -> String {
    driver_core::fsutil::filesystem_name(path)
}
