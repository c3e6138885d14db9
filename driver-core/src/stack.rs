//! The one model of a layer stack: what a path looks like through a stack of branch
//! directories, top first. Every union rule of the project lives here (lookup,
//! whiteouts, opaque directories, merged listings, symlink resolution inside the
//! root); drivers and the layer store ask a [`LayerStack`] instead of reading layer
//! directories themselves.
//!
//! ## Rules (overlayfs `Documentation/filesystems/overlayfs.rst`, aufs(5), OCI
//! image-spec `layer.md`)
//! - A name is looked up top down. The first branch holding it decides its type.
//! - A whiteout in branch `b` hides the name in every branch below `b`; the branch's
//!   own entry of that name, if any, is still seen (OCI: "whiteout files MUST only
//!   apply to resources in lower/parent layers").
//!   - [`WhiteoutFormat::Overlay`]: a 0/0 character device `<name>` (it *is* the entry,
//!     so it hides the name from that branch down);
//!   - [`WhiteoutFormat::Aufs`]: a file `.wh.<name>` beside the name.
//! - A directory merges with the directories of the same name below it, down to the
//!   first branch where the name is opaque, whited out or not a directory. Opaque:
//!   `trusted.overlay.opaque=y` (Overlay) or a `.wh..wh..opq` child (Aufs).
//! - A non-directory hides everything below it.
//! - [`WhiteoutFormat::Delete`] branches are full trees (vfs): nothing is interpreted;
//!   such a stack normally has one branch.
//! - Names starting with `.wh.` are never entries of an Aufs stack: listings leave them
//!   out and lookups of them answer "absent".
//!
//! ## Symlinks
//! [`LayerStack::resolve`] follows symlinks met in the *merged* view the way the
//! kernel would inside a chroot at the stack's root: an absolute target restarts at
//! the root, `..` never climbs above it, at most [`MAX_SYMLINKS`] links are followed.
//! Lookups themselves never follow anything: every component is `lstat`ed in a branch
//! only after its parent was seen there as a real directory, so a symlink inside a
//! (hostile) layer never leads a lookup out of its branch.
//!
//! Branches are directories the driver owns; read-only branches do not change while a
//! stack is used, and the writable branch (if any) is changed only by the caller.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{DriverError, IoContext, Result};
use crate::whiteout::{
    whiteout_fits, whiteout_of, WhiteoutFormat, OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR,
    WH_OPAQUE, WH_PREFIX,
};

/// Symlinks followed by one [`LayerStack::resolve`] before it gives up with `ELOOP`
/// (Linux's own limit, `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// A stack of branch directories, top first, in one on-disk whiteout format.
#[derive(Debug, Clone)]
pub struct LayerStack {
    branches: Vec<PathBuf>,
    format: WhiteoutFormat,
}

/// One name found through a stack.
#[derive(Debug, Clone)]
pub struct Found {
    /// Index of the branch that holds the visible entry (0 = top).
    pub branch: usize,
    /// Its path on disk (`<branch>/<rel>`).
    pub path: PathBuf,
    /// Its `lstat` metadata.
    pub meta: Metadata,
    /// For a directory: the branches whose directories merge into it, top first
    /// (starts with `branch`). Empty for a non-directory.
    pub merged: Vec<usize>,
}

impl Found {
    /// Whether the visible entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }
}

/// What [`LayerStack::resolve`] found.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The canonical path (relative to the stack root, no symlink among its
    /// directories), components joined by `/`; empty for the root.
    pub path: PathBuf,
    /// The entry at `path`, `None` when some component is absent (the remaining
    /// components are appended to `path` as given).
    pub found: Option<Found>,
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub struct MergedEntry {
    /// Branch holding the visible entry (0 = top).
    pub branch: usize,
    /// `lstat` metadata of the visible entry.
    pub meta: Metadata,
}

/// Whether `m` is an overlay whiteout: a character device 0/0.
pub fn is_overlay_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether the directory at `path` (already known to be a real directory) is opaque
/// in `format`.
pub fn is_opaque_dir(path: &Path, format: WhiteoutFormat) -> Result<bool> {
    match format {
        WhiteoutFormat::Delete => Ok(false),
        WhiteoutFormat::Overlay => {
            // `xattr::get` is lgetxattr: a final symlink is not followed.
            match xattr::get(path, OVERLAY_OPAQUE_XATTR) {
                Ok(v) => Ok(v.as_deref() == Some(OVERLAY_OPAQUE_VALUE)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA)) => {
                    Ok(false)
                }
                Err(e) => Err(DriverError::io("read opaque xattr", path, e)),
            }
        }
        WhiteoutFormat::Aufs => exists_nofollow(&path.join(WH_OPAQUE)),
    }
}

fn exists_nofollow(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(DriverError::io("stat", p, e)),
    }
}

fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The normal components of a relative path; `..`, roots and prefixes are refused.
fn normal_components(rel: &Path) -> Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(DriverError::io(
                    "look up in layer stack",
                    rel,
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "path must be relative, without `..`",
                    ),
                ))
            }
        }
    }
    Ok(out)
}

impl LayerStack {
    /// A stack of `branches` (top first) whose whiteouts are in `format`.
    pub fn new(branches: Vec<PathBuf>, format: WhiteoutFormat) -> Self {
        LayerStack { branches, format }
    }

    /// The branch directories, top first.
    pub fn branches(&self) -> &[PathBuf] {
        &self.branches
    }

    /// The whiteout format of the branches.
    pub fn format(&self) -> WhiteoutFormat {
        self.format
    }

    /// The same stack without its top branch (what lies below a layer).
    pub fn below_top(&self) -> LayerStack {
        LayerStack {
            branches: self.branches.iter().skip(1).cloned().collect(),
            format: self.format,
        }
    }

    /// This stack with `top` put on top of it.
    pub fn with_top(&self, top: PathBuf) -> LayerStack {
        let mut branches = Vec::with_capacity(self.branches.len() + 1);
        branches.push(top);
        branches.extend(self.branches.iter().cloned());
        LayerStack {
            branches,
            format: self.format,
        }
    }

    /// The branches merged at the root, top first: all of them down to the first whose
    /// root is opaque.
    fn root_merge(&self) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(self.branches.len());
        for (i, b) in self.branches.iter().enumerate() {
            out.push(i);
            if is_opaque_dir(b, self.format)? {
                break;
            }
        }
        Ok(out)
    }

    /// Looks `name` up in the directory `parent` (relative path) whose merge set is
    /// `merge` ([`Found::merged`] of `parent` as a lookup returned it). Never follows
    /// symlinks. A live filesystem that remembers its directories' merge sets looks a
    /// child up with this in one `lstat` per branch, where [`Self::lookup`] walks the
    /// whole path.
    pub fn step(&self, parent: &Path, merge: &[usize], name: &OsStr) -> Result<Option<Found>> {
        if self.format == WhiteoutFormat::Aufs && name.as_bytes().starts_with(WH_PREFIX.as_bytes())
        {
            return Ok(None);
        }
        let mut found: Option<Found> = None;
        for &b in merge {
            let dir = self.branches[b].join(parent);
            let p = dir.join(name);
            match fs::symlink_metadata(&p) {
                Ok(m) => {
                    if self.format == WhiteoutFormat::Overlay && is_overlay_whiteout(&m) {
                        break;
                    }
                    match &mut found {
                        None => {
                            let is_dir = m.is_dir();
                            found = Some(Found {
                                branch: b,
                                path: p.clone(),
                                meta: m,
                                merged: if is_dir { vec![b] } else { Vec::new() },
                            });
                            if !is_dir || is_opaque_dir(&p, self.format)? {
                                break;
                            }
                        }
                        Some(f) => {
                            // Only directories merge; anything else ends the merge.
                            if !m.is_dir() {
                                break;
                            }
                            f.merged.push(b);
                            if is_opaque_dir(&p, self.format)? {
                                break;
                            }
                        }
                    }
                }
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(DriverError::io("stat", p, e)),
            }
            // A name too long for a whiteout (252-255 bytes) has none: not asked for.
            if self.format == WhiteoutFormat::Aufs
                && whiteout_fits(name)
                && exists_nofollow(&dir.join(whiteout_of(name)))?
            {
                break;
            }
        }
        Ok(found)
    }

    /// The entry at `rel` (a relative path, no `..`), not following any symlink: a
    /// symlink among the directories of `rel` answers `None` (use [`Self::resolve`]).
    /// The root (`""`) is a directory merging every branch down to the first opaque one.
    ///
    /// Errors: [`DriverError::Io`] for a failed `lstat`/`getxattr` (naming the path) or
    /// a path with `..` or a root.
    pub fn lookup(&self, rel: &Path) -> Result<Option<Found>> {
        let comps = normal_components(rel)?;
        let mut merge = self.root_merge()?;
        if comps.is_empty() {
            let top = *merge.first().ok_or_else(|| {
                DriverError::io(
                    "look up in layer stack",
                    rel,
                    io::Error::new(io::ErrorKind::NotFound, "stack has no branch"),
                )
            })?;
            let path = self.branches[top].clone();
            let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
            return Ok(Some(Found {
                branch: top,
                path,
                meta,
                merged: merge,
            }));
        }
        let mut parent = PathBuf::new();
        for (i, name) in comps.iter().enumerate() {
            let Some(f) = self.step(&parent, &merge, name)? else {
                return Ok(None);
            };
            if i + 1 == comps.len() {
                return Ok(Some(f));
            }
            if !f.is_dir() {
                return Ok(None);
            }
            merge = f.merged;
            parent.push(name);
        }
        unreachable!("loop returns on the last component")
    }

    /// Resolves `rel` in the merged view, following symlinks among its directories (and
    /// the final component too when `follow_last`) inside the stack root, like a path
    /// looked up by a process chrooted at the merged root. Missing components end the
    /// resolution: the rest is appended as given and `found` is `None`.
    ///
    /// Errors: `ELOOP` after [`MAX_SYMLINKS`] links, `ENOTDIR` when a non-directory
    /// stands where a directory is needed (both as [`DriverError::Io`] naming `rel`).
    pub fn resolve(&self, rel: &Path, follow_last: bool) -> Result<Resolved> {
        let mut todo: std::collections::VecDeque<OsString> = normal_components(rel)?
            .into_iter()
            .map(OsStr::to_os_string)
            .collect();
        let root_merge = self.root_merge()?;
        // (name, merge set of that directory) for each canonical component.
        let mut levels: Vec<(OsString, Vec<usize>)> = Vec::new();
        let mut links = 0usize;
        let loop_err = || {
            DriverError::io(
                "resolve in layer stack",
                rel,
                io::Error::from_raw_os_error(libc::ELOOP),
            )
        };
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                levels.pop();
                continue;
            }
            if name == "." || name.is_empty() {
                continue;
            }
            let parent: PathBuf = levels.iter().map(|(n, _)| n.as_os_str()).collect();
            let merge = levels.last().map(|l| &l.1).unwrap_or(&root_merge);
            let found = self.step(&parent, merge, &name)?;
            let last = todo.is_empty();
            match found {
                None => {
                    let mut path = parent;
                    path.push(&name);
                    for rest in todo {
                        path.push(rest);
                    }
                    return Ok(Resolved { path, found: None });
                }
                Some(f) if f.meta.file_type().is_symlink() && (!last || follow_last) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(loop_err());
                    }
                    let target = fs::read_link(&f.path).ctx("read link", &f.path)?;
                    if target.is_absolute() {
                        levels.clear();
                    }
                    let comps: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    for c in comps.into_iter().rev() {
                        todo.push_front(c);
                    }
                }
                Some(f) if last => {
                    let mut path = parent;
                    path.push(&name);
                    return Ok(Resolved {
                        path,
                        found: Some(f),
                    });
                }
                Some(f) if f.is_dir() => levels.push((name, f.merged)),
                Some(_) => {
                    return Err(DriverError::io(
                        "resolve in layer stack",
                        rel,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ))
                }
            }
        }
        // Empty path, or it resolved to a directory through `..`/symlinks.
        let path: PathBuf = levels.iter().map(|(n, _)| n.as_os_str()).collect();
        let found = self.lookup(&path)?;
        Ok(Resolved { path, found })
    }

    /// The merged listing of directory `rel` (no symlink followed): every visible name
    /// with the branch that holds it, whiteouts and AUFS metadata left out, sorted by
    /// name. `None` when `rel` is absent or not a directory.
    pub fn read_dir(&self, rel: &Path) -> Result<Option<BTreeMap<OsString, MergedEntry>>> {
        let Some(dir) = self.lookup(rel)? else {
            return Ok(None);
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        let mut out: BTreeMap<OsString, MergedEntry> = BTreeMap::new();
        // Names hidden from the branches below the current one.
        let mut hidden: HashSet<OsString> = HashSet::new();
        for &b in &dir.merged {
            let d = self.branches[b].join(rel);
            let mut wh_here = Vec::new();
            for ent in fs::read_dir(&d).ctx("read directory", &d)? {
                let ent = ent.ctx("read directory", &d)?;
                let name = ent.file_name();
                if self.format == WhiteoutFormat::Aufs {
                    if let Some(t) = name.as_bytes().strip_prefix(WH_PREFIX.as_bytes()) {
                        if !t.starts_with(WH_PREFIX.as_bytes()) {
                            wh_here.push(OsStr::from_bytes(t).to_os_string());
                        }
                        continue;
                    }
                }
                if out.contains_key(&name) || hidden.contains(&name) {
                    continue;
                }
                let p = ent.path();
                let meta = fs::symlink_metadata(&p).ctx("stat", &p)?;
                if self.format == WhiteoutFormat::Overlay && is_overlay_whiteout(&meta) {
                    wh_here.push(name);
                    continue;
                }
                out.insert(name, MergedEntry { branch: b, meta });
            }
            // A name listed from this branch hides the same name below (`out` is
            // checked first); its whiteouts hide theirs.
            hidden.extend(wh_here);
        }
        Ok(Some(out))
    }
}

mod deletions;
#[cfg(test)]
mod tests;

pub use deletions::Deletion;
