//! Native diff, changes and size: a layer's `diff/<id>` holds exactly its changes in
//! AUFS form, which *is* the OCI layer format (`.wh.<name>`, `.wh..wh..opq`), so:
//! - `diff` streams every entry of `diff/<id>` as it is, whiteout files included,
//!   leaving out aufs' internals (`.wh..wh.plnk`, `.wh..wh.aufs`, `.wh..wh.orph` and
//!   any other `.wh..wh.*` except the opaque marker), as Docker's aufs driver did;
//! - `changes` reads `.wh.<name>` as `Delete <name>`, any other entry as `Modify` when
//!   the stack below shows the path and `Add` otherwise (directories copied up because
//!   a child changed count as modified, like Docker). An opaque directory is one entry;
//!   the lower children it hides are not listed one by one;
//! - `diff_size` sums the regular files (hard links once).
//!
//! These are valid only when `parent` is the layer's direct parent; otherwise the
//! driver falls back to driver_core's naive mount-and-compare.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;

use driver_core::changes::export_changes;
use driver_core::error::{DriverError, Result};
use driver_core::whiteout::{WH_META_PREFIX, WH_OPAQUE, WH_PREFIX};
use driver_core::{Change, ChangeKind, LayerStack};

fn walk(dir: &Path) -> impl Iterator<Item = Result<walkdir::DirEntry>> + '_ {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        // aufs internals (and everything below them) are never part of a diff.
        .filter_entry(|e| {
            let n = e.file_name().as_bytes();
            !(n.starts_with(WH_META_PREFIX.as_bytes()) && n != WH_OPAQUE.as_bytes())
        })
        .map(move |e| {
            e.map_err(|e| {
                let p = e.path().unwrap_or(dir).to_owned();
                DriverError::io("walk", p, e.into())
            })
        })
}

/// Every exported entry of `diff_dir`, as `Add` changes (what [`export_changes`] takes).
fn exported_entries(diff_dir: &Path) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for e in walk(diff_dir) {
        let e = e?;
        let rel = e.path().strip_prefix(diff_dir).unwrap_or(e.path());
        out.push(Change {
            path: Path::new("/").join(rel),
            kind: ChangeKind::Add,
        });
    }
    out.sort();
    Ok(out)
}

/// Streams the native diff of `diff_dir` (OCI whiteout form, full metadata).
pub(crate) fn native_diff(diff_dir: &Path) -> Result<Box<dyn Read + Send>> {
    let entries = exported_entries(diff_dir)?;
    export_changes(diff_dir, &entries)
}

/// The changes recorded in `diff_dir` over `below` (the stack under the layer).
pub(crate) fn native_changes(diff_dir: &Path, below: &LayerStack) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for e in walk(diff_dir) {
        let e = e?;
        let rel = e.path().strip_prefix(diff_dir).unwrap_or(e.path());
        let name = e.file_name().as_bytes();
        if name == WH_OPAQUE.as_bytes() {
            continue;
        }
        if let Some(target) = name.strip_prefix(WH_PREFIX.as_bytes()) {
            let gone = rel.with_file_name(std::ffi::OsStr::from_bytes(target));
            out.push(Change {
                path: Path::new("/").join(gone),
                kind: ChangeKind::Delete,
            });
            continue;
        }
        let kind = if below.branches().is_empty() || below.lookup(rel)?.is_none() {
            ChangeKind::Add
        } else {
            ChangeKind::Modify
        };
        out.push(Change {
            path: Path::new("/").join(rel),
            kind,
        });
    }
    out.sort();
    Ok(out)
}

/// Bytes of regular-file content in `diff_dir` (whiteouts are empty), hard links once.
pub(crate) fn native_size(diff_dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for e in walk(diff_dir) {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let m = e
            .metadata()
            .map_err(|err| DriverError::io("lstat", e.path(), err.into()))?;
        if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.len();
    }
    Ok(total)
}

/// `diff/<id>` paths of a stack's branches below the top, for tests.
#[cfg(test)]
fn stack_of(dirs: &[PathBuf]) -> LayerStack {
    LayerStack::new(dirs.to_vec(), driver_core::WhiteoutFormat::Aufs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn changes_and_diff_from_an_aufs_branch() {
        let t = tempfile::tempdir().unwrap();
        let (top, low) = (t.path().join("top"), t.path().join("low"));
        for d in ["a", "b", "o"] {
            fs::create_dir_all(low.join(d)).unwrap();
        }
        fs::write(low.join("a/f"), "1").unwrap();
        fs::write(low.join("b/x"), "x").unwrap();
        fs::write(low.join("o/hidden"), "h").unwrap();
        fs::write(low.join("c"), "c").unwrap();
        for d in ["a", "b", "o", ".wh..wh.plnk"] {
            fs::create_dir_all(top.join(d)).unwrap();
        }
        fs::write(top.join("a/f"), "22").unwrap();
        fs::write(top.join("b/.wh.x"), "").unwrap();
        fs::write(top.join("o/.wh..wh..opq"), "").unwrap();
        fs::write(top.join("o/new"), "n").unwrap();
        fs::write(top.join("new"), "abc").unwrap();
        fs::write(top.join(".wh.c"), "").unwrap();
        fs::write(top.join(".wh..wh.plnk/123.456"), "internal").unwrap();
        let got: Vec<String> = native_changes(&top, &stack_of(&[low]))
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            got,
            ["C /a", "C /a/f", "C /b", "D /b/x", "D /c", "A /new", "C /o", "A /o/new"]
        );
        assert_eq!(native_size(&top).unwrap(), 2 + 1 + 3);
        let mut tar = Vec::new();
        native_diff(&top).unwrap().read_to_end(&mut tar).unwrap();
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [".wh.c", "b/.wh.x", "o/.wh..wh..opq", "o/new", "a/f", "new"] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "{want} missing: {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("plnk")),
            "internals exported: {names:?}"
        );
    }
}
