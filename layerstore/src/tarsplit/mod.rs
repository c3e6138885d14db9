//! Tar-split metadata: what is needed to write a layer's original tar back byte for
//! byte (as Docker's `tar-split` does), without a copy of the tar.
//!
//! - At import (`record`), while the uncompressed layer tar streams through the DiffID
//!   hasher thread, every byte that is not regular-file content (headers, PAX and GNU
//!   long-name records, padding, end blocks, trailing zeros) is recorded raw, and each
//!   regular file with content as its tar path and size, into a zstd-compressed file
//!   in `<root>/tmp/`, which is published with the layer's metadata as
//!   `layerdb/sha256/<chain>/tar-split.zst` ([`format`](mod@format)).
//! - [`LayerStore::layer_tar`] streams a layer's tar: from the metadata and the layer's
//!   own content ([`reassemble`]), or for a layer without metadata (stored before
//!   tar-split existed) from driver-core's deterministic exporter (`Driver::diff`, which
//!   is how committed layers were made); both verify the DiffID while streaming.
//! - [`LayerStore::verify_layer_content`] recomputes a layer's DiffID that way
//!   (`layerctl check --verify-content`).
//!
//! Known limits: a regular file whose content a later entry of the same layer replaced
//! (the same path twice) cannot be reassembled (the error names it; Docker's tar-split
//! has the same limit); empty files are replayed from their headers without looking at
//! the disk, so an empty file changed on disk is only noticed by `check`'s other parts.

pub mod format;
pub mod reassemble;
pub(crate) mod record;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use reassemble::{ContentMismatch, Reassembler};
use record::TarSplitter;

use crate::error::{Result, StoreError};
use crate::ids::DiffId;
use crate::layer::LayerRecord;
use crate::store::LayerStore;

/// Name of the metadata file in a layer's layerdb directory.
pub const TAR_SPLIT_FILE: &str = "tar-split.zst";

/// zstd level of the metadata: level 1 compresses ~12 MB of Debian headers to ~0.5 MB
/// at several hundred MB/s, so the hasher thread hardly notices.
const ZSTD_LEVEL: i32 = 1;

/// The recorder fed at import: zstd over a buffered temp file.
pub(crate) type FileSplitter = TarSplitter<zstd::Encoder<'static, BufWriter<File>>>;

/// Starts recording into a new file `path` (must not exist).
pub(crate) fn create_splitter(path: &Path) -> Result<FileSplitter> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StoreError::io("create tar-split metadata", path, e))?;
    let z = zstd::Encoder::new(BufWriter::with_capacity(64 << 10, f), ZSTD_LEVEL)
        .map_err(|e| StoreError::io("start tar-split metadata", path, e))?;
    Ok(TarSplitter::new(z))
}

/// Ends the recording and fsyncs the file. Returns (tar size, file records).
pub(crate) fn finish_splitter(s: FileSplitter, path: &Path) -> Result<(u64, u64)> {
    let ctx = |e: io::Error| StoreError::io("write tar-split metadata", path, e);
    let (z, total, files) = s.finish().map_err(ctx)?;
    let f = z
        .finish()
        .map_err(ctx)?
        .into_inner()
        .map_err(|e| ctx(e.into_error()))?;
    f.sync_all().map_err(ctx)?;
    Ok((total, files))
}

/// Hashes a stream while it is read and fails at its end when the sha256 is not the
/// expected DiffID (the deterministic-export path of [`LayerStore::layer_tar`]).
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    expected: DiffId,
    layer: String,
    done: bool,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.done = true;
            let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if got != self.expected.hex() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    ContentMismatch {
                        layer: self.layer.clone(),
                        entry: None,
                        reason: format!(
                            "its export hashes to sha256:{got}, not to its DiffID {}",
                            self.expected
                        ),
                    },
                ));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Turns a read error of [`LayerStore::layer_tar`]'s stream into a store error:
/// [`StoreError::LayerChanged`] for a content mismatch, else a stream error.
pub fn layer_read_error(rec: &LayerRecord, e: io::Error) -> StoreError {
    if let Some(m) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<ContentMismatch>())
    {
        return StoreError::LayerChanged {
            layer: m.layer.clone(),
            entry: m.entry.clone(),
            reason: m.reason.clone(),
        };
    }
    StoreError::Stream {
        what: format!("layer {}", rec.chain_id),
        source: e,
    }
}

/// The size of the tar that the metadata file `path` describes (raw bytes plus file
/// sizes; checked against the end record), read without touching the layer.
///
/// Errors: unreadable or damaged metadata (as [`ContentMismatch`] for
/// [`layer_read_error`]).
pub(crate) fn tar_split_size(path: &Path) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut d = zstd::Decoder::new(f)?;
    let damaged = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            ContentMismatch {
                layer: path.display().to_string(),
                entry: None,
                reason: format!("tar-split metadata {}: {reason}", path.display()),
            },
        )
    };
    let mut magic = vec![0u8; format::MAGIC.len()];
    d.read_exact(&mut magic)
        .map_err(|e| damaged(e.to_string()))?;
    if magic != format::MAGIC {
        return Err(damaged("unknown format".into()));
    }
    let mut total = 0u64;
    loop {
        match format::read_record(&mut d).map_err(|e| damaged(e.to_string()))? {
            format::Record::Raw(n) => {
                let skipped = io::copy(&mut (&mut d).take(n), &mut io::sink())?;
                if skipped != n {
                    return Err(damaged("truncated".into()));
                }
                total += n;
            }
            format::Record::File { size, .. } => total += size,
            format::Record::End(t) if t == total => return Ok(total),
            format::Record::End(t) => {
                return Err(damaged(format!(
                    "records sum to {total} bytes, end record says {t}"
                )))
            }
        }
    }
}

impl LayerStore {
    pub(crate) fn tar_split_path(&self, rec: &LayerRecord) -> PathBuf {
        self.layerdb_dir()
            .join(rec.chain_id.hex())
            .join(TAR_SPLIT_FILE)
    }

    /// Whether the layer has tar-split metadata.
    pub fn has_tar_split(&self, rec: &LayerRecord) -> bool {
        self.tar_split_path(rec).is_file()
    }

    /// The layer's uncompressed tar as it was imported, streamed in constant memory and
    /// verified against its DiffID while read (see the module doc). A read error of the
    /// stream is turned into a store error by [`layer_read_error`].
    ///
    /// Errors: the driver's (layer missing); the metadata cannot be opened.
    pub fn layer_tar(&self, rec: &LayerRecord) -> Result<Box<dyn Read + Send>> {
        let meta = self.tar_split_path(rec);
        if meta.is_file() {
            let stack = self.driver.stack(&rec.cache_id)?;
            let r = Reassembler::open(&meta, stack, rec.chain_id.as_str(), rec.diff_id.clone())
                .map_err(|e| layer_read_error(rec, e))?;
            return Ok(Box::new(r));
        }
        let parent = match &rec.parent {
            Some(p) => Some(self.layer(p)?.cache_id),
            None => None,
        };
        let diff = self.driver.diff(&rec.cache_id, parent.as_ref())?;
        Ok(Box::new(Verifying {
            inner: diff,
            hasher: Sha256::new(),
            expected: rec.diff_id.clone(),
            layer: rec.chain_id.to_string(),
            done: false,
        }))
    }

    /// Recomputes the layer's DiffID from its content ([`Self::layer_tar`] read to the
    /// end). Returns the tar's size.
    ///
    /// Errors: [`StoreError::LayerChanged`] naming the layer (and the entry, when one is
    /// to blame) when the content no longer matches.
    pub fn verify_layer_content(&self, rec: &LayerRecord) -> Result<u64> {
        let mut r = self.layer_tar(rec)?;
        io::copy(&mut r, &mut io::sink()).map_err(|e| layer_read_error(rec, e))
    }
}

impl LayerStore {
    /// Recomputes every layer's DiffID ([`Self::verify_layer_content`]); returns the
    /// layers that changed on disk, or could not be read back, with the error naming
    /// how (sorted by chain id).
    ///
    /// Errors: the layer database cannot be read.
    pub fn verify_contents(&self) -> Result<Vec<(crate::ids::ChainId, StoreError)>> {
        let mut out = Vec::new();
        for rec in self.layers()? {
            match self.verify_layer_content(&rec) {
                Ok(size) => tracing::debug!(chain = %rec.chain_id, size, "layer content verified"),
                Err(e) => out.push((rec.chain_id.clone(), e)),
            }
        }
        Ok(out)
    }
}
