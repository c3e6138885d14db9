//! The [`Driver`] implementation: create (copy), remove, counted mounts, diffs.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use driver_core::export::{self, DiffSource};
use driver_core::naive::naive_apply_diff;
use driver_core::refcount::{Liveness, RefsGuard};
use driver_core::{
    Change, CreateOpts, Driver, DriverError, DriverStatus, IoContext, LayerId, MountOpts, Result,
    WhiteoutFormat,
};
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use tracing::instrument;

use crate::VfsDriver;

impl VfsDriver {
    fn not_found(id: &LayerId) -> DriverError {
        DriverError::NotFound { id: id.to_string() }
    }

    fn require(&self, id: &LayerId) -> Result<PathBuf> {
        if self.exists(id) {
            Ok(self.path_of(id))
        } else {
            Err(Self::not_found(id))
        }
    }

    /// The two full trees a diff of `id` against `parent` compares: the layers' own
    /// directories (a vfs layer is a complete root filesystem). This is the naive
    /// comparison without [`MountGuard`](driver_core::naive::MountGuard)s: vfs counts
    /// mount references in a file, so a process killed mid-diff (a `commit` or `diff`
    /// killed with SIGKILL) would leave stale references that make the container
    /// unremovable; no reference is needed here because the store lock keeps both
    /// layers from being removed while they are read.
    fn diff_trees(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<DiffSource> {
        Ok(DiffSource::Trees {
            layer: self.require(id)?,
            parent: parent.map(|p| self.require(p)).transpose()?,
        })
    }

    /// vfs has no kernel mount to ask: a count is live in the boot that wrote it.
    const LIVENESS: Liveness<'static> = Liveness::ThisBoot;

    fn lock_refs(&self) -> Result<RefsGuard<'_>> {
        self.refs.lock()
    }

    fn remove_tree(path: &Path) -> Result<()> {
        match fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::io("remove directory", path, e)),
        }
    }
}

impl Driver for VfsDriver {
    fn name(&self) -> &'static str {
        crate::NAME
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn status(&self) -> DriverStatus {
        crate::status::status(self)
    }

    #[instrument(skip(self, opts), fields(parent = ?parent.map(LayerId::as_str)))]
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        if let Some(key) = opts.storage_opt.keys().next() {
            return Err(DriverError::InvalidOption {
                key: key.clone(),
                reason: "the vfs driver has no per-layer options".into(),
            });
        }
        if self.exists(id) {
            return Err(DriverError::AlreadyExists { id: id.to_string() });
        }
        let parent_dir = match parent {
            Some(p) if self.exists(p) => Some(self.path_of(p)),
            Some(p) => {
                return Err(DriverError::ParentNotFound {
                    id: id.to_string(),
                    parent: p.to_string(),
                })
            }
            None => None,
        };
        let tmp = self
            .dir
            // The pid marks it as this process's work: another process's cleanup leaves
            // it alone while we live (create runs without the store lock for imports).
            .join(format!(
                ".{id}-tmp-{}-{}",
                std::process::id(),
                driver_core::id::random_hex(6)
            ));
        let result = (|| {
            match &parent_dir {
                Some(src) => {
                    crate::copy::copy_tree(src, &tmp)?;
                }
                None => {
                    use std::os::unix::fs::DirBuilderExt;
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&tmp)
                        .ctx("create directory", &tmp)?;
                    // The umask may have narrowed the mode: set it exactly.
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                        .ctx("chmod", &tmp)?;
                }
            }
            let dst = self.path_of(id);
            renameat2(
                AT_FDCWD,
                &tmp,
                AT_FDCWD,
                &dst,
                RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| match e {
                nix::errno::Errno::EEXIST | nix::errno::Errno::ENOTEMPTY => {
                    DriverError::AlreadyExists { id: id.to_string() }
                }
                e => DriverError::errno("rename into place", &dst, e),
            })?;
            driver_core::fsutil::fsync_dir(&self.dir)
        })();
        if result.is_err() {
            if let Err(e) = Self::remove_tree(&tmp) {
                tracing::warn!(error = %e, "removing temp layer after failed create");
            }
        }
        result
    }

    #[instrument(skip(self))]
    fn remove(&self, id: &LayerId) -> Result<()> {
        let path = self.require(id)?;
        let count = self.mount_count(id)?;
        if count > 0 {
            return Err(DriverError::Busy {
                id: id.to_string(),
                reason: format!("mounted {count} time(s)"),
            });
        }
        let removing = self.dir.join(format!(".{id}-removing"));
        Self::remove_tree(&removing)?;
        fs::rename(&path, &removing).ctx("rename for removal", &path)?;
        driver_core::fsutil::fsync_dir(&self.dir)?;
        Self::remove_tree(&removing)
    }

    fn exists(&self, id: &LayerId) -> bool {
        fs::symlink_metadata(self.path_of(id)).is_ok_and(|m| m.is_dir())
    }

    #[instrument(skip(self, opts))]
    fn mount(&self, id: &LayerId, opts: &MountOpts) -> Result<PathBuf> {
        if !opts.options.is_empty() {
            return Err(DriverError::InvalidOption {
                key: opts.options.join(","),
                reason: "vfs does not mount, so it takes no mount options".into(),
            });
        }
        let path = self.require(id)?;
        let g = self.lock_refs()?;
        let n = g.get(id, Self::LIVENESS)?;
        g.set(id, n + 1)?;
        Ok(path)
    }

    #[instrument(skip(self))]
    fn unmount(&self, id: &LayerId) -> Result<()> {
        self.require(id)?;
        let g = self.lock_refs()?;
        let n = g.get(id, Self::LIVENESS)?;
        if n == 0 {
            tracing::debug!(%id, "unmount of a layer that is not mounted");
            return Ok(());
        }
        g.set(id, n - 1)
    }

    fn mount_count(&self, id: &LayerId) -> Result<u32> {
        self.require(id)?;
        let g = self.lock_refs()?;
        g.get(id, Self::LIVENESS)
    }

    #[instrument(skip(self, diff))]
    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn Read,
    ) -> Result<u64> {
        naive_apply_diff(self, id, parent, diff, WhiteoutFormat::Delete)
    }

    #[instrument(skip(self, diff))]
    fn apply_diff_chunked(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        diff: &mut dyn driver_core::ChunkedRead,
    ) -> Result<u64> {
        driver_core::naive::naive_apply_layer_stream(
            self,
            id,
            parent,
            driver_core::LayerStream::Chunked(diff),
            WhiteoutFormat::Delete,
        )
    }

    #[instrument(skip(self))]
    fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(export::diff(self.diff_trees(id, parent)?)?))
    }

    #[instrument(skip(self))]
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        export::changes(&self.diff_trees(id, parent)?)
    }

    #[instrument(skip(self))]
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        export::size(&self.diff_trees(id, parent)?)
    }

    #[instrument(skip(self))]
    fn cleanup(&self) -> Result<()> {
        for e in fs::read_dir(&self.dir).ctx("read directory", &self.dir)? {
            let e = e.ctx("read directory", &self.dir)?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if is_leftover(&name) {
                tracing::info!(path = %e.path().display(), "removing leftover of interrupted work");
                Self::remove_tree(&e.path())?;
            }
        }
        // Counts of layers that no longer exist, and of an earlier boot.
        let g = self.lock_refs()?;
        for e in fs::read_dir(g.dir())
            .ctx("read directory", g.dir())?
            .flatten()
        {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".tmp-") {
                if let Err(err) = fs::remove_file(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "removing stale temp file");
                }
            }
        }
        for key in g.keys()? {
            if let Ok(id) = LayerId::new(key.as_str()) {
                if !self.exists(&id) || g.get(&id, Self::LIVENESS)? == 0 {
                    g.set(&id, 0)?;
                }
            }
        }
        Ok(())
    }

    fn layer_dir(&self, id: &LayerId) -> Result<PathBuf> {
        self.require(id)
    }

    fn layers(&self) -> Result<Vec<LayerId>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).ctx("read directory", &self.dir)? {
            let e = e.ctx("read directory", &self.dir)?;
            if let Some(id) = e.file_name().to_str().and_then(|n| LayerId::new(n).ok()) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(id);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn unlocked_create(&self) -> bool {
        true
    }

    fn leftovers(&self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).ctx("read directory", &self.dir)? {
            let e = e.ctx("read directory", &self.dir)?;
            if is_leftover(&e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// One branch: the layer's directory is its complete tree.
    fn stack(&self, id: &LayerId) -> Result<driver_core::LayerStack> {
        Ok(driver_core::LayerStack::new(
            vec![self.require(id)?],
            driver_core::WhiteoutFormat::Delete,
        ))
    }
}

/// Whether a name in `dir/` is a leftover of interrupted work (`.<id>-removing`, or
/// `.<id>-tmp-<pid>-<rand>` of a process no longer running); no layer id starts with `.`.
fn is_leftover(name: &str) -> bool {
    if !name.starts_with('.') {
        return false;
    }
    if name.ends_with("-removing") {
        return true;
    }
    match name.split_once("-tmp-") {
        Some((_, rest)) => {
            let pid = rest.split('-').next().unwrap_or("");
            !(pid.bytes().all(|b| b.is_ascii_digit())
                && pid.parse::<u32>().is_ok_and(driver_core::fsutil::pid_alive))
        }
        None => false,
    }
}
