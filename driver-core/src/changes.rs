//! Change detection between a layer's tree and its parent's tree, and export of a list
//! of changes as an OCI layer tar.
//!
//! This is moby's `archive.ChangesDirs` + `archive.ExportChanges`, for drivers whose
//! layer directory (or mount) shows the full root filesystem, like vfs. Drivers with an
//! upper directory (overlay2) detect changes from that directory instead, but can still
//! export with [`export_changes`].
//!
//! Rules (the same as moby's, so `layerctl changes` prints what `docker diff` prints):
//! - An entry is compared by `lstat`: file type and mode, uid, gid, rdev; for everything
//!   but directories also size and mtime (seconds and nanoseconds); for symlinks the
//!   target; and the extended attributes. Inode numbers and ctime are not compared: they
//!   always change when a tree is copied.
//! - A directory's own size and mtime are ignored (they change whenever a child does),
//!   but a directory that contains a change is reported as `Modify`, as `docker diff`
//!   does, so a tar built from the list restores its permissions.
//! - Everything below an added directory is `Add`; only the top of a deleted directory
//!   is `Delete`. The root itself is never reported. The list is sorted by path.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

use tar::{EntryType, Header};

use crate::driver::{Change, ChangeKind};
use crate::error::{DriverError, IoContext, Result};
use crate::whiteout::WH_PREFIX;

/// Lists the changes of the tree `layer` relative to the tree `parent` (everything is
/// `Add` when there is no parent), sorted by path. Paths are absolute inside the layer
/// (`/etc/hosts`).
pub fn changes_dirs(layer: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let parent_is_dir = match parent {
        Some(p) => fs::symlink_metadata(p).ctx("stat", p)?.is_dir(),
        None => false,
    };
    let mut w = Walker {
        layer,
        parent,
        out: &mut out,
    };
    w.walk_dir(Path::new(""), parent_is_dir, true)?;
    out.sort();
    Ok(out)
}

struct Walker<'a> {
    layer: &'a Path,
    parent: Option<&'a Path>,
    out: &'a mut Vec<Change>,
}

impl Walker<'_> {
    /// Compares directory `rel` of the layer with the same directory of the parent
    /// (`old_is_dir` says whether the parent has a directory there). `self_reported`:
    /// the directory itself is already in the list.
    fn walk_dir(&mut self, rel: &Path, old_is_dir: bool, self_reported: bool) -> Result<()> {
        let start = self.out.len();
        let new_dir = self.layer.join(rel);
        let mut old_names: BTreeSet<OsString> = BTreeSet::new();
        if old_is_dir {
            if let Some(p) = self.parent {
                let old_dir = p.join(rel);
                for e in fs::read_dir(&old_dir).ctx("read directory", &old_dir)? {
                    old_names.insert(e.ctx("read directory", &old_dir)?.file_name());
                }
            }
        }
        let mut new_names: Vec<OsString> = Vec::new();
        for e in fs::read_dir(&new_dir).ctx("read directory", &new_dir)? {
            new_names.push(e.ctx("read directory", &new_dir)?.file_name());
        }
        new_names.sort();
        for name in new_names {
            let child_rel = rel.join(&name);
            let new_path = self.layer.join(&child_rel);
            let new_md = fs::symlink_metadata(&new_path).ctx("stat", &new_path)?;
            let old = if old_names.remove(&name) {
                let old_path = self.parent.map(|p| p.join(&child_rel)).unwrap_or_default();
                let old_md = fs::symlink_metadata(&old_path).ctx("stat", &old_path)?;
                Some((old_path, old_md))
            } else {
                None
            };
            let (reported, child_old_is_dir) = match &old {
                None => {
                    self.push(&child_rel, ChangeKind::Add);
                    (true, false)
                }
                Some((old_path, old_md)) => {
                    let differs = entry_differs(old_path, old_md, &new_path, &new_md)?;
                    if differs {
                        self.push(&child_rel, ChangeKind::Modify);
                    }
                    (differs, old_md.is_dir())
                }
            };
            if new_md.is_dir() {
                self.walk_dir(&child_rel, child_old_is_dir, reported)?;
            }
        }
        for name in old_names {
            self.push(&rel.join(name), ChangeKind::Delete);
        }
        if self.out.len() > start && !self_reported && rel != Path::new("") {
            self.push(rel, ChangeKind::Modify);
        }
        Ok(())
    }

    fn push(&mut self, rel: &Path, kind: ChangeKind) {
        tracing::trace!(path = %rel.display(), ?kind, "change");
        self.out.push(Change {
            path: Path::new("/").join(rel),
            kind,
        });
    }
}

/// Whether two entries differ by the rules in the module doc.
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
    Ok(read_xattrs(old_path)? != read_xattrs(new_path)?)
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
        let p = join_inside(root, &c.path);
        let md = fs::symlink_metadata(&p).ctx("stat", &p)?;
        if md.is_file() && (md.nlink() < 2 || seen.insert((md.dev(), md.ino()))) {
            total += md.size();
        }
    }
    Ok(total)
}

/// `root` joined with the absolute in-layer path `p`, keeping only normal components.
fn join_inside(root: &Path, p: &Path) -> PathBuf {
    root.join(rel_of(p))
}

/// The relative form of an in-layer path (`/a/b` -> `a/b`), keeping only normal
/// components, so a hostile change list cannot point outside the root.
fn rel_of(p: &Path) -> PathBuf {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Streams an OCI layer tar of `changes` (as [`changes_dirs`] returns them) taken from
/// `root`: added and modified entries with full metadata (mode, numeric uid/gid, mtime
/// in whole seconds, xattrs as PAX `SCHILY.xattr.*` (except overlayfs' private
/// `trusted.overlay.*`), devices, symlinks, hard links
/// within the exported set as tar hard links), deletions as empty `.wh.<name>` files,
/// and every parent directory of a changed path, so the tar applies on its own.
///
/// A writer thread fills a pipe; the returned reader yields the tar in constant memory.
/// An error in the writer (a file vanished mid-export...) surfaces as an `io::Error`
/// from `read` at the end of the stream. Dropping the reader early stops the writer and
/// waits for it.
pub fn export_changes(root: &Path, changes: &[Change]) -> Result<Box<dyn Read + Send>> {
    let (r, w) = nix::unistd::pipe().ctx("create pipe", root)?;
    let root = root.to_path_buf();
    let changes = changes.to_vec();
    let handle = std::thread::Builder::new()
        .name("export-changes".into())
        .spawn(move || {
            let out = BufWriter::with_capacity(256 * 1024, File::from(w));
            let mut out = write_changes_tar(&root, &changes, out)?;
            out.flush().ctx("write tar", &root)
        })
        .ctx("spawn export thread", "export-changes")?;
    Ok(Box::new(ExportReader {
        pipe: Some(File::from(r)),
        handle: Some(handle),
    }))
}

/// The read end of [`export_changes`]' pipe plus its writer thread.
#[derive(Debug)]
pub struct ExportReader {
    pipe: Option<File>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl ExportReader {
    fn join(&mut self) -> io::Result<()> {
        match self.handle.take().map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(io::Error::other(e)),
            Some(Err(_)) => Err(io::Error::other("tar export thread panicked")),
        }
    }
}

impl Read for ExportReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(0);
        };
        let n = pipe.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.pipe = None;
            self.join()?;
        }
        Ok(n)
    }
}

impl Drop for ExportReader {
    fn drop(&mut self) {
        // Close our end first so a writer blocked on a full pipe gets EPIPE and ends.
        self.pipe = None;
        if let Err(e) = self.join() {
            tracing::debug!(error = %e, "tar export ended early");
        }
    }
}

/// Writes the tar [`export_changes`] streams into `out` and returns `out`.
pub fn write_changes_tar<W: Write>(root: &Path, changes: &[Change], out: W) -> Result<W> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a.path == b.path);
    let mut tw = TarWriter {
        b: tar::Builder::new(out),
        root,
        emitted_dirs: HashSet::new(),
        links: HashMap::new(),
    };
    'changes: for c in sorted {
        let rel = rel_of(&c.path);
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            continue;
        };
        // Parents first, so the tar applies cleanly on its own.
        let mut anc = PathBuf::new();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for comp in parents {
            anc.push(comp);
            if tw.emitted_dirs.contains(&anc) {
                continue;
            }
            let full = root.join(&anc);
            match fs::symlink_metadata(&full) {
                Ok(md) if md.is_dir() => tw.append(&anc, &md)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound && c.kind == ChangeKind::Delete => {
                    // Under a directory that is itself gone: its whiteout covers this.
                    tracing::debug!(path = %c.path.display(), "skipping delete below a deleted dir");
                    continue 'changes;
                }
                Ok(_) => {
                    return Err(DriverError::io(
                        "export parent",
                        full,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ))
                }
                Err(e) => return Err(DriverError::io("stat", full, e)),
            }
        }
        match c.kind {
            ChangeKind::Delete => {
                let mut wh = OsString::from(WH_PREFIX);
                wh.push(&name);
                let wh_rel = rel.with_file_name(wh);
                let mut h = Header::new_ustar();
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                h.set_mtime(0);
                h.set_uid(0);
                h.set_gid(0);
                tw.append_header(&wh_rel, h, Vec::new(), io::empty())?;
            }
            ChangeKind::Add | ChangeKind::Modify => {
                if tw.emitted_dirs.contains(&rel) {
                    continue;
                }
                let full = root.join(&rel);
                let md = fs::symlink_metadata(&full).ctx("stat", &full)?;
                tw.append(&rel, &md)?;
            }
        }
    }
    let b = tw.b;
    b.into_inner().ctx("finish tar", root)
}

/// Xattrs overlayfs keeps for itself on upper directories; never exported.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// ustar numeric fields hold 7 octal digits for ids and 11 for sizes; larger values go
/// into PAX records.
const USTAR_MAX_ID: u64 = 0o7777777;
const USTAR_MAX_SIZE: u64 = 0o77777777777;

struct TarWriter<'a, W: Write> {
    b: tar::Builder<W>,
    root: &'a Path,
    emitted_dirs: HashSet<PathBuf>,
    /// (dev, ino) -> first exported path, for hard links.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TarWriter<'_, W> {
    /// Appends the entry at `rel` (whose lstat is `md`) with its metadata.
    fn append(&mut self, rel: &Path, md: &Metadata) -> Result<()> {
        let full = self.root.join(rel);
        let mut h = Header::new_ustar();
        h.set_mode(md.mode() & 0o7777);
        h.set_mtime(md.mtime().max(0) as u64);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let (uid, gid) = (u64::from(md.uid()), u64::from(md.gid()));
        if uid > USTAR_MAX_ID {
            pax.push(("uid".into(), uid.to_string().into_bytes()));
        } else {
            h.set_uid(uid);
        }
        if gid > USTAR_MAX_ID {
            pax.push(("gid".into(), gid.to_string().into_bytes()));
        } else {
            h.set_gid(gid);
        }
        for (name, value) in read_xattrs(&full)? {
            match name.to_str() {
                // Overlayfs bookkeeping (opaque, origin, redirect) is not layer content.
                Some(n) if n.starts_with(OVERLAY_XATTR_PREFIX) => {}
                Some(n) => pax.push((format!("SCHILY.xattr.{n}"), value)),
                None => {
                    tracing::warn!(path = %full.display(), name = ?name, "skipping non-UTF-8 xattr name")
                }
            }
        }
        let ft = md.file_type();
        let mut path = rel.to_path_buf();
        let mut link: Option<PathBuf> = None;
        let mut file: Option<File> = None;
        if ft.is_file() {
            let key = (md.dev(), md.ino());
            match self.links.get(&key) {
                Some(first) if md.nlink() > 1 => {
                    h.set_entry_type(EntryType::Link);
                    link = Some(first.clone());
                }
                _ => {
                    if md.nlink() > 1 {
                        self.links.insert(key, rel.to_path_buf());
                    }
                    h.set_entry_type(EntryType::Regular);
                    if md.size() > USTAR_MAX_SIZE {
                        pax.push(("size".into(), md.size().to_string().into_bytes()));
                    } else {
                        h.set_size(md.size());
                    }
                    file = Some(
                        fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(&full)
                            .ctx("open", &full)?,
                    );
                }
            }
        } else if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            let mut s = rel.as_os_str().to_os_string();
            s.push("/");
            path = PathBuf::from(s);
            self.emitted_dirs.insert(rel.to_path_buf());
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            link = Some(fs::read_link(&full).ctx("read link", &full)?);
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let rdev = md.rdev();
            h.set_device_major(libc::major(rdev))
                .ctx("set device major", &full)?;
            h.set_device_minor(libc::minor(rdev))
                .ctx("set device minor", &full)?;
        } else if ft.is_fifo() {
            h.set_entry_type(EntryType::Fifo);
        } else {
            // Sockets are not archived (neither does moby).
            tracing::debug!(path = %full.display(), "skipping socket");
            return Ok(());
        }
        if let Some(l) = &link {
            if h.set_link_name(l).is_err() {
                pax.push(("linkpath".into(), l.as_os_str().as_bytes().to_vec()));
            }
        }
        let size = if ft.is_file() && link.is_none() {
            md.size()
        } else {
            0
        };
        match file {
            Some(f) => self.append_header(
                &path,
                h,
                pax,
                ExactReader {
                    inner: f,
                    remaining: size,
                    path: full,
                },
            ),
            None => self.append_header(&path, h, pax, io::empty()),
        }
    }

    /// Sets the path (PAX `path` when too long for ustar), writes PAX records, header and data.
    fn append_header<R: Read>(
        &mut self,
        path: &Path,
        mut h: Header,
        mut pax: Vec<(String, Vec<u8>)>,
        data: R,
    ) -> Result<()> {
        if h.set_path(path).is_err() {
            let bytes = path.as_os_str().as_bytes();
            pax.push(("path".into(), bytes.to_vec()));
            let name = &mut h.as_old_mut().name;
            let n = bytes.len().min(name.len());
            name[..n].copy_from_slice(&bytes[..n]);
        }
        if !pax.is_empty() {
            self.b
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .ctx("write tar", path)?;
        }
        h.set_cksum();
        self.b.append(&h, data).map_err(|e| match e.get_ref() {
            Some(_) if e.kind() == io::ErrorKind::UnexpectedEof => {
                DriverError::io("export (file changed while exporting)", path, e)
            }
            _ => DriverError::io("write tar", path, e),
        })
    }
}

/// Reads exactly `remaining` bytes of a file, failing if it shrank, stopping if it grew,
/// so the tar entry matches its header.
struct ExactReader {
    inner: File,
    remaining: u64,
    path: PathBuf,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being exported", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
