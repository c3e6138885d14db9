//! Importing images: format detection and the one-layer pipeline every format shares.
//!
//! Pipeline of one layer (one pass, constant memory):
//! ```text
//! blob bytes -> count (progress) -> [sha256 of the blob, thread] -> decompress (by content)
//!            -> sha256 of the tar = DiffID (thread) -> buffer -> driver.apply_diff
//! ```
//! After apply the rest of the stream (tar padding) is drained so the DiffID covers the
//! whole tar, and must be zeros. A tar without the end-of-archive blocks that ends at an
//! entry boundary is accepted (GNU tar, umoci and containers-storage do); its DiffID is
//! the sha256 of the bytes as given. Truncation inside a header or an entry's data is
//! the driver's apply error. The layer is applied into a fresh cache id; when its ChainID turns out to
//! exist already the new layer is removed (dedupe), else the driver's filesystem is
//! synced (syncfs) and only then is the layerdb entry published. Any error removes the
//! half layer. Where DiffIDs are known up front (docker-save and OCI configs) layers
//! whose chain exists are skipped without reading their blob.

mod archive;
pub mod decompress;
mod digest;
mod docker_save;
pub(crate) mod flat;
mod oci;

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use driver_core::id::random_hex;
use driver_core::{CreateOpts, LayerId};

use crate::error::{IoCtx, Result, StoreError};
use crate::ids::{ChainId, DiffId, ImageId};
use crate::layer::LayerRecord;
use crate::store::LayerStore;
use crate::writeset::remove_logged;

use archive::Archive;
pub use decompress::Compression;
#[cfg(test)]
pub(crate) use flat::host_arch;

/// Buffer between the hashers and the tar reader (tar reads 512-byte headers).
const PIPE_BUFFER: usize = 256 << 10;

/// What to import.
pub enum ImportSource<'a> {
    /// A file (flat tar, docker-save archive, OCI archive) or an OCI layout directory.
    Path(&'a Path),
    /// A stream (stdin): always spooled to `<root>/tmp` first, which keeps format
    /// detection and seeking simple at the cost of one copy.
    Reader(&'a mut dyn Read),
}

impl std::fmt::Debug for ImportSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportSource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            ImportSource::Reader(_) => f.write_str("Reader(..)"),
        }
    }
}

/// Options of an import.
#[derive(Default)]
pub struct ImportOptions<'a> {
    /// Name given to the (last) imported image, instead of the archive's names.
    pub name: Option<String>,
    /// Called with the running total of input bytes read.
    pub progress: Option<&'a dyn Fn(u64)>,
}

impl std::fmt::Debug for ImportOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("name", &self.name)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The format an input was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A flat root filesystem tar (`docker export`), plain or compressed.
    FlatTar,
    /// A `docker save` archive.
    DockerSave,
    /// An OCI image layout directory.
    OciLayout,
    /// A tar of an OCI image layout.
    OciArchive,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The format detected.
    pub format: Format,
    /// Images imported, in archive order (the last one is "the" image).
    pub images: Vec<ImageId>,
    /// Layers newly stored.
    pub new_layers: usize,
    /// Layers that were already present (skipped or deduplicated).
    pub existing_layers: usize,
}

/// What a blob's bytes must hash to: sha256 hex and, when known, the size.
pub(crate) type BlobCheck = (String, Option<u64>);

/// One layer to import.
pub(crate) struct LayerInput {
    /// For messages: `blobs/sha256/.. in file.tar`.
    pub what: String,
    /// The blob's bytes (compressed or not).
    pub reader: Box<dyn Read>,
    /// sha256 hex and size the blob bytes must have (OCI descriptors, docker-save
    /// `blobs/sha256/<hex>` names).
    pub blob: Option<BlobCheck>,
    /// The DiffID the uncompressed tar must have.
    pub diff_id: Option<DiffId>,
}

/// Shared state of one import run.
pub(crate) struct Ctx<'a> {
    pub progress: Option<&'a dyn Fn(u64)>,
    pub read: Cell<u64>,
    pub new_layers: Cell<usize>,
    pub existing_layers: Cell<usize>,
    /// Layers published by this run, rolled back (top first) if the run fails.
    pub created: std::cell::RefCell<Vec<LayerRecord>>,
}

impl LayerStore {
    /// Imports an image (see [`Format`]) and returns what was stored. The store must be
    /// opened with the exclusive lock.
    #[tracing::instrument(level = "debug", skip(self, opts))]
    pub fn import(&self, src: ImportSource<'_>, opts: &ImportOptions<'_>) -> Result<ImportReport> {
        self.require_exclusive("import")?;
        if let Some(n) = &opts.name {
            crate::ids::validate_image_name(n)?;
        }
        let ctx = Ctx {
            progress: opts.progress,
            read: Cell::new(0),
            new_layers: Cell::new(0),
            existing_layers: Cell::new(0),
            created: Default::default(),
        };
        let result = self.import_source(src, opts, &ctx);
        if result.is_err() {
            // A failed import leaves no trace: drop the layers it published, except those
            // an image registered earlier in this run (multi-image archives) refers to.
            let used: std::collections::BTreeSet<ChainId> = match self.images() {
                Ok(v) => v.into_iter().flat_map(|i| i.chain).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list images; keeping the layers of the failed import for `check`");
                    return result;
                }
            };
            for rec in ctx.created.borrow().iter().rev() {
                if used.contains(&rec.chain_id) {
                    continue;
                }
                tracing::debug!(chain = %rec.chain_id, "rolling back layer of failed import");
                if let Err(e) = self.remove_layer(rec) {
                    tracing::warn!(chain = %rec.chain_id, error = %e, "rollback of imported layer failed");
                }
            }
        }
        result
    }

    fn import_source(
        &self,
        src: ImportSource<'_>,
        opts: &ImportOptions<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<ImportReport> {
        match src {
            ImportSource::Path(p) => self.import_path(p, opts, ctx),
            ImportSource::Reader(r) => {
                let spool = self.tmp_dir().join(format!("stdin-{}", random_hex(8)));
                let result = (|| {
                    let mut f = File::create(&spool).ctx("create spool file", &spool)?;
                    let mut counted = digest::Counting {
                        inner: r,
                        total: &ctx.read,
                        progress: ctx.progress,
                    };
                    io::copy(&mut counted, &mut f).map_err(|e| StoreError::Stream {
                        what: "standard input".into(),
                        source: e,
                    })?;
                    ctx.read.set(0);
                    self.import_path(&spool, opts, ctx)
                })();
                remove_logged(&spool);
                result
            }
        }
    }

    fn import_path(
        &self,
        p: &Path,
        opts: &ImportOptions<'_>,
        ctx: &Ctx<'_>,
    ) -> Result<ImportReport> {
        let meta = match fs::metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::InputNotFound { path: p.to_owned() })
            }
            Err(e) => return Err(StoreError::io("stat", p, e)),
        };
        if !meta.is_dir() && !meta.is_file() {
            // A pipe or device (`<(cmd)`, /dev/stdin): read it once into tmp/.
            let mut f = File::open(p).ctx("open", p)?;
            return self.import_source(ImportSource::Reader(&mut f), opts, ctx);
        }
        let (format, images) = if meta.is_dir() {
            if !p.join("oci-layout").is_file() {
                return Err(StoreError::BadArchive {
                    file: p.to_owned(),
                    reason: "directory is not an OCI image layout (no oci-layout file)".into(),
                });
            }
            let a = Archive::Dir(p.to_owned());
            (Format::OciLayout, self.import_oci(&a, opts, ctx)?)
        } else {
            if meta.len() == 0 {
                return Err(StoreError::BadArchive {
                    file: p.to_owned(),
                    reason: "empty file".into(),
                });
            }
            let mut head = vec![0u8; decompress::SNIFF_LEN];
            let n = read_up_to(&mut File::open(p).ctx("open", p)?, &mut head).ctx("read", p)?;
            let compressed = match decompress::detect(&head[..n]) {
                Ok(c) => c != Compression::None,
                Err(e) => {
                    return Err(StoreError::BadArchive {
                        file: p.to_owned(),
                        reason: format!("{e}; nor an OCI layout directory"),
                    })
                }
            };
            if compressed && archive::looks_like_image_archive(p) {
                // `docker save | gzip`: decompress once into tmp/ and import that.
                let spool = self
                    .tmp_dir()
                    .join(format!("decompressed-{}", random_hex(8)));
                let result = (|| {
                    let mut out = File::create(&spool).ctx("create spool file", &spool)?;
                    let f = File::open(p).ctx("open", p)?;
                    let (_, mut d) = decompress::decoder(BufReader::with_capacity(PIPE_BUFFER, f))
                        .map_err(|e| StoreError::Stream {
                            what: p.display().to_string(),
                            source: e,
                        })?;
                    io::copy(&mut d, &mut out).map_err(|e| StoreError::Stream {
                        what: p.display().to_string(),
                        source: e,
                    })?;
                    self.import_path(&spool, opts, ctx)
                })();
                remove_logged(&spool);
                return result;
            }
            // Whole-file formats are plain tars; a failing index means "not one of
            // those": the flat import then reports the tar's own error.
            let members = if compressed {
                None
            } else {
                archive::index_tar(p).ok()
            };
            match members {
                Some(m) if m.contains_key("manifest.json") => {
                    let a = Archive::Tar {
                        file: p.to_owned(),
                        members: m,
                    };
                    (Format::DockerSave, self.import_docker_save(&a, opts, ctx)?)
                }
                Some(m) if m.contains_key("oci-layout") && m.contains_key("index.json") => {
                    let a = Archive::Tar {
                        file: p.to_owned(),
                        members: m,
                    };
                    (Format::OciArchive, self.import_oci(&a, opts, ctx)?)
                }
                _ => (Format::FlatTar, vec![self.import_flat(p, opts, ctx)?]),
            }
        };
        tracing::debug!(?format, images = images.len(), "import done");
        Ok(ImportReport {
            format,
            images,
            new_layers: ctx.new_layers.get(),
            existing_layers: ctx.existing_layers.get(),
        })
    }

    /// Applies one layer on top of `parent`, verifying what `input` says it must be.
    pub(crate) fn import_layer(
        &self,
        parent: Option<&LayerRecord>,
        input: LayerInput,
        ctx: &Ctx<'_>,
    ) -> Result<LayerRecord> {
        let what = input.what.clone();
        self.import_layer_inner(parent, input, ctx)
            .map_err(|e| StoreError::Layer {
                what,
                source: Box::new(e),
            })
    }

    fn import_layer_inner(
        &self,
        parent: Option<&LayerRecord>,
        input: LayerInput,
        ctx: &Ctx<'_>,
    ) -> Result<LayerRecord> {
        let parent_cache = parent.map(|p| p.cache_id.clone());
        let cache_id = LayerId::random();
        self.driver
            .create(&cache_id, parent_cache.as_ref(), &CreateOpts::default())?;
        let result = self.apply_and_publish(parent, &parent_cache, &cache_id, input, ctx);
        match result {
            Ok((rec, true)) => Ok(rec),
            Ok((rec, false)) => {
                // Dedupe: the chain exists already, drop the copy just made.
                self.driver.remove(&cache_id)?;
                ctx.existing_layers.set(ctx.existing_layers.get() + 1);
                Ok(rec)
            }
            Err(e) => {
                if let Err(re) = self.driver.remove(&cache_id) {
                    tracing::warn!(layer = %cache_id, error = %re, "removing half-imported layer failed");
                }
                Err(e)
            }
        }
    }

    /// Returns the record and whether it is new.
    fn apply_and_publish(
        &self,
        parent: Option<&LayerRecord>,
        parent_cache: &Option<LayerId>,
        cache_id: &LayerId,
        input: LayerInput,
        ctx: &Ctx<'_>,
    ) -> Result<(LayerRecord, bool)> {
        // Tar-split metadata is recorded next to the DiffID hash and published with the
        // layer record; any other outcome deletes it.
        let split_path = self.tmp_dir().join(format!("tar-split-{}", random_hex(8)));
        let result =
            self.apply_and_publish_split(parent, parent_cache, cache_id, input, ctx, &split_path);
        remove_logged(&split_path);
        result
    }

    fn apply_and_publish_split(
        &self,
        parent: Option<&LayerRecord>,
        parent_cache: &Option<LayerId>,
        cache_id: &LayerId,
        input: LayerInput,
        ctx: &Ctx<'_>,
        split_path: &Path,
    ) -> Result<(LayerRecord, bool)> {
        let splitter = crate::tarsplit::create_splitter(split_path)?;
        let counted = digest::Counting {
            inner: input.reader,
            total: &ctx.read,
            progress: ctx.progress,
        };
        let (blob_reader, blob_join): (Box<dyn Read + '_>, Option<digest::HashJoin>) =
            if input.blob.is_some() {
                let (r, j) = digest::hashing(counted);
                (Box::new(r), Some(j))
            } else {
                (Box::new(counted), None)
            };
        let stream_err = |e: io::Error| StoreError::Stream {
            what: "layer stream".into(),
            source: e,
        };
        let (_compression, decoded) =
            decompress::decoder(BufReader::with_capacity(PIPE_BUFFER, blob_reader))
                .map_err(stream_err)?;
        let (diff_reader, diff_join) = digest::hashing_split(decoded, Some(splitter));
        let mut tar_in = BufReader::with_capacity(PIPE_BUFFER, diff_reader);
        let applied = self
            .driver
            .apply_diff(cache_id, parent_cache.as_ref(), &mut tar_in);
        let drained = match &applied {
            Ok(_) => digest::drain_trailer(&mut tar_in).map(|_| ()),
            Err(_) => Ok(()),
        };
        drop(tar_in); // closes the channels: the hashers finish
        let (diff, splitter) = diff_join.finish_split();
        let blob = blob_join.map(|j| j.finish());
        let size = applied?;
        drained.map_err(stream_err)?;
        if let (Some((want_hex, want_size)), Some(got)) = (&input.blob, &blob) {
            if let Some(ws) = want_size {
                if *ws != got.size {
                    return Err(StoreError::SizeMismatch {
                        what: "blob".into(),
                        expected: *ws,
                        actual: got.size,
                    });
                }
            }
            if *want_hex != got.hex {
                return Err(StoreError::DigestMismatch {
                    what: "blob".into(),
                    expected: format!("sha256:{want_hex}"),
                    actual: format!("sha256:{}", got.hex),
                });
            }
        }
        let diff_id = DiffId::from_hex(&diff.hex)?;
        if let Some(want) = &input.diff_id {
            if *want != diff_id {
                return Err(StoreError::DigestMismatch {
                    what: "diff id".into(),
                    expected: want.to_string(),
                    actual: diff_id.to_string(),
                });
            }
        }
        let chain_id = ChainId::of(parent.map(|p| &p.chain_id), &diff_id);
        if self.has_layer(&chain_id) {
            tracing::debug!(chain = %chain_id, "layer exists already; dropping the new copy");
            return Ok((self.layer(&chain_id)?, false));
        }
        if let Some(sp) = splitter {
            crate::tarsplit::finish_splitter(sp, split_path)?;
        }
        self.sync_content()?;
        let rec = LayerRecord {
            chain_id,
            diff_id,
            cache_id: cache_id.clone(),
            parent: parent.map(|p| p.chain_id.clone()),
            size,
        };
        self.write_layer_with(&rec, Some((crate::tarsplit::TAR_SPLIT_FILE, split_path)))?;
        ctx.created.borrow_mut().push(rec.clone());
        ctx.new_layers.set(ctx.new_layers.get() + 1);
        tracing::debug!(chain = %rec.chain_id, cache = %rec.cache_id, size, "layer stored");
        Ok((rec, true))
    }

    /// Imports the layers of `diff_ids` (bottom to top) read from `archive`, skipping
    /// those whose chain exists. `blob_of(i)` names the member and its expected digest.
    pub(crate) fn import_chain(
        &self,
        archive: &Archive,
        diff_ids: &[DiffId],
        blob_of: &dyn Fn(usize) -> (String, Option<BlobCheck>),
        ctx: &Ctx<'_>,
    ) -> Result<()> {
        let chains = ChainId::chain(diff_ids);
        let mut parent: Option<LayerRecord> = None;
        for (i, chain) in chains.iter().enumerate() {
            if self.has_layer(chain) {
                ctx.existing_layers.set(ctx.existing_layers.get() + 1);
                parent = Some(self.layer(chain)?);
                continue;
            }
            let (member, blob) = blob_of(i);
            let (reader, _) = archive.open(&member)?;
            let rec = self.import_layer(
                parent.as_ref(),
                LayerInput {
                    what: format!("{member} in {}", archive.path().display()),
                    reader,
                    blob,
                    diff_id: Some(diff_ids[i].clone()),
                },
                ctx,
            )?;
            parent = Some(rec);
        }
        Ok(())
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `blobs/sha256/<hex>` -> `<hex>`.
pub(crate) fn blob_hex(member: &str) -> Option<String> {
    let n = archive::normalize(member)?;
    let hex = n.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| hex.to_owned())
}

/// Checks that `data` hashes to `hex`.
pub(crate) fn verify_bytes(what: &str, file: &Path, data: &[u8], hex: &str) -> Result<()> {
    let got = ImageId::of_bytes(data);
    if got.hex() != hex {
        return Err(StoreError::DigestMismatch {
            what: format!("{what} in {}", file.display()),
            expected: format!("sha256:{hex}"),
            actual: got.to_string(),
        });
    }
    Ok(())
}
