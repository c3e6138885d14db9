//! Safe application of a (hostile) layer tar to a directory.
//!
//! Every entry is placed fd-relative inside the layer root, never by string prefix:
//! - the root is opened once; each entry's parent directory is opened with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so symlinks met on the way
//!   (absolute or `..`) are clamped to the root (Docker's `FollowSymlinkInScope`,
//!   race-free), creating missing directories (0755) one component at a time;
//! - the final component is created relative to that parent fd and never followed
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat(flags = 0)`,
//!   `mknodat`): whatever was there (file, symlink, directory) is removed first;
//! - names with `..`, absolute names, NUL bytes and the bad whiteouts `.wh.`, `.wh..`,
//!   `.wh...` are refused with [`DriverError::UnsafeEntry`]; hard-link targets are
//!   resolved in the root the same way and must name an existing non-directory.
//!
//! Semantics worth knowing:
//! - a missing parent is created (0755, owner of the process); a parent that is a
//!   dangling symlink gets its in-root target created, like Docker's `MkdirAll` after
//!   `FollowSymlinkInScope`; a parent that is a non-directory is an [`DriverError::Io`]
//!   naming the path;
//! - an existing directory hit by a directory entry is kept (content too) and only its
//!   metadata changes; anything else at the name is replaced (last entry wins);
//! - order per entry: content, chown (only when `preserve_owners`), xattrs, chmod,
//!   times; directory modes and times are applied after the last entry, deepest first;
//!   a chown to the owner a new node already has is skipped, and a regular file is
//!   created with its final mode (no chmod) when no special bit and no umask or
//!   default ACL is in the way (`entry.rs`, `create_mode`);
//! - hard links get no metadata of their own (it would change the shared inode), as
//!   with GNU tar; absolute or `..` hard-link targets are refused;
//! - `./` applies its owner, xattrs, mode and times to the root; a non-directory named
//!   `.` is refused;
//! - AUFS metadata (`.wh..wh.*` names, anything below a top-level `.wh..wh.*` dir) is
//!   skipped in every format; pax global headers are skipped; unknown entry types are
//!   refused;
//! - PAX (`x`) and GNU long-name (`L`/`K`) headers are read from their raw bytes by
//!   `exthdr.rs`, PAX records by their length prefix, so binary values (xattrs holding
//!   `\n` or NUL) and the records after them (`path`, `uid`...) are honoured; the tar
//!   crate's own PAX parser splits at newlines and is not used;
//! - numeric fields (uid, gid, mtime, size) are octal or GNU base-256 two's complement
//!   (`numeric.rs`): a negative mtime is a time before 1970, a negative uid, gid or size
//!   is an error naming the entry;
//! - without openat2 (ENOSYS) the same resolution is done one `O_NOFOLLOW` component at
//!   a time, following symlinks in userspace with the same clamping;
//! - removal (replacements, whiteouts, opaque dirs) is fd-relative, never follows
//!   symlinks and holds one directory fd whatever the depth.
//!
//! ## Union rules (one tree on every driver)
//! A layer applies as if onto the full tree below it (OCI image-spec `layer.md`), whether
//! the driver stores full trees (vfs) or only each layer's changes (overlay, aufs, with
//! [`ApplyOptions::lower`] naming the stack below):
//! - an entry's parent directories are resolved in the *merged* view (this layer over
//!   the stack below, [`crate::stack::LayerStack::resolve`]): a symlink anywhere in the
//!   stack (`bin -> usr/bin`, usrmerge) leads the entry to where it points, clamped to
//!   the root; a parent missing from this layer but present below is created in this
//!   layer with the attributes of the directory it shadows (mode incl. sticky/setgid,
//!   owner, xattrs, times), so it never hides them; a parent absent everywhere (or
//!   whited out) is created `0755`; in overlay form a directory made where this layer
//!   has a whiteout becomes opaque, so nothing below shows through;
//! - whiteouts apply to lower layers only: `.wh.x` after this layer wrote a file `x`
//!   changes nothing; after it wrote a directory `x` (or anything below `x`), `x`
//!   becomes opaque, keeping this layer's entries below it; opaque markers likewise
//!   keep this layer's own entries;
//! - a hard link whose target exists only below is linked to a copy-up of the target
//!   ([`crate::copyup`]) and the target's other visible names join it, so the link
//!   joins the whole hard-link group as on one tree.
//!
//! Accepted stream formats (uncompressed; decompression is the caller's):
//! - v7, ustar, GNU (`L`/`K` long names, base-256 numbers) and POSIX pax (`x` records
//!   by length prefix, `g` skipped) headers, mixed freely;
//! - GNU sparse files in every encoding GNU tar writes: the old GNU `S` type and the
//!   PAX versions 0.0 (`GNU.sparse.offset`/`numbytes` records), 0.1 (`GNU.sparse.map`)
//!   and 1.0 (map at the start of the data), with `GNUSparseFile.<pid>/` member names
//!   replaced by `GNU.sparse.name`; they are written with real holes (seek, then the
//!   real size set) and a bad map is an error naming the entry (`sparse.rs`);
//! - the end of the archive: two zero blocks and zero padding, one zero block, or none
//!   when the stream ends at an entry boundary (as GNU tar accepts); a stream cut inside
//!   a header, data or padding is an error, and so is non-zero data after the first zero
//!   block (`trailer.rs`). The reader is read to its end.
//!
//! Files: `path.rs` (name cleaning, in-root resolution), `entry.rs` (one function per
//! entry kind), `exthdr.rs` (PAX / GNU long-name headers), `sparse.rs` (GNU sparse
//! maps and hole-keeping writes), `numeric.rs` (base-256 fields), `trailer.rs` (the end
//! of the stream), `whiteouts.rs`, `xattr.rs`, `meta.rs` (owners, modes, times),
//! `remove.rs` (fd-relative recursive removal), `union.rs` (merged-view placement of
//! entries), `writer.rs` (regular files' content and metadata written on a second
//! thread, through the fd the parsing thread created), `shared.rs` (streams that lend
//! their chunks: file content written from them without a copy).

mod entry;
mod exthdr;
mod meta;
mod numeric;
mod path;
mod remove;
mod shared;
mod sparse;
#[cfg(test)]
mod tests;
mod trailer;
mod union;
pub(crate) mod whiteouts;
mod writer;
mod xattr;

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use tar::EntryType;
use tracing::{debug, instrument, trace};

use crate::error::{DriverError, IoContext, Result};
use crate::whiteout::WhiteoutFormat;

use self::exthdr::{Ext, Tap, Tape};
use self::meta::{DeferredDir, Meta};
use self::path::Resolver;
use self::xattr::Xattrs;

/// Size of the reused buffer file content is copied through.
const COPY_BUF_SIZE: usize = 256 * 1024;
/// Read-ahead buffer around the caller's reader (tar headers are 512-byte reads). Small
/// enough that file content read in bigger pieces (the writer's chunks, `writer.rs`)
/// bypasses it once it is empty (`BufReader` reads straight into the caller's buffer
/// then): content is copied once from the caller's reader, not twice (BENCHMARKS.md,
/// "Import at tar speed"). GNU tar reads 10 KiB records.
const READ_BUF_SIZE: usize = 32 * 1024;

pub use self::shared::{ChunkedRead, LayerStream, SharedBytes};

/// What the tar crate reads from: the stream, recorded between entries.
type Src<'r> = Tap<InputCell<'r>>;

/// The stream, shared by the tar reader (through the [`Tap`]) and the [`Applier`],
/// which takes regular files' content from a chunked stream directly (`shared.rs`).
struct InputCell<'r>(Rc<RefCell<shared::Input<'r>>>);

impl Read for InputCell<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(out)
    }
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How whiteouts are represented on disk.
    pub whiteouts: WhiteoutFormat,
    /// Apply numeric uid/gid from the tar (true as root; false when unprivileged).
    pub preserve_owners: bool,
    /// The layers below the one being written, top first, for drivers whose layer
    /// directory holds only its own changes (overlay, aufs). Entries are then placed as
    /// if applied onto the full tree below (see the module doc, "Union rules"). `None`
    /// (or an empty stack) for a base layer and for full-tree layers (vfs).
    pub lower: Option<crate::stack::LayerStack>,
}

impl ApplyOptions {
    /// Options for a driver storing whiteouts in `format`, owners preserved.
    pub fn new(whiteouts: WhiteoutFormat) -> Self {
        ApplyOptions {
            whiteouts,
            preserve_owners: true,
            lower: None,
        }
    }

    /// These options with `lower` as the stack below the layer (see [`Self::lower`]).
    pub fn with_lower(mut self, lower: crate::stack::LayerStack) -> Self {
        self.lower = Some(lower);
        self
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries read from the tar.
    pub entries: u64,
    /// Bytes of regular-file content written (moby's "applied size").
    pub content_bytes: u64,
}

/// Applies the (uncompressed) tar `reader` to the directory `root`.
///
/// Errors: [`DriverError::UnsafeEntry`] for an entry that could leave `root` or is
/// malformed (named in the error), [`DriverError::Tar`] for an unreadable stream
/// (truncated inside an entry, garbage, bad checksum, bad sparse map, negative numbers,
/// non-zero data after the end-of-archive marker), [`DriverError::Io`] naming the
/// operation and path for a failed filesystem call. On error the directory is left
/// partially applied; the caller discards the layer.
///
/// On success the reader has been read to its end (after the archive only zeros may
/// follow); on error it may have been read past the failing entry.
#[instrument(level = "debug", skip(reader, opts), fields(whiteouts = ?opts.whiteouts))]
pub fn apply_tar(root: &Path, reader: &mut dyn Read, opts: &ApplyOptions) -> Result<ApplyStats> {
    apply_inner(root, LayerStream::Read(reader), opts, false)
}

/// [`apply_tar`] of either kind of [`LayerStream`]: a chunked one has its regular files
/// written from its chunks without a copy (`shared.rs`); the tree is the same.
pub fn apply_layer_stream(
    root: &Path,
    stream: LayerStream<'_>,
    opts: &ApplyOptions,
) -> Result<ApplyStats> {
    apply_inner(root, stream, opts, false)
}

/// Applies the layer tar `reader` to the top branch of `stack` (a layer's own
/// directory), onto the branches below it, in the stack's whiteout format: what a
/// driver whose layers are [`LayerStack`](crate::stack::LayerStack)s (overlay2, aufs)
/// does in `apply_diff`. Owners are preserved. Errors as [`apply_tar`].
pub fn apply_to_stack(
    stack: &crate::stack::LayerStack,
    reader: &mut dyn Read,
) -> Result<ApplyStats> {
    apply_stream_to_stack(stack, LayerStream::Read(reader))
}

/// [`apply_to_stack`] of either kind of [`LayerStream`] (see [`apply_layer_stream`]).
pub fn apply_stream_to_stack(
    stack: &crate::stack::LayerStack,
    stream: LayerStream<'_>,
) -> Result<ApplyStats> {
    let Some(top) = stack.branches().first() else {
        return Err(DriverError::io(
            "apply layer",
            PathBuf::new(),
            io::Error::new(io::ErrorKind::InvalidInput, "stack has no branch"),
        ));
    };
    let opts = ApplyOptions::new(stack.format()).with_lower(stack.below_top());
    apply_layer_stream(top, stream, &opts)
}

/// [`apply_tar`], optionally resolving without openat2 (tests of the fallback).
fn apply_inner(
    root: &Path,
    stream: LayerStream<'_>,
    opts: &ApplyOptions,
    force_walk: bool,
) -> Result<ApplyStats> {
    let tape = Rc::new(Tape::default());
    let input = Rc::new(RefCell::new(match stream {
        LayerStream::Read(r) => shared::Input::Buffered(BufReader::with_capacity(READ_BUF_SIZE, r)),
        LayerStream::Chunked(c) => shared::Input::Chunked(c),
    }));
    let mut applier = Applier::open(root, opts, tape.clone(), input.clone())?;
    if force_walk {
        applier.force_walk();
    }
    let mut archive = tar::Archive::new(Tap::new(InputCell(input), tape.clone()));
    archive.set_ignore_zeros(false);
    // "With seek": padding is skipped through `Tap`'s Seek (exthdr.rs), which reads it.
    let entries = archive
        .entries_with_seek()
        .map_err(|source| DriverError::Tar {
            entry: None,
            source,
        })?;
    // Record the extension headers before the first entry, then after each one.
    tape.start();
    for entry in entries {
        let mut entry = entry.map_err(|source| header_error(source, &tape, &applier))?;
        applier.apply_entry(&mut entry)?;
        // The tape must start right after this entry's data.
        applier.drain(&mut entry)?;
        tape.start();
    }
    let mut rest = archive.into_inner();
    trailer::check(&tape, &mut rest, &mut applier.buf).map_err(|source| DriverError::Tar {
        entry: None,
        source: after_entry(source, applier.last_entry()),
    })?;
    let stats = applier.finish()?;
    debug!(
        entries = stats.entries,
        bytes = stats.content_bytes,
        "tar applied"
    );
    Ok(stats)
}

/// The tar reader failed on a header: name the entry when the header has a negative
/// size (the tar crate only says "size overflow"), else say which entry came before.
fn header_error(source: io::Error, tape: &Tape, applier: &Applier<'_>) -> DriverError {
    if let Some((entry, why)) = tape.last_block().and_then(|b| numeric::negative_size(&b)) {
        return DriverError::Tar {
            entry: Some(entry),
            source: io::Error::new(io::ErrorKind::InvalidData, why),
        };
    }
    DriverError::Tar {
        entry: None,
        source: after_entry(source, applier.last_entry()),
    }
}

/// A header error is not about an entry yet; the previous entry's name tells where.
fn after_entry(source: io::Error, prev: Option<String>) -> io::Error {
    match prev {
        Some(prev) => io::Error::new(source.kind(), format!("after entry {prev:?}: {source}")),
        None => source,
    }
}

/// Kind of entry after mapping tar types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

/// State of one apply.
struct Applier<'o> {
    root_path: PathBuf,
    opts: &'o ApplyOptions,
    res: Resolver,
    stats: ApplyStats,
    /// Copy buffer, reused.
    buf: Vec<u8>,
    /// Raw name of the current entry (for errors).
    raw: Vec<u8>,
    /// Cleaned name of the current entry.
    path: Vec<u8>,
    /// Link target of the current entry (raw).
    link: Vec<u8>,
    /// Cleaned hard-link target.
    link_clean: Vec<u8>,
    xattrs: Xattrs,
    /// Raw bytes of the extension headers before the current entry.
    tape: Rc<Tape>,
    /// The stream the tar reader reads (regular files' content is taken from it
    /// directly when it lends its chunks: `shared.rs`).
    input: Rc<RefCell<shared::Input<'o>>>,
    deferred: Vec<DeferredDir>,
    /// Paths written by this tar and their ancestors: whiteouts never delete what the
    /// same tar wrote (OCI: they apply to lower layers only).
    written: Option<HashSet<Vec<u8>>>,
    have_entry: bool,
    /// This layer over [`ApplyOptions::lower`]: where entries land (`union.rs`).
    merged: crate::stack::LayerStack,
    /// Full-tree layers: times of directories of the tree below that an entry changes,
    /// as they were before (restored at the end unless the tar has their entry).
    kept_times: Vec<meta::DeferredDir>,
    /// Paths in `kept_times`.
    kept_seen: HashSet<Vec<u8>>,
    /// Writes regular files' content and metadata on a second thread (`writer.rs`);
    /// started at the first such file.
    writer: Option<writer::Writer>,
    /// Effective uid and gid: the owner of the files this apply creates.
    euid: u32,
    egid: u32,
    /// A parent directory fd and the owner new files get in it (`entry.rs`).
    new_file_owner: Option<(Rc<OwnedFd>, (u32, u32))>,
    /// The umask the kernel applies to files this apply creates, when nothing else can
    /// (no default ACL anywhere in the layer: see [`creation_umask`]); `None`: files
    /// are created `0600` and chmod-ed (`entry.rs`, `create_mode`).
    create_umask: Option<u32>,
}

impl<'o> Applier<'o> {
    fn open(
        root: &Path,
        opts: &'o ApplyOptions,
        tape: Rc<Tape>,
        input: Rc<RefCell<shared::Input<'o>>>,
    ) -> Result<Self> {
        let fd: OwnedFd = open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx("open layer root", root)?;
        Ok(Applier {
            root_path: root.to_path_buf(),
            opts,
            res: Resolver::new(fd),
            stats: ApplyStats::default(),
            buf: vec![0; COPY_BUF_SIZE],
            raw: Vec::new(),
            path: Vec::new(),
            link: Vec::new(),
            link_clean: Vec::new(),
            xattrs: Xattrs::default(),
            tape,
            input,
            deferred: Vec::new(),
            written: Some(HashSet::new()),
            have_entry: false,
            merged: Self::merged_stack(root, opts),
            kept_times: Vec::new(),
            kept_seen: HashSet::new(),
            writer: None,
            euid: nix::unistd::geteuid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            new_file_owner: None,
            create_umask: creation_umask(root),
        })
    }

    fn force_walk(&mut self) {
        #[cfg(test)]
        self.res.force_walk();
    }

    fn last_entry(&self) -> Option<String> {
        self.have_entry.then(|| self.entry_name())
    }

    /// The current entry's name as written in the tar, for messages.
    fn entry_name(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    fn unsafe_entry(&self, reason: impl Into<String>) -> DriverError {
        DriverError::UnsafeEntry {
            entry: self.entry_name(),
            reason: reason.into(),
        }
    }

    fn tar_err(&self, source: io::Error) -> DriverError {
        DriverError::Tar {
            entry: Some(self.entry_name()),
            source,
        }
    }

    /// `root/rel` for messages.
    fn abs(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        if rel.is_empty() {
            self.root_path.clone()
        } else {
            self.root_path.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    fn io(&self, op: &'static str, rel: &[u8], e: Errno) -> DriverError {
        DriverError::errno(op, self.abs(rel), e)
    }

    /// Reads what is left of the entry's data (skipped entries), so the next header
    /// starts at the next block boundary.
    fn drain(&mut self, entry: &mut tar::Entry<'_, Src<'_>>) -> Result<()> {
        loop {
            match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.tar_err(e)),
            }
        }
    }

    fn apply_entry(&mut self, entry: &mut tar::Entry<'_, Src<'_>>) -> Result<()> {
        self.tape.stop();
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions() {
            return Ok(());
        }
        self.stats.entries += 1;
        self.have_entry = true;
        // Header name and link first: they name the entry if its extensions are bad.
        self.raw.clear();
        self.raw.extend_from_slice(&entry.header().path_bytes());
        self.link.clear();
        if let Some(l) = entry.header().link_name_bytes() {
            self.link.extend_from_slice(&l);
        }
        let ext = self.read_ext(entry.raw_header_position())?;
        if self.create_umask.is_some()
            && self
                .xattrs
                .iter()
                .any(|(n, _)| n == DEFAULT_ACL_XATTR.as_bytes())
        {
            // Files created below this entry get their mode from the ACL, not the umask.
            debug!(entry = %self.entry_name(), "default ACL in the layer: files are chmod-ed after creation");
            self.create_umask = None;
        }
        if let Err(bad) = path::clean(&self.raw, &mut self.path) {
            return Err(self.unsafe_entry(bad.reason()));
        }
        let kind = match ty {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Old (v7) tars mark directories only by a trailing slash.
                if ty == EntryType::Regular && self.raw.last() == Some(&b'/') {
                    Kind::Dir
                } else {
                    Kind::File
                }
            }
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            EntryType::Char => Kind::Char,
            EntryType::Block => Kind::Block,
            EntryType::Fifo => Kind::Fifo,
            other => {
                return Err(self.unsafe_entry(format!(
                    "unsupported tar entry type {:?} ({:?})",
                    other,
                    char::from(other.as_byte())
                )))
            }
        };
        let meta = self.read_meta(entry, &ext)?;
        let data_len = entry.size();
        let layout = self.layout(ty, kind == Kind::File, &ext.sparse, entry, data_len)?;
        trace!(entry = %String::from_utf8_lossy(&self.raw), ?kind, "apply entry");

        if self.path.is_empty() {
            if kind != Kind::Dir {
                return Err(self.unsafe_entry("a non-directory cannot replace the layer root"));
            }
            return self.root_dir(meta);
        }

        // AUFS keeps its own metadata dirs at the branch root (`.wh..wh.plnk/`,
        // `.wh..wh.orph/`); like Docker, nothing below them is applied.
        let first = self.path.split(|b| *b == b'/').next().unwrap_or_default();
        if first.len() < self.path.len()
            && first.starts_with(crate::whiteout::WH_META_PREFIX.as_bytes())
        {
            debug!(entry = %self.entry_name(), "skipping AUFS metadata");
            return Ok(());
        }
        // A whiteout name as a directory (`.wh.x/y`, `.wh./y`): the parent would be made
        // as a plain directory on vfs and overlay2 but read as the whiteout of `x` by
        // aufs, so one image would give different trees. The OCI layer format reserves
        // the prefix; refused on every driver (found by the tar_apply fuzz target).
        let (parent, _) = path::split(&self.path);
        if parent
            .split(|b| *b == b'/')
            .any(|c| c.starts_with(crate::whiteout::WH_PREFIX.as_bytes()))
        {
            return Err(self.unsafe_entry(
                "a whiteout name (`.wh.` prefix) used as a directory in the entry's path",
            ));
        }
        // Where the entry goes in the merged tree: symlinked parents resolved, missing
        // parents made like the directories they shadow. A whiteout in a directory that
        // does not exist deletes nothing and makes no directory.
        let (_, name) = path::split(&self.path);
        let plain_whiteout = matches!(
            whiteouts::classify_bytes(name),
            whiteouts::Name::Whiteout(_)
        );
        if !self.union_parent(plain_whiteout)? {
            debug!(entry = %self.entry_name(), "whiteout in a missing directory: nothing to delete");
            return Ok(());
        }
        let mut kept_whiteout = false;
        let (_, name) = path::split(&self.path);
        if name.starts_with(crate::whiteout::WH_PREFIX.as_bytes()) {
            let wh = match whiteouts::classify_bytes(name) {
                whiteouts::Name::Plain => None,
                whiteouts::Name::Invalid => {
                    return Err(self
                        .unsafe_entry("invalid whiteout name (whiteout of nothing, `.` or `..`)"))
                }
                whiteouts::Name::Whiteout(t) => Some(whiteouts::Wh::Whiteout(t.to_vec())),
                whiteouts::Name::Opaque => Some(whiteouts::Wh::Opaque),
                whiteouts::Name::Meta => Some(whiteouts::Wh::Meta),
            };
            if let Some(wh) = wh {
                if self.whiteout(wh, &meta)? {
                    return Ok(());
                }
                // AUFS keeps the whiteout as a file: it is not content of this layer
                // (a directory made only to hold it is not "written" either).
                kept_whiteout = true;
            }
        }

        if let Some(set) = self.written.as_mut().filter(|_| !kept_whiteout) {
            mark_written(set, &self.path);
        }
        match kind {
            Kind::File => self.file(entry, &meta, &layout),
            Kind::Dir => self.dir(&meta),
            Kind::Symlink => self.symlink(&meta),
            Kind::HardLink => self.hardlink(),
            Kind::Char | Kind::Block | Kind::Fifo => self.node(kind, entry.header(), &meta),
        }
    }

    /// Parses the extension headers recorded before the entry at `header_pos`: the
    /// long name and link target replace the header's, xattrs are collected.
    fn read_ext(&mut self, header_pos: u64) -> Result<Ext> {
        self.xattrs.clear();
        let (raw, link) = (&mut self.raw, &mut self.link);
        let r = exthdr::parse(&self.tape, header_pos, &mut self.xattrs, |buf, ext| {
            if let Some(r) = ext.name() {
                raw.clear();
                raw.extend_from_slice(&buf[r]);
            }
            if let Some(r) = ext.link() {
                link.clear();
                link.extend_from_slice(&buf[r]);
            }
            ext.clone()
        });
        r.map_err(|e| self.tar_err(e))
    }

    /// Header fields plus the PAX records we honour (owners, sub-second times, size).
    fn read_meta(&mut self, entry: &tar::Entry<'_, Src<'_>>, ext: &Ext) -> Result<Meta> {
        let h = entry.header();
        let mode = h.mode().map_err(|e| self.tar_err(e))?;
        // uid, gid, mtime and size as GNU base-256 two's complement (numeric.rs).
        let num = numeric::numbers(h).map_err(|e| self.tar_err(invalid(e.to_string())))?;
        let uid = match ext.uid {
            Some(u) => u,
            None => u64::try_from(num.uid)
                .map_err(|_| self.tar_err(invalid(format!("negative uid {}", num.uid))))?,
        };
        let gid = match ext.gid {
            Some(g) => g,
            None => u64::try_from(num.gid)
                .map_err(|_| self.tar_err(invalid(format!("negative gid {}", num.gid))))?,
        };
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.unsafe_entry(format!("uid/gid {uid}:{gid} out of range")));
        };
        // The tar crate frames the data with its own reading of the size (unsigned
        // base-256, PAX `size` split at newlines): refuse an entry where it read another
        // size than we do rather than misread the rest of the stream.
        if num.size < 0 {
            return Err(self.tar_err(invalid(format!("negative size {}", num.size))));
        }
        let (want, framed) = match (ext.size, h.entry_type().is_gnu_sparse()) {
            // Old GNU sparse: the reader's size is the expanded one; compare the
            // condensed size it framed with the header field.
            (None, true) => (
                num.size as u64,
                h.entry_size().map_err(|e| self.tar_err(e))?,
            ),
            // PAX size on an `S` entry: the tar crate checks it against the map.
            (Some(_), true) => (0, 0),
            (want, false) => (want.unwrap_or(num.size as u64), entry.size()),
        };
        if want != framed {
            let what = if ext.size.is_some() {
                "PAX size"
            } else {
                "size"
            };
            return Err(self.tar_err(invalid(format!(
                "{what} {want} differs from the {framed} bytes the tar reader framed"
            ))));
        }
        let mtime = ext.mtime.unwrap_or_else(|| TimeSpec::new(num.mtime, 0));
        Ok(Meta {
            mode,
            uid,
            gid,
            atime: ext.atime.unwrap_or(mtime),
            mtime,
            size: entry.size(),
        })
    }

    fn finish(mut self) -> Result<ApplyStats> {
        // Directories get their modes and times while the file writer drains its
        // queue: every entry is made already (on this thread), and the writer only
        // writes, chowns, chmods, times and closes regular files through their own
        // fds, none of which changes a directory (not its mtime, and a directory's new
        // mode does not apply to open fds). The writer is joined before returning, so
        // every file is complete before the caller syncs or publishes the layer; its
        // error, if any, comes first.
        let writer = self.writer.take();
        let dirs = self.finish_dirs();
        if let Some(w) = writer {
            w.finish()?;
        }
        dirs?;
        Ok(self.stats)
    }

    /// The deferred directory modes and times (deepest first), and the times of
    /// directories below that this tar changed without an entry of their own.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.deferred);
        // Directories of the tree below that this tar changed without an entry of their
        // own get their times back (overlay's implied parents copy them the same way).
        let explicit: HashSet<&[u8]> = dirs.iter().map(|d| d.path.as_slice()).collect();
        let kept: Vec<meta::DeferredDir> = std::mem::take(&mut self.kept_times)
            .into_iter()
            .filter(|d| !explicit.contains(d.path.as_slice()))
            .collect();
        meta::apply_deferred(&mut self.res, kept, true)
            .map_err(|(p, e)| self.io("restore directory times", &p, e))?;
        meta::apply_deferred(&mut self.res, dirs, false)
            .map_err(|(p, e)| self.io("set directory mode and times", &p, e))
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Name of the xattr holding a directory's default ACL (which, where present, decides
/// the mode of files created in it instead of the umask).
const DEFAULT_ACL_XATTR: &str = "system.posix_acl_default";

/// The umask applied to files created in `root` during this apply, when the umask is
/// all that can strip bits from a creation mode there: the process umask (read once
/// from `/proc/self/status`, Linux 4.7+, without changing it), provided the layer
/// starts empty (a vfs child layer starts as a copy of its parent, whose directories
/// may hold default ACLs) and the root has no default ACL. Directories made during the
/// apply then inherit none; the ways one can still appear turn this off for the rest
/// of the apply: the tar sets one (`system.posix_acl_default` in an entry's xattrs,
/// [`Applier::apply_entry`]) or an implied parent copies one from the layer below
/// (`union.rs`, `make_dir`). `None` when any of this is unknown: every file is then
/// created `0600` and chmod-ed, as before.
fn creation_umask(root: &Path) -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())?;
    if has_default_acl(root) {
        return None;
    }
    std::fs::read_dir(root)
        .ok()?
        .next()
        .is_none()
        .then_some(umask)
}

/// Whether the directory `path` may have a default ACL (an unreadable answer counts as
/// yes; a filesystem without xattr support as no).
fn has_default_acl(path: &Path) -> bool {
    match ::xattr::get(path, DEFAULT_ACL_XATTR) {
        Ok(None) => false,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => false,
        _ => true,
    }
}

/// Records `path` and its ancestors as written by this tar.
fn mark_written(set: &mut HashSet<Vec<u8>>, path: &[u8]) {
    let mut p = path;
    loop {
        // Look before allocating: the ancestors are nearly always in already.
        if set.contains(p) || !set.insert(p.to_vec()) {
            return;
        }
        match p.iter().rposition(|b| *b == b'/') {
            Some(i) => p = &p[..i],
            None => return,
        }
    }
}
