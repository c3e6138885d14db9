//! Writing a layer's original tar back, byte for byte, from its tar-split metadata and
//! its content as the driver stores it.
//!
//! [`Reassembler`] is a [`Read`] that replays the metadata records: raw bytes as they
//! were, and for each file record the file's content read from the layer's own branch
//! (`Driver::stack`'s top branch: overlay2/aufs `diff/`, vfs's full tree). Whiteouts,
//! directories, links and devices have no content: their original entries (OCI `.wh.`
//! form, as the tar had them) come back from the recorded headers, whatever form the
//! driver stores them in (overlay2's 0/0 character devices, aufs `.wh.` files).
//!
//! A file is found by its tar path, cleaned as the apply cleans it (leading `/`, `.`
//! and empty components dropped): first `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! in the top branch (no symlink anywhere: the common case), else through the layer's
//! stack ([`driver_core::stack::LayerStack::resolve`]), where symlinks of lower layers
//! lead the path as they led the apply (usrmerge: `bin/x` stored as `usr/bin/x`); the
//! entry must then be a regular file in the top branch.
//!
//! Everything read is hashed; the reader fails (an [`io::Error`] wrapping
//! [`ContentMismatch`], naming the layer and the entry) when a file is missing, not
//! regular, or not of the recorded size, when it ends early or its bytes do not give the
//! recorded CRC-32, and at the end when the total size or the sha256 differs from the
//! layer's DiffID (which also catches what a CRC cannot). Memory is constant (one
//! open file, the zstd decoder's window).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use driver_core::stack::LayerStack;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use sha2::{Digest as _, Sha256};

use super::format::{read_record, Record, MAGIC};
use crate::ids::DiffId;

/// The on-disk layer no longer matches what was imported (or the metadata is damaged).
#[derive(Debug, thiserror::Error)]
#[error("layer {layer}: {}{reason}", entry.as_ref().map(|e| format!("entry {e:?}: ")).unwrap_or_default())]
pub struct ContentMismatch {
    /// The layer (chain id).
    pub layer: String,
    /// The tar entry concerned, if one.
    pub entry: Option<String>,
    /// What differs.
    pub reason: String,
}

impl ContentMismatch {
    fn io(layer: &str, entry: Option<&[u8]>, reason: impl Into<String>) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            ContentMismatch {
                layer: layer.to_owned(),
                entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
                reason: reason.into(),
            },
        )
    }
}

enum Cur {
    Next,
    Raw(u64),
    File {
        f: File,
        left: u64,
        path: Vec<u8>,
        crc: crc32fast::Hasher,
        want_crc: u32,
    },
    Done,
}

/// Streams a layer's original tar (see the module doc).
pub struct Reassembler {
    meta: Box<dyn Read + Send>,
    stack: LayerStack,
    top: File,
    top_path: PathBuf,
    layer: String,
    expected: DiffId,
    hasher: Sha256,
    total: u64,
    cur: Cur,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("layer", &self.layer)
            .field("top", &self.top_path)
            .field("total", &self.total)
            .finish()
    }
}

impl Reassembler {
    /// Opens the metadata file `meta` of layer `layer` (chain id, for messages) whose
    /// content is `stack` (top branch = the layer's own) and whose DiffID is `expected`.
    ///
    /// Errors: the metadata cannot be opened or does not start with the magic line; the
    /// top branch cannot be opened.
    pub fn open(meta: &Path, stack: LayerStack, layer: &str, expected: DiffId) -> io::Result<Self> {
        let f = File::open(meta)?;
        let mut dec = zstd::Decoder::with_buffer(BufReader::with_capacity(64 << 10, f))?;
        let mut magic = vec![0u8; MAGIC.len()];
        dec.read_exact(&mut magic).map_err(|e| {
            ContentMismatch::io(
                layer,
                None,
                format!("tar-split metadata {}: {e}", meta.display()),
            )
        })?;
        if magic != MAGIC {
            return Err(ContentMismatch::io(
                layer,
                None,
                format!(
                    "tar-split metadata {} has an unknown format",
                    meta.display()
                ),
            ));
        }
        let top_path = stack.branches().first().cloned().ok_or_else(|| {
            ContentMismatch::io(layer, None, "the driver's stack of the layer has no branch")
        })?;
        let top = File::open(&top_path)?;
        Ok(Reassembler {
            meta: Box::new(dec),
            stack,
            top,
            top_path,
            layer: layer.to_owned(),
            expected,
            hasher: Sha256::new(),
            total: 0,
            cur: Cur::Next,
        })
    }

    /// Opens the content of file entry `raw` (its tar path), checking type and size.
    fn open_entry(&self, raw: &[u8], size: u64) -> io::Result<File> {
        let bad = |reason: String| ContentMismatch::io(&self.layer, Some(raw), reason);
        let comps: Vec<&[u8]> = raw
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if comps.is_empty() || comps.iter().any(|c| *c == b"..") {
            return Err(bad("recorded path names no file inside the layer".into()));
        }
        let rel = comps.join(&b'/');
        let rel = Path::new(std::ffi::OsStr::from_bytes(&rel));
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let f = match openat2(&self.top, rel, how) {
            Ok(fd) => File::from(fd),
            Err(
                Errno::ELOOP
                | Errno::ENOENT
                | Errno::ENOTDIR
                | Errno::ENOSYS
                | Errno::EXDEV
                | Errno::EAGAIN,
            ) => {
                let r = self
                    .stack
                    .resolve(rel, false)
                    .map_err(|e| bad(format!("cannot look it up: {e}")))?;
                match r.found {
                    Some(found) if found.branch == 0 && found.meta.is_file() => {
                        File::open(&found.path)
                            .map_err(|e| bad(format!("open {}: {e}", found.path.display())))?
                    }
                    Some(found) if found.branch != 0 => {
                        return Err(bad(format!(
                            "not in the layer's own content (found in a lower layer at {})",
                            found.path.display()
                        )))
                    }
                    Some(_) => return Err(bad("is no longer a regular file".into())),
                    None => return Err(bad(format!("missing from {}", self.top_path.display()))),
                }
            }
            Err(e) => return Err(bad(format!("open in {}: {e}", self.top_path.display()))),
        };
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(bad("is no longer a regular file".into()));
        }
        if m.len() != size {
            return Err(bad(format!(
                "size mismatch: {} bytes on disk, {size} recorded",
                m.len()
            )));
        }
        Ok(f)
    }

    fn consume(&mut self, buf: &[u8]) {
        self.hasher.update(buf);
        self.total += buf.len() as u64;
    }
}

impl Read for Reassembler {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.cur {
                Cur::Done => return Ok(0),
                Cur::Raw(0) => self.cur = Cur::Next,
                Cur::Raw(left) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = self.meta.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(ContentMismatch::io(
                            &self.layer,
                            None,
                            "tar-split metadata is truncated",
                        ));
                    }
                    *left -= n as u64;
                    self.consume(&buf[..n]);
                    return Ok(n);
                }
                Cur::File {
                    left: 0,
                    crc,
                    want_crc,
                    path,
                    ..
                } => {
                    let got = std::mem::take(crc).finalize();
                    if got != *want_crc {
                        return Err(ContentMismatch::io(
                            &self.layer,
                            Some(path),
                            format!("content differs from the imported file (CRC-32 {got:08x}, recorded {want_crc:08x})"),
                        ));
                    }
                    self.cur = Cur::Next;
                }
                Cur::File {
                    f, left, path, crc, ..
                } => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = match f.read(&mut buf[..want]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(ContentMismatch::io(
                                &self.layer,
                                Some(path),
                                format!("read: {e}"),
                            ))
                        }
                    };
                    if n == 0 {
                        return Err(ContentMismatch::io(
                            &self.layer,
                            Some(path),
                            format!("file ended {left} bytes before its recorded size"),
                        ));
                    }
                    *left -= n as u64;
                    crc.update(&buf[..n]);
                    self.consume(&buf[..n]);
                    return Ok(n);
                }
                Cur::Next => {
                    let rec = read_record(&mut self.meta).map_err(|e| {
                        ContentMismatch::io(&self.layer, None, format!("tar-split metadata: {e}"))
                    })?;
                    self.cur = match rec {
                        Record::Raw(n) => Cur::Raw(n),
                        Record::File { path, size, crc } => {
                            let f = self.open_entry(&path, size)?;
                            Cur::File {
                                f,
                                left: size,
                                path,
                                crc: crc32fast::Hasher::new(),
                                want_crc: crc,
                            }
                        }
                        Record::End(total) => {
                            if total != self.total {
                                return Err(ContentMismatch::io(
                                    &self.layer,
                                    None,
                                    format!(
                                        "reassembled {} bytes, the imported tar had {total}",
                                        self.total
                                    ),
                                ));
                            }
                            let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
                            if got != self.expected.hex() {
                                return Err(ContentMismatch::io(
                                    &self.layer,
                                    None,
                                    format!(
                                        "its reassembled tar hashes to sha256:{got}, not to its DiffID {}",
                                        self.expected
                                    ),
                                ));
                            }
                            Cur::Done
                        }
                    };
                }
            }
        }
    }
}
