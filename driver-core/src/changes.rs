//! Change detection between two full trees and export of a change list: the list-based
//! face of [`crate::export`], which holds the rules and the one tar format.
//!
//! [`changes_dirs`] is moby's `archive.ChangesDirs` (rules in [`crate::export`]);
//! [`export_changes`] / [`write_changes_tar`] write a list's tar in the exporter's
//! format.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::driver::{Change, ChangeKind};
use crate::error::{DriverError, IoContext, Result};
use crate::export::{self, rel_of, DiffSource};

pub use crate::export::ExportReader;

/// Lists the changes of the tree `layer` relative to the tree `parent` (everything is
/// `Add` when there is no parent), sorted by path. Paths are absolute inside the layer
/// (`/etc/hosts`).
pub fn changes_dirs(layer: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    export::changes(&DiffSource::Trees {
        layer: layer.to_path_buf(),
        parent: parent.map(Path::to_path_buf),
    })
}

/// The extended attributes of `path` (not following symlinks), sorted by name. A
/// filesystem without xattr support reads as none.
pub fn read_xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if is_unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(DriverError::io("list xattrs", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        // An attribute removed between list and get is simply gone.
        if let Some(v) = xattr::get(path, &name).ctx("get xattr", path)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// Sum of the sizes of the regular files added or modified by `changes` in `root`
/// (moby's `ChangesSize`); a file with several hard links counts once.
pub fn diff_size(root: &Path, changes: &[Change]) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for c in changes {
        if c.kind == ChangeKind::Delete {
            continue;
        }
        let p = root.join(rel_of(&c.path));
        let md = fs::symlink_metadata(&p).ctx("stat", &p)?;
        if md.is_file() && (md.nlink() < 2 || seen.insert((md.dev(), md.ino()))) {
            total += md.size();
        }
    }
    Ok(total)
}

/// Streams the layer tar of `changes` taken from the full tree `root` (format in
/// [`crate::export`]; parents of changed paths are added so the tar applies on its
/// own). The writer's error surfaces from `read` at the end of the stream; dropping the
/// reader early stops the writer.
pub fn export_changes(root: &Path, changes: &[Change]) -> Result<ExportReader> {
    export::export_changes(root, changes)
}

/// Writes the tar [`export_changes`] streams into `out` and returns `out`.
pub fn write_changes_tar<W: Write>(root: &Path, changes: &[Change], out: W) -> Result<W> {
    export::write_changes(root, changes, out)
}

#[cfg(test)]
mod tests;
