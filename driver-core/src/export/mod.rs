//! The one layer-tar exporter: `diff`, `changes` and `diff_size` of every driver, naive
//! (two full trees) or native (a stack whose top branch is the layer's own content).
//! The same changes give the same bytes whatever the driver.
//!
//! ## What is a change (moby's `ChangesDirs` rules, so `changes` prints what `docker diff` prints)
//! - Entries are compared by `lstat`: file type and mode, uid, gid, rdev; for everything
//!   but directories also size and mtime (seconds and nanoseconds); for symlinks the
//!   target; and the extended attributes other than overlayfs' private
//!   `trusted.overlay.*`. Inode numbers, link counts and ctime are not compared (they
//!   change whenever a tree is copied or a file copied up). A native source applies the
//!   same comparison to each entry of its top branch, so a directory or file overlayfs
//!   merely copied up is not a change.
//! - A directory's own size and mtime are ignored, but a directory that holds a change is
//!   reported (`Modify`), so the tar restores its permissions.
//! - Everything below an added directory is `Add`; only the top of a deleted directory
//!   is `Delete`. The root is never reported. Sockets are neither compared nor exported.
//!
//! ## "This directory's lower content is gone": per-name whiteouts, never opaque markers
//! A naive comparison sees a directory that was `rm -rf`ed and recreated as the
//! deletion of each parent child that is not there any more; overlayfs records the same
//! action as an opaque directory, and an application of `.wh..wh..opq` as well. The
//! exporter uses one representation for both: a deletion of each name the parent
//! showed (read through [`LayerStack::read_dir`] of the parent's stack) and that the
//! layer does not hold. That is the only form a naive comparison can produce, it says
//! exactly what changed (a recreated child with the same metadata is no change), and
//! `changes` lists the same deletions. A whiteout of a name the parent does not have
//! deletes nothing and is not exported.
//!
//! ## Tar format (fixed; see `writer.rs`)
//! - Entries depth first, names sorted byte-wise within a directory (so parents come
//!   before children and the order is `changes`' path order); a whiteout sits where the
//!   name it deletes sorts.
//! - ustar headers (`ustar\0`, version `00`), uname/gname empty, device numbers written
//!   (0 for non-devices), mode = permission bits incl. setuid/setgid/sticky, mtime in
//!   whole seconds (moby truncates too, for stable DiffIDs), no atime/ctime.
//! - A PAX extended header (`././@PaxHeader`, records sorted by key) only when needed:
//!   `path`/`linkpath` too long for ustar, `uid`/`gid` above 7 octal digits, `size`
//!   above 11, negative or huge `mtime`, and xattrs as `SCHILY.xattr.<name>`
//!   (never `trusted.overlay.*`).
//! - Directories are `dir/`; a regular file whose inode was already exported (link
//!   count > 1) is a hard link to the first path of its group in export order; symlinks,
//!   char/block devices (major/minor) and fifos as such.
//! - Deletions are empty regular files `.wh.<name>`, mode 0644, 0:0, mtime 0: a
//!   whiteout's only meaning is its name (OCI image-spec layer.md).
//! - A regular file whose size is not its `lstat` size while it is copied (it shrank or
//!   grew) is an error naming it; a failed export never writes the end-of-archive
//!   marker, and the reader of [`diff`] gets the error.
//!
//! ## Streaming
//! [`diff`] runs the walk in a writer thread that fills a pipe; memory is the hard-link
//! table plus one pending directory and one sorted listing per directory level.

mod walk;
mod writer;

use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::thread::JoinHandle;

use crate::driver::{Change, ChangeKind};
use crate::error::{DriverError, IoContext, Result};
use crate::stack::LayerStack;

use walk::{walk, Sink};
use writer::TarWriter;

/// What a diff compares.
#[derive(Debug, Clone)]
pub enum DiffSource {
    /// Two full trees (vfs layers, or two mounts): the layer's and its parent's (`None`:
    /// everything is added).
    Trees {
        /// The layer's root filesystem.
        layer: PathBuf,
        /// The parent's root filesystem.
        parent: Option<PathBuf>,
    },
    /// A stack whose top branch holds exactly the layer's own content in the stack's
    /// whiteout format (overlay2's `diff/`, an aufs branch), the branches below being
    /// the parent. Only the top branch is walked (O(changes)); the parent is read
    /// through [`LayerStack`] lookups, and listings below opaque directories.
    Top(LayerStack),
}

impl DiffSource {
    /// Where added and modified entries are read from.
    fn new_root(&self) -> Result<&Path> {
        match self {
            DiffSource::Trees { layer, .. } => Ok(layer),
            DiffSource::Top(s) => s.branches().first().map(PathBuf::as_path).ok_or_else(|| {
                DriverError::io(
                    "export",
                    PathBuf::new(),
                    io::Error::new(io::ErrorKind::InvalidInput, "layer stack has no branch"),
                )
            }),
        }
    }
}

/// The changes of `src`, sorted by path (the export order). Paths are absolute inside
/// the layer (`/etc/hosts`).
pub fn changes(src: &DiffSource) -> Result<Vec<Change>> {
    struct Collect(Vec<Change>);
    impl Sink for Collect {
        fn change(&mut self, rel: &Path, kind: ChangeKind, _: Option<&Metadata>) -> Result<()> {
            self.0.push(Change {
                path: Path::new("/").join(rel),
                kind,
            });
            Ok(())
        }
    }
    let mut c = Collect(Vec::new());
    walk(src, &mut c)?;
    debug_assert!(c.0.windows(2).all(|w| w[0].path < w[1].path));
    Ok(c.0)
}

/// Bytes of regular-file content the tar of `src` holds: added and modified regular
/// files, each hard-link group once (moby's `ChangesSize`).
pub fn size(src: &DiffSource) -> Result<u64> {
    #[derive(Default)]
    struct Size {
        total: u64,
        seen: std::collections::HashSet<(u64, u64)>,
    }
    impl Sink for Size {
        fn change(&mut self, _: &Path, _: ChangeKind, md: Option<&Metadata>) -> Result<()> {
            if let Some(m) = md.filter(|m| m.is_file()) {
                if m.nlink() < 2 || self.seen.insert((m.dev(), m.ino())) {
                    self.total += m.size();
                }
            }
            Ok(())
        }
    }
    let mut s = Size::default();
    walk(src, &mut s)?;
    Ok(s.total)
}

struct TarSink<W: Write>(TarWriter<W>);

impl<W: Write> Sink for TarSink<W> {
    fn change(&mut self, rel: &Path, kind: ChangeKind, md: Option<&Metadata>) -> Result<()> {
        match (kind, md) {
            (ChangeKind::Delete, _) => self.0.whiteout(rel),
            (_, Some(m)) => self.0.entry(rel, m),
            (_, None) => unreachable!("the walk passes metadata for added/modified entries"),
        }
    }
}

/// Writes the tar of `src` into `out` (format in the module doc) and returns `out`.
pub fn write_diff<W: Write>(src: &DiffSource, out: W) -> Result<W> {
    let mut sink = TarSink(TarWriter::new(src.new_root()?, out)?);
    walk(src, &mut sink)?;
    sink.0.finish()
}

/// Streams the tar of `src`: a writer thread runs [`write_diff`] into a pipe; the
/// returned reader yields the tar in constant memory and reports the writer's error
/// (a file that changed size, vanished...) from `read` instead of end of stream.
pub fn diff(src: DiffSource) -> Result<ExportReader> {
    let root = src.new_root()?.to_path_buf();
    spawn(root, move |out| write_diff(&src, out).map(drop))
}

/// Runs `write` in a writer thread filling a pipe.
fn spawn<F>(root: PathBuf, write: F) -> Result<ExportReader>
where
    F: FnOnce(BufWriter<File>) -> Result<()> + Send + 'static,
{
    let (r, w) = nix::unistd::pipe().ctx("create pipe", &root)?;
    let handle = std::thread::Builder::new()
        .name("export-tar".into())
        .spawn(move || write(BufWriter::with_capacity(256 * 1024, File::from(w))))
        .ctx("spawn export thread", "export-tar")?;
    Ok(ExportReader {
        pipe: Some(File::from(r)),
        handle: Some(handle),
    })
}

/// The read end of an export's pipe plus its writer thread.
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

/// The relative form of an in-layer path (`/a/b` -> `a/b`), keeping only normal
/// components, so a hostile change list cannot point outside the root.
pub(crate) fn rel_of(p: &Path) -> PathBuf {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Writes the tar of an explicit change list (as [`changes`] returns them) taken from
/// the full tree `root`, in the same format; parents of changed paths missing from the
/// list are added. For callers holding a list; drivers use [`write_diff`].
pub fn write_changes<W: Write>(root: &Path, list: &[Change], out: W) -> Result<W> {
    let mut sorted: Vec<&Change> = list.iter().collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a.path == b.path);
    let mut w = TarWriter::new(root, out)?;
    let mut emitted: Vec<PathBuf> = Vec::new(); // directories, as a stack of ancestors
    'changes: for c in sorted {
        let rel = rel_of(&c.path);
        if rel.file_name().is_none() {
            continue;
        }
        emitted.retain(|d| rel.starts_with(d));
        let mut anc = PathBuf::new();
        for comp in rel.parent().into_iter().flat_map(Path::components) {
            anc.push(comp);
            if emitted.contains(&anc) {
                continue;
            }
            let full = root.join(&anc);
            match fs::symlink_metadata(&full) {
                Ok(md) if md.is_dir() => {
                    w.entry(&anc, &md)?;
                    emitted.push(anc.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && c.kind == ChangeKind::Delete => {
                    // Below a directory that is itself gone: its whiteout covers this.
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
            ChangeKind::Delete => w.whiteout(&rel)?,
            ChangeKind::Add | ChangeKind::Modify => {
                if emitted.contains(&rel) {
                    continue;
                }
                let full = root.join(&rel);
                let md = fs::symlink_metadata(&full).ctx("stat", &full)?;
                w.entry(&rel, &md)?;
                if md.is_dir() {
                    emitted.push(rel);
                }
            }
        }
    }
    w.finish()
}

/// [`write_changes`] streamed through a writer thread, like [`diff`].
pub fn export_changes(root: &Path, list: &[Change]) -> Result<ExportReader> {
    let root = root.to_path_buf();
    let list = list.to_vec();
    spawn(root.clone(), move |out| {
        write_changes(&root, &list, out).map(drop)
    })
}

#[cfg(test)]
mod tests;
