//! The change walk: compares a layer with its parent, depth first, names sorted byte-wise
//! in each directory, and reports each change to a [`Sink`] in that order (which is the
//! order of the tar and of `changes`). Directories that hold a change but did not change
//! themselves are reported (`Modify`) just before their first changed descendant, so
//! memory is one pending directory per level plus one sorted listing per level.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::changes::read_xattrs;
use crate::driver::ChangeKind;
use crate::error::{DriverError, IoContext, Result};
use crate::stack::{is_opaque_dir, is_overlay_whiteout, LayerStack};
use crate::whiteout::{classify, WhiteoutFormat, WhiteoutName};

use super::writer::OVERLAY_XATTR_PREFIX;
use super::DiffSource;

/// Receives the changes in export order. `md` is the new entry's `lstat` (`None` for
/// `Delete`); its content lives at `<new root>/<rel>`.
pub(crate) trait Sink {
    fn change(&mut self, rel: &Path, kind: ChangeKind, md: Option<&Metadata>) -> Result<()>;
}

/// How the parent's side of the directory being walked is read.
enum Old {
    /// The parent has no directory here: everything below is `Add`.
    None,
    /// Full tree: the parent's directory at this absolute path.
    Tree(PathBuf),
    /// Top of a stack, directory merged with the lower stack: only the top's names can
    /// differ; each is looked up in the lower stack.
    Lookup,
    /// Top of a stack, directory opaque (or below an opaque one): the lower listing is
    /// hidden, so every lower name the top does not hold is deleted.
    Listing,
}

/// Sorted `name -> lstat` of the directory `dir` (a real directory of one tree).
fn list_dir(dir: &Path) -> Result<BTreeMap<OsString, Metadata>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) => {
                out.insert(e.file_name(), m);
            }
            // Removed between readdir and lstat: it is simply not there.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(DriverError::io("stat", p, err)),
        }
    }
    Ok(out)
}

fn is_socket(m: &Metadata) -> bool {
    m.file_type().is_socket()
}

/// Xattrs compared by the change rule: all but overlayfs' private ones.
fn content_xattrs(p: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    Ok(read_xattrs(p)?
        .into_iter()
        .filter(|(k, _)| !k.as_bytes().starts_with(OVERLAY_XATTR_PREFIX))
        .collect())
}

/// Whether two entries differ (rules in [`crate::export`]'s module doc).
fn entry_differs(old_path: &Path, old: &Metadata, new_path: &Path, new: &Metadata) -> Result<bool> {
    if old.mode() != new.mode()
        || old.uid() != new.uid()
        || old.gid() != new.gid()
        || old.rdev() != new.rdev()
    {
        return Ok(true);
    }
    if !new.is_dir()
        && (old.size() != new.size()
            || old.mtime() != new.mtime()
            || old.mtime_nsec() != new.mtime_nsec())
    {
        return Ok(true);
    }
    if new.file_type().is_symlink()
        && fs::read_link(old_path).ctx("read link", old_path)?
            != fs::read_link(new_path).ctx("read link", new_path)?
    {
        return Ok(true);
    }
    Ok(content_xattrs(old_path)? != content_xattrs(new_path)?)
}

/// Walks `src`, reporting every change to `sink` in export order.
pub(crate) fn walk(src: &DiffSource, sink: &mut dyn Sink) -> Result<()> {
    let (new_root, lower, format) = match src {
        DiffSource::Trees { layer, .. } => (layer.clone(), None, WhiteoutFormat::Delete),
        DiffSource::Top(stack) => {
            let top = stack.branches().first().cloned().ok_or_else(|| {
                DriverError::io(
                    "export",
                    PathBuf::new(),
                    io::Error::new(io::ErrorKind::InvalidInput, "layer stack has no branch"),
                )
            })?;
            (top, Some(stack.below_top()), stack.format())
        }
    };
    let old = match (src, &lower) {
        (
            DiffSource::Trees {
                parent: Some(p), ..
            },
            _,
        ) => {
            if fs::symlink_metadata(p).ctx("stat", p)?.is_dir() {
                Old::Tree(p.clone())
            } else {
                Old::None
            }
        }
        (DiffSource::Trees { parent: None, .. }, _) => Old::None,
        (DiffSource::Top(_), Some(l)) if l.branches().is_empty() => Old::None,
        (DiffSource::Top(_), _) => {
            if is_opaque_dir(&new_root, format)? {
                Old::Listing
            } else {
                Old::Lookup
            }
        }
    };
    let mut w = Walker {
        new_root,
        lower,
        format,
        sink,
        pending: Vec::new(),
    };
    w.dir(Path::new(""), old)
}

struct Walker<'a> {
    new_root: PathBuf,
    /// The parent's stack (Top sources).
    lower: Option<LayerStack>,
    /// Whiteout format of the top branch (Top sources).
    format: WhiteoutFormat,
    sink: &'a mut dyn Sink,
    /// Directories entered but not reported, outermost first; `None` once reported.
    pending: Vec<Option<(PathBuf, Metadata)>>,
}

/// One name of a directory as both sides see it.
struct Pair {
    new: Option<Metadata>,
    /// The parent's entry: its path on disk and `lstat`.
    old: Option<(PathBuf, Metadata)>,
}

impl Walker<'_> {
    fn report(&mut self, rel: &Path, kind: ChangeKind, md: Option<&Metadata>) -> Result<()> {
        for slot in self.pending.iter_mut() {
            if let Some((p, m)) = slot.take() {
                tracing::trace!(path = %p.display(), "change: directory holding changes");
                self.sink.change(&p, ChangeKind::Modify, Some(&m))?;
            }
        }
        tracing::trace!(path = %rel.display(), ?kind, "change");
        self.sink.change(rel, kind, md)
    }

    fn lower(&self) -> &LayerStack {
        self.lower.as_ref().expect("Top sources have a lower stack")
    }

    /// The names of directory `rel` (a directory on the new side) with both sides.
    fn pairs(&self, rel: &Path, old: &Old) -> Result<BTreeMap<OsString, Pair>> {
        let new_dir = self.new_root.join(rel);
        let mut out: BTreeMap<OsString, Pair> = BTreeMap::new();
        let mut whiteouts: BTreeSet<OsString> = BTreeSet::new();
        for (name, m) in list_dir(&new_dir)? {
            if is_socket(&m) {
                continue;
            }
            match self.format {
                WhiteoutFormat::Overlay if is_overlay_whiteout(&m) => {
                    whiteouts.insert(name);
                    continue;
                }
                WhiteoutFormat::Aufs => match name.to_str().map(classify) {
                    Some(WhiteoutName::Whiteout(t)) => {
                        whiteouts.insert(OsString::from(t));
                        continue;
                    }
                    Some(WhiteoutName::Plain) | None => {}
                    Some(_) => continue,
                },
                _ => {}
            }
            out.insert(
                name,
                Pair {
                    new: Some(m),
                    old: None,
                },
            );
        }
        match old {
            Old::None => {}
            Old::Tree(old_dir) => {
                for (name, m) in list_dir(old_dir)? {
                    let path = old_dir.join(&name);
                    out.entry(name)
                        .or_insert(Pair {
                            new: None,
                            old: None,
                        })
                        .old = Some((path, m));
                }
            }
            Old::Listing => {
                let lower = self.lower();
                for (name, e) in lower.read_dir(rel)?.unwrap_or_default() {
                    let path = lower.branches()[e.branch].join(rel).join(&name);
                    out.entry(name)
                        .or_insert(Pair {
                            new: None,
                            old: None,
                        })
                        .old = Some((path, e.meta));
                }
            }
            Old::Lookup => {
                for name in whiteouts {
                    out.entry(name).or_insert(Pair {
                        new: None,
                        old: None,
                    });
                }
                let lower = self.lower();
                for (name, pair) in out.iter_mut() {
                    if let Some(f) = lower.lookup(&rel.join(name))? {
                        pair.old = Some((f.path, f.meta));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Walks directory `rel` (a directory on the new side; `old` says how its parent
    /// counterpart is read).
    fn dir(&mut self, rel: &Path, old: Old) -> Result<()> {
        let listing_below = matches!(old, Old::Listing);
        for (name, pair) in self.pairs(rel, &old)? {
            let child = rel.join(&name);
            let (new, child_old) = match (pair.new, pair.old) {
                (None, None) => continue, // a whiteout of nothing
                (None, Some(_)) => {
                    self.report(&child, ChangeKind::Delete, None)?;
                    continue;
                }
                (Some(n), None) => {
                    self.report(&child, ChangeKind::Add, Some(&n))?;
                    if n.is_dir() {
                        self.pending.push(None);
                    }
                    (n, Old::None)
                }
                (Some(n), Some((op, om))) => {
                    let np = self.new_root.join(&child);
                    let changed = entry_differs(&op, &om, &np, &n)?;
                    if changed {
                        self.report(&child, ChangeKind::Modify, Some(&n))?;
                    }
                    if !n.is_dir() {
                        continue;
                    }
                    let next = if !om.is_dir() {
                        Old::None
                    } else if self.lower.is_none() {
                        Old::Tree(op)
                    } else if listing_below || is_opaque_dir(&np, self.format)? {
                        Old::Listing
                    } else {
                        Old::Lookup
                    };
                    self.pending
                        .push((!changed).then(|| (child.clone(), n.clone())));
                    (n, next)
                }
            };
            if new.is_dir() {
                let r = self.dir(&child, child_old);
                self.pending.pop();
                r?;
            }
        }
        Ok(())
    }
}
