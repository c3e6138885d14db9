//! What a stack of branches deletes from whatever lies below it, as one summary: the
//! union rule a driver needs when it mounts a group of layers as one read-only lower
//! (overlayfs hides a lower overlay's own whiteouts and opaque markers, so they must be
//! restated below the group; driver-overlay2's deep stacks).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{is_opaque_dir, is_overlay_whiteout, LayerStack};
use crate::apply::whiteouts::{classify_bytes, Name};
use crate::error::{DriverError, Result};
use crate::whiteout::WhiteoutFormat;

/// One deletion of a [`LayerStack::deletions`] summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The path is deleted (overlay: a 0/0 character device).
    Whiteout,
    /// The directory hides everything below it (overlay: `trusted.overlay.opaque=y`).
    Opaque,
}

impl LayerStack {
    /// The deletions the branches (top first) make to what lies below the whole stack:
    /// each path some branch deletes, unless a higher branch already deleted it or one
    /// of its parents; a deleted path that higher branches filled with deletions of
    /// their own becomes an opaque directory. Paths are relative to the branch roots.
    /// Full-tree (`Delete`) stacks delete nothing.
    ///
    /// Errors: [`DriverError::Io`] naming the path that cannot be read.
    pub fn deletions(&self) -> Result<BTreeMap<PathBuf, Deletion>> {
        let mut marks: BTreeMap<PathBuf, Deletion> = BTreeMap::new();
        if self.format == WhiteoutFormat::Delete {
            return Ok(marks);
        }
        // Directories the summary needs because marks lie below them.
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        let covered = |marks: &BTreeMap<PathBuf, Deletion>, p: &Path| {
            p.ancestors().skip(1).any(|a| marks.contains_key(a))
        };
        for root in &self.branches {
            let mut it = walkdir::WalkDir::new(root).min_depth(1).into_iter();
            while let Some(e) = it.next() {
                let e = e.map_err(|e| {
                    let p = e.path().unwrap_or(root).to_owned();
                    DriverError::io("walk layer", p, e.into())
                })?;
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .expect("walkdir yields paths below its root")
                    .to_owned();
                let ft = e.file_type();
                if covered(&marks, &rel) {
                    if ft.is_dir() {
                        it.skip_current_dir();
                    }
                    continue;
                }
                if ft.is_dir() {
                    if marks.contains_key(&rel) {
                        // Deleted or made opaque above: nothing below matters.
                        it.skip_current_dir();
                    } else if is_opaque_dir(e.path(), self.format)? {
                        add(&mut marks, &mut dirs, rel, Deletion::Opaque);
                        it.skip_current_dir();
                    }
                    continue;
                }
                let target = match self.format {
                    WhiteoutFormat::Overlay if ft.is_char_device() => {
                        let md = e
                            .metadata()
                            .map_err(|er| DriverError::io("stat", e.path(), er.into()))?;
                        is_overlay_whiteout(&md).then(|| rel.clone())
                    }
                    WhiteoutFormat::Aufs => {
                        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
                        match classify_bytes(name) {
                            Name::Whiteout(t) => Some(rel.with_file_name(OsStr::from_bytes(t))),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                if let Some(t) = target {
                    if !marks.contains_key(&t) && !covered(&marks, &t) {
                        let m = if dirs.contains(&t) {
                            Deletion::Opaque
                        } else {
                            Deletion::Whiteout
                        };
                        add(&mut marks, &mut dirs, t, m);
                    }
                }
            }
        }
        Ok(marks)
    }
}

fn add(
    marks: &mut BTreeMap<PathBuf, Deletion>,
    dirs: &mut HashSet<PathBuf>,
    p: PathBuf,
    m: Deletion,
) {
    for a in p.ancestors().skip(1) {
        if a.as_os_str().is_empty() || !dirs.insert(a.to_owned()) {
            break;
        }
    }
    marks.insert(p, m);
}
