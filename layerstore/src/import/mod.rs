//! Importing images: format detection and the one-layer pipeline every format shares.
//!
//! Pipeline of one layer (one pass, constant memory, three to five threads):
//! ```text
//! calling thread: blob bytes -> count (progress) -> [sha256 of the blob, thread]
//!                 -> decompress (by content)
//! plain tar:  -> 1 MiB shared chunks (digest::pump)
//!               chunks -> sha256 of the tar = DiffID (thread, no copy)
//!               chunks -> ChunkReader -> driver.apply_diff_chunked (apply thread;
//!                         regular files are written from the chunks themselves)
//! compressed: -> sha256 of the tar = DiffID (thread, copies) -> driver.apply_diff
//!               (this thread, decompressing as it reads)
//! ```
//! driver-core writes regular files from one more thread in both cases.
//! After apply the rest of the stream (tar padding) is drained so the DiffID covers the
//! whole tar, and must be zeros. A tar without the end-of-archive blocks that ends at an
//! entry boundary is accepted (GNU tar, umoci and containers-storage do); its DiffID is
//! the sha256 of the bytes as given. Truncation inside a header or an entry's data is
//! the driver's apply error. The layer is applied into a fresh cache id; when its ChainID turns out to
//! exist already the new layer is removed (dedupe), else the driver's filesystem is
//! synced (syncfs) and only then is the layerdb entry published. Any error removes the
//! half layer. Where DiffIDs are known up front (docker-save and OCI configs) layers
//! whose chain exists are skipped without reading their blob.
//!
//! Locking: on a [`LockMode::Staged`] store (what `layerctl
//! import` opens) the store lock is NOT held while layers are applied and synced: the
//! import holds a staging lease ([`crate::staging`]) and takes the exclusive lock only
//! to create each driver layer, to publish (or dedupe) its record, to register the
//! image and to roll back. Two imports therefore run side by side, and `mount`, `ps`,
//! `images`... wait at most for one such step (milliseconds). Two imports of the same
//! layer both apply it; the first to publish wins and the other removes its copy and
//! builds on the winner's. On an Exclusive store (`commit`) the same steps run under
//! the lock the store already holds.

mod archive;
pub mod decompress;
mod digest;
mod docker_save;
pub(crate) mod flat;
pub mod limits;
mod names;
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
use crate::staging::Lease;
use crate::store::{LayerStore, LockMode};
use crate::writeset::remove_logged;

use archive::Archive;
pub use decompress::Compression;
#[cfg(test)]
pub(crate) use flat::host_arch;
pub use limits::ImportLimits;

/// Read buffer in front of the decompressor (and of the blob hasher).
const PIPE_BUFFER: usize = 256 << 10;

/// What applying one layer stream gave: the apply's result (bytes), the check of what
/// follows the archive, the DiffID digest and the tar-split recorder it fed.
type Applied = (
    Result<u64>,
    io::Result<()>,
    digest::Digested,
    Option<digest::Splitter>,
);

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
    /// `--name`: the name of the (last) imported image instead of the archive's names,
    /// or the repository of every tag of a multi-tag archive (see `names.rs`).
    pub name: Option<String>,
    /// Called with the running total of input bytes read.
    pub progress: Option<&'a dyn Fn(u64)>,
    /// Bounds on each layer's decompressed size and entry count (`[limits]`).
    pub limits: ImportLimits,
}

impl std::fmt::Debug for ImportOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("name", &self.name)
            .field("progress", &self.progress.is_some())
            .field("limits", &self.limits)
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
    pub limits: ImportLimits,
    pub read: Cell<u64>,
    pub new_layers: Cell<usize>,
    pub existing_layers: Cell<usize>,
    /// Layers published by this run, rolled back (top first) if the run fails.
    pub created: std::cell::RefCell<Vec<LayerRecord>>,
    /// The staging lease of an import on a Staged store (None under the store lock).
    pub lease: Option<Lease>,
    /// Images registered by this run with their names (multi-image archives): kept if a
    /// later image fails, and named in the error.
    pub registered: std::cell::RefCell<Vec<(ImageId, Vec<String>)>>,
}

impl Ctx<'_> {
    /// Where spooled input goes: the lease directory, else `<root>/tmp`.
    fn spool_dir(&self, store: &LayerStore) -> std::path::PathBuf {
        match &self.lease {
            Some(l) => l.dir().to_owned(),
            None => store.tmp_dir(),
        }
    }
}

impl LayerStore {
    /// Imports an image (see [`Format`]) and returns what was stored. The store must be
    /// opened [`LockMode::Staged`] (the lock is taken only to publish, see the module
    /// doc) or [`LockMode::Exclusive`].
    #[tracing::instrument(level = "debug", skip(self, opts))]
    pub fn import(&self, src: ImportSource<'_>, opts: &ImportOptions<'_>) -> Result<ImportReport> {
        self.require_staged_or_exclusive("import")?;
        if let Some(n) = &opts.name {
            crate::ids::validate_new_image_name(n)?;
        }
        let lease = match self.mode {
            LockMode::Staged => {
                let _g = self.exclusive("import")?;
                Some(Lease::create(&self.staging_dir())?)
            }
            _ => None,
        };
        let mut ctx = Ctx {
            progress: opts.progress,
            limits: opts.limits,
            read: Cell::new(0),
            new_layers: Cell::new(0),
            existing_layers: Cell::new(0),
            created: Default::default(),
            lease,
            registered: Default::default(),
        };
        let mut result = self.import_source(src, opts, &ctx);
        if let Err(e) = result {
            self.roll_back_import(&ctx);
            let stored = ctx.registered.borrow();
            result = Err(if stored.is_empty() {
                e
            } else {
                StoreError::PartlyImported {
                    stored: stored
                        .iter()
                        .map(|(id, names)| match names.is_empty() {
                            true => id.short().to_string(),
                            false => format!("{} ({})", id.short(), names.join(", ")),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    source: Box::new(e),
                }
            });
        }
        if let Some(lease) = ctx.lease.take() {
            self.end_lease(lease);
        }
        result
    }

    /// A failed import leaves no trace: drops the layers it published (top first),
    /// except those an image refers to (one registered earlier in this run, for
    /// multi-image archives), those another layer builds on, and those another live
    /// import holds. Under the store lock; failures are logged (`check` finds them).
    fn roll_back_import(&self, ctx: &Ctx<'_>) {
        let _g = match self.exclusive("import") {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot lock the store; keeping the layers of the failed import for `check`");
                return;
            }
        };
        let own = ctx.lease.as_ref().map(|l| l.dir().to_owned());
        let kept = (|| -> Result<std::collections::BTreeSet<ChainId>> {
            let mut kept: std::collections::BTreeSet<ChainId> =
                self.images()?.into_iter().flat_map(|i| i.chain).collect();
            for l in self.leases()? {
                if l.live && Some(&l.dir) != own.as_ref() {
                    for c in &l.chains {
                        kept.extend(
                            self.layer_chain(c)
                                .into_iter()
                                .flatten()
                                .map(|r| r.chain_id),
                        );
                    }
                }
            }
            Ok(kept)
        })();
        let mut kept = match kept {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list images; keeping the layers of the failed import for `check`");
                return;
            }
        };
        for rec in ctx.created.borrow().iter().rev() {
            if kept.contains(&rec.chain_id) {
                continue;
            }
            let has_child = match self.layers() {
                Ok(all) => all.iter().any(|l| l.parent.as_ref() == Some(&rec.chain_id)),
                Err(_) => true,
            };
            if has_child {
                kept.insert(rec.chain_id.clone());
                continue;
            }
            tracing::debug!(chain = %rec.chain_id, "rolling back layer of failed import");
            if let Err(e) = self.remove_layer(rec) {
                tracing::warn!(chain = %rec.chain_id, error = %e, "rollback of imported layer failed");
            }
        }
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
                let spool = ctx.spool_dir(self).join(format!("stdin-{}", random_hex(8)));
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
                        .map_err(|e| e.naming_input(&spool, "standard input"))
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
            let sniffed = archive::sniff(p);
            if compressed && sniffed == archive::Sniffed::ImageArchive {
                // `docker save | gzip`: decompress once into tmp/ and import that.
                let spool = ctx
                    .spool_dir(self)
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
            // those": the flat import then reports the tar's own error. A tar whose
            // first entries name nothing an image archive holds is a root filesystem:
            // it is not indexed (that would read every header of it once more before
            // the import, ~7,000 reads and seeks for a Debian rootfs).
            let members = if compressed || sniffed != archive::Sniffed::ImageArchive {
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
                _ => {
                    if let archive::Sniffed::NestedImageArchive(dir) = sniffed {
                        return Err(StoreError::BadArchive {
                            file: p.to_owned(),
                            reason: format!(
                                "an image archive tarred with its directory: its members are below {dir}/ \
                                 ({dir}/oci-layout or {dir}/manifest.json), not at the top; import the \
                                 directory itself, or tar its contents (tar -C {dir} -cf FILE .)"
                            ),
                        });
                    }
                    (Format::FlatTar, vec![self.import_flat(p, opts, ctx)?])
                }
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

    /// Registers an image of this import under `names` ([`Self::register_image`]) and
    /// records it in `ctx.registered`, which a later failure of the import names.
    pub(crate) fn register_imported(
        &self,
        file: &Path,
        config: &[u8],
        names: Vec<String>,
        ctx: &Ctx<'_>,
    ) -> Result<ImageId> {
        let id = self.register_image(file, config, &names)?;
        ctx.registered.borrow_mut().push((id.clone(), names));
        Ok(id)
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
        {
            // The staging layer is leased before it exists, so gc/check never see it
            // unowned; the driver creates it unlocked when it can (vfs copies the whole
            // parent tree here).
            let g = self.exclusive("import")?;
            if let Some(l) = &ctx.lease {
                l.add_layer(&cache_id)?;
            }
            let g = (!self.driver.unlocked_create()).then_some(g);
            let created =
                self.driver
                    .create(&cache_id, parent_cache.as_ref(), &CreateOpts::default());
            drop(g);
            if let Err(e) = created {
                if let Some(l) = &ctx.lease {
                    let _g = self.exclusive("import")?;
                    l.drop_layer(&cache_id);
                }
                return Err(e.into());
            }
        }
        let result = self.apply_and_publish(parent, &parent_cache, &cache_id, input, ctx);
        let drop_staging = |g: &crate::store::ExclusiveGuard<'_>| -> Result<()> {
            let _ = g;
            self.driver.remove(&cache_id)?;
            if let Some(l) = &ctx.lease {
                l.drop_layer(&cache_id);
            }
            Ok(())
        };
        match result {
            Ok((rec, true, _g)) => Ok(rec),
            Ok((rec, false, g)) => {
                // Dedupe: the chain exists already, drop the copy just made.
                drop_staging(&g)?;
                ctx.existing_layers.set(ctx.existing_layers.get() + 1);
                Ok(rec)
            }
            Err(e) => {
                match self.exclusive("import") {
                    Ok(g) => {
                        if let Err(re) = drop_staging(&g) {
                            tracing::warn!(layer = %cache_id, error = %re, "removing half-imported layer failed");
                        }
                    }
                    Err(re) => {
                        tracing::warn!(layer = %cache_id, error = %re, "cannot lock the store to remove the half-imported layer")
                    }
                }
                Err(e)
            }
        }
    }

    /// Returns the record, whether it is new, and the store lock held for the step
    /// (the caller removes a deduplicated copy under it).
    fn apply_and_publish(
        &self,
        parent: Option<&LayerRecord>,
        parent_cache: &Option<LayerId>,
        cache_id: &LayerId,
        input: LayerInput,
        ctx: &Ctx<'_>,
    ) -> Result<(LayerRecord, bool, crate::store::ExclusiveGuard<'_>)> {
        // Tar-split metadata is recorded next to the DiffID hash and published with the
        // layer record; any other outcome deletes it. It is recorded in the import's
        // lease directory (an exclusive open of another process empties `tmp/`).
        let split_path = ctx
            .spool_dir(self)
            .join(format!("tar-split-{}", random_hex(8)));
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
    ) -> Result<(LayerRecord, bool, crate::store::ExclusiveGuard<'_>)> {
        let splitter = crate::tarsplit::create_splitter(split_path)?;
        let counted = digest::Counting {
            inner: input.reader,
            total: &ctx.read,
            progress: ctx.progress,
        };
        let counted: Box<dyn Read + '_> = match &input.blob {
            Some((_, Some(size))) => Box::new(limits::SizeCapped::new(counted, *size)),
            _ => Box::new(counted),
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
        let (compression, decoded) =
            decompress::decoder(BufReader::with_capacity(PIPE_BUFFER, blob_reader))
                .map_err(stream_err)?;
        let (mut decoded, tripped) = limits::Limited::new(decoded, ctx.limits);
        let (applied, drained, diff, splitter) = if compression == Compression::None {
            self.apply_stream(parent_cache, cache_id, &mut decoded, Some(splitter))
        } else {
            self.apply_inline(parent_cache, cache_id, &mut decoded, Some(splitter))
        };
        drop(decoded); // closes the blob hasher's channel: it finishes
        let blob = blob_join.map(|j| j.finish());
        if let Some(kind) = tripped.get() {
            return Err(StoreError::LimitExceeded {
                key: kind.key(),
                limit: match kind {
                    limits::LimitKind::Size => ctx.limits.max_layer_size,
                    limits::LimitKind::Entries => ctx.limits.max_layer_entries,
                },
            });
        }
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
        // Content first, outside the lock (a syncfs can take long); skipped when the
        // layer is already there (it will be dropped).
        if !self.has_layer(&chain_id) {
            self.sync_content()?;
        }
        let guard = self.exclusive("import")?;
        if self.has_layer(&chain_id) {
            tracing::debug!(chain = %chain_id, "layer exists already; dropping the new copy");
            let rec = self.layer(&chain_id)?;
            if let Some(l) = &ctx.lease {
                l.add_chain(&chain_id)?;
            }
            return Ok((rec, false, guard));
        }
        if let Some(sp) = splitter {
            crate::tarsplit::finish_splitter(sp, split_path)?;
        }
        let rec = LayerRecord {
            chain_id,
            diff_id,
            cache_id: cache_id.clone(),
            parent: parent.map(|p| p.chain_id.clone()),
            size,
        };
        if let Some(l) = &ctx.lease {
            l.add_chain(&rec.chain_id)?;
        }
        self.write_layer_with(&rec, Some((crate::tarsplit::TAR_SPLIT_FILE, split_path)))?;
        ctx.created.borrow_mut().push(rec.clone());
        if let Some(l) = &ctx.lease {
            l.drop_layer(cache_id);
        }
        ctx.new_layers.set(ctx.new_layers.get() + 1);
        tracing::debug!(chain = %rec.chain_id, cache = %rec.cache_id, size, "layer stored");
        Ok((rec, true, guard))
    }

    /// Applies the plain layer stream `tar` to the driver's layer `cache_id` on a
    /// second thread while this one reads it into shared chunks
    /// that a third thread hashes (`digest::pump`): the DiffID costs no copy and no
    /// time on the applying thread; the sha256 thread also feeds `splitter` (tar-split).
    /// Returns the apply's result, the check of what follows the archive (zeros only;
    /// only after a successful apply), the digest of the whole stream and the splitter.
    fn apply_stream(
        &self,
        parent_cache: &Option<LayerId>,
        cache_id: &LayerId,
        tar: &mut dyn Read,
        splitter: Option<digest::Splitter>,
    ) -> Applied {
        let (tx, rx) = digest::chunk_queue();
        let span = tracing::Span::current();
        std::thread::scope(|s| {
            let applier = std::thread::Builder::new()
                .name("apply".into())
                .spawn_scoped(s, move || {
                    let _span = span.enter();
                    // Chunked: files are written from the shared chunks (no copy here).
                    let mut chunks = digest::ChunkReader::new(rx);
                    let applied = self
                        .driver
                        .apply_diff_chunked(cache_id, parent_cache.as_ref(), &mut chunks)
                        .map_err(StoreError::from);
                    self.drained(applied, &mut chunks)
                })
                .expect("spawning the apply thread");
            let (diff, splitter) = digest::pump(tar, tx, splitter);
            let (applied, drained) = match applier.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            };
            (applied, drained, diff, splitter)
        })
    }

    /// [`Self::apply_stream`] for compressed layers: decompression and apply on this
    /// thread, the DiffID on a second one from copies of the decoded chunks. On the
    /// shared 2-core machine a separate decompressing thread (four busy threads with
    /// the driver's file writer) made gzip and zstd imports slower in wall time, not
    /// faster (BENCHMARKS.md, "Import at tar speed").
    fn apply_inline(
        &self,
        parent_cache: &Option<LayerId>,
        cache_id: &LayerId,
        tar: &mut dyn Read,
        splitter: Option<digest::Splitter>,
    ) -> Applied {
        let (diff_reader, diff_join) = digest::hashing_split(tar, splitter);
        let mut tar_in = BufReader::with_capacity(PIPE_BUFFER, diff_reader);
        let (applied, drained) = self.apply_drained(parent_cache, cache_id, &mut tar_in);
        drop(tar_in); // closes the channel: the hasher finishes
        let (diff, splitter) = diff_join.finish_split();
        (applied, drained, diff, splitter)
    }

    /// Applies the layer tar `tar_in` to the driver's layer `cache_id`; after a
    /// successful apply, reads what follows the archive and checks it is zeros
    /// ([`digest::drain_trailer`]), so the whole stream is hashed.
    fn apply_drained(
        &self,
        parent_cache: &Option<LayerId>,
        cache_id: &LayerId,
        tar_in: &mut dyn Read,
    ) -> (Result<u64>, io::Result<()>) {
        let applied = self
            .driver
            .apply_diff(cache_id, parent_cache.as_ref(), tar_in)
            .map_err(StoreError::from);
        self.drained(applied, tar_in)
    }

    /// After a successful apply, the check of what follows the archive in `tar_in`.
    fn drained(
        &self,
        applied: Result<u64>,
        tar_in: &mut dyn Read,
    ) -> (Result<u64>, io::Result<()>) {
        let drained = match &applied {
            Ok(_) => digest::drain_trailer(tar_in).map(|_| ()),
            Err(_) => Ok(()),
        };
        (applied, drained)
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
            if let Some(rec) = self.hold_existing(chain, ctx)? {
                ctx.existing_layers.set(ctx.existing_layers.get() + 1);
                parent = Some(rec);
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

impl LayerStore {
    /// The record of `chain` if it is stored, then held by the import's lease (so gc
    /// and rmi keep it while the import builds on it). Under the store lock.
    fn hold_existing(&self, chain: &ChainId, ctx: &Ctx<'_>) -> Result<Option<LayerRecord>> {
        let _g = self.exclusive("import")?;
        if !self.has_layer(chain) {
            return Ok(None);
        }
        let rec = self.layer(chain)?;
        if let Some(l) = &ctx.lease {
            l.add_chain(chain)?;
        }
        Ok(Some(rec))
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
