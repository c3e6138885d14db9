//! Atomic metadata directories (moby's write-set): an entry is built in `<root>/tmp/`,
//! every file fsynced, then renamed into place as a whole and the parent fsynced.
//! Removal is the mirror image: rename the entry into `<root>/tmp/` (atomic, so the
//! entry is either fully there or gone), fsync, then delete; a crash mid-delete leaves
//! only a `tmp/` leftover, which the next exclusive open empties.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use driver_core::fsutil::fsync_dir;
use driver_core::id::random_hex;

use crate::error::{IoCtx, Result, StoreError};

/// Writes `files` into a fresh directory under `tmp` and renames it to `dest`.
/// `dest` must not exist (the caller holds the exclusive store lock and checked).
/// `moved` = (name, path of an fsynced file on the same filesystem) is renamed into the
/// entry too (large files that were streamed, such as tar-split metadata).
pub(crate) fn publish(
    tmp: &Path,
    dest: &Path,
    files: &[(&str, &[u8])],
    moved: Option<(&str, &Path)>,
) -> Result<()> {
    let stage = tmp.join(format!("meta-{}", random_hex(8)));
    let result = (|| {
        fs::create_dir(&stage).ctx("create staging directory", &stage)?;
        for (name, data) in files {
            let p = stage.join(name);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .ctx("create", &p)?;
            f.write_all(data).ctx("write", &p)?;
            f.sync_all().ctx("fsync", &p)?;
        }
        if let Some((name, from)) = moved {
            fs::rename(from, stage.join(name)).ctx("move into staging directory", from)?;
        }
        fsync_dir(&stage)?;
        fs::rename(&stage, dest).ctx("rename into place", dest)?;
        let parent = dest.parent().unwrap_or(Path::new("/"));
        fsync_dir(parent)?;
        Ok(())
    })();
    if result.is_err() {
        remove_logged(&stage);
    }
    result
}

/// Moves the entry `dest` out of sight into `tmp` atomically, then deletes it.
pub(crate) fn remove_entry(tmp: &Path, dest: &Path) -> Result<()> {
    let trash = tmp.join(format!("removing-{}", random_hex(8)));
    fs::rename(dest, &trash).ctx("move aside for removal", dest)?;
    if let Some(parent) = dest.parent() {
        fsync_dir(parent)?;
    }
    fs::remove_dir_all(&trash).ctx("remove", &trash)?;
    Ok(())
}

/// Removes a path (file or directory tree), logging instead of failing: used for
/// cleanup after an error has already been chosen to report.
pub(crate) fn remove_logged(p: &Path) {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cleanup failed");
    }
}

/// Reads a small metadata file of an entry, trimmed.
pub(crate) fn read_field(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    match fs::read_to_string(&p) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) => Err(StoreError::io("read", p, e)),
    }
}

/// Reads an optional metadata file (None when absent).
pub(crate) fn read_optional(dir: &Path, name: &str) -> Result<Option<String>> {
    let p = dir.join(name);
    match fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", p, e)),
    }
}

/// Names of the entries of `dir` (empty when `dir` is missing), sorted.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.ctx("list", dir)?;
        out.push(e.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}
