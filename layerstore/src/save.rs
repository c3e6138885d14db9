//! Saving images (`docker save`, Docker 25+ form): one tar that is both an OCI image
//! layout and a docker-save archive.
//!
//! ```text
//! blobs/sha256/<hex>     every layer (plain tar, or gzip/zstd with --compress), each
//!                        image config (its stored bytes exactly, so the id stays) and
//!                        each OCI manifest; a blob shared by several images is written once
//! index.json             OCI index: one manifest descriptor per image name
//!                        (`io.containerd.image.name` = the full name, `docker.io/library/x:1` for
//!                        `x:1`, `org.opencontainers.image.ref.name`
//!                        = its tag, as Docker writes them), one without annotations for
//!                        an image saved by id
//! manifest.json          docker-save: [{"Config":"blobs/sha256/<cfg>","RepoTags":[..],
//!                        "Layers":["blobs/sha256/<layer>",..]}]
//! oci-layout             {"imageLayoutVersion":"1.0.0"}
//! repositories           {"<repo>":{"<tag>":"<top layer blob hex>"}} (legacy docker load)
//! ```
//! Entries have mode 0644 (directories 0755), owner 0:0 and mtime 0, so the same images
//! give the same archive.
//!
//! Each layer's tar comes from [`LayerStore::layer_tar`] (tar-split reassembly, or the
//! exporter for layers without metadata) and is verified against its DiffID while it
//! streams; a layer that changed on disk stops the save with
//! [`StoreError::LayerChanged`] (the caller removes its partial output). A plain layer
//! with tar-split metadata streams straight into the archive (its size is known from the
//! metadata); other layers (compressed, or exported) are spooled to `<root>/tmp/` first
//! to learn their size and digest, one layer at a time. Holds the shared store lock.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use driver_core::id::random_hex;
use oci_spec::image::{
    Descriptor, Digest, ImageIndexBuilder, ImageManifestBuilder, MediaType, ANNOTATION_REF_NAME,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::error::{IoCtx, Result, StoreError};
use crate::ids::ImageId;
use crate::image::ImageRecord;
use crate::layer::LayerRecord;
use crate::store::LayerStore;
use crate::tarsplit::{layer_read_error, tar_split_size};
use crate::writeset::remove_logged;

/// containerd's (and Docker 25's) full-name annotation of an index entry.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Compression of saved layer blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveCompression {
    /// gzip (default level), media type `...tar+gzip`.
    Gzip,
    /// zstd (level 3), media type `...tar+zstd`.
    Zstd,
}

/// Options of [`LayerStore::save`].
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Compress layer blobs (the manifests name the compressed digests; DiffIDs stay).
    pub compress: Option<SaveCompression>,
}

/// What a save wrote.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The images saved, in argument order (duplicates once).
    pub images: Vec<ImageId>,
    /// Layer blobs written.
    pub layers: usize,
}

/// A writer that hashes and counts what passes.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(hex: &str) -> Result<Digest> {
    Digest::from_str(&format!("sha256:{hex}")).map_err(|e| StoreError::Corrupt {
        path: PathBuf::from(format!("sha256:{hex}")),
        reason: format!("not a digest: {e}"),
    })
}

fn spec_err(what: &str, e: oci_spec::OciSpecError) -> StoreError {
    StoreError::Corrupt {
        path: PathBuf::from(what),
        reason: e.to_string(),
    }
}

/// `repo:tag` -> (`repo`, `tag`); a name without a tag is `latest` (a `:` before the
/// last `/` is a registry port, not a tag).
fn split_tag(name: &str) -> (&str, &str) {
    let (repo, tag, _) = crate::ids::split_reference(name);
    (repo, tag.unwrap_or("latest"))
}

fn header(path: &str, size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    // Short ASCII names only: this cannot fail.
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

struct Out<W: Write> {
    tar: tar::Builder<W>,
    /// Blobs written, by hex digest.
    blobs: HashMap<String, u64>,
}

impl<W: Write> Out<W> {
    fn write_err(e: io::Error) -> StoreError {
        StoreError::io("write", "save archive", e)
    }

    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let h = header(name, data.len() as u64, false);
        self.tar.append(&h, data).map_err(Self::write_err)
    }

    fn add_blob(&mut self, data: &[u8]) -> Result<(String, u64)> {
        let hex = hex::encode(Sha256::digest(data));
        if !self.blobs.contains_key(&hex) {
            self.add_bytes(&format!("blobs/sha256/{hex}"), data)?;
            self.blobs.insert(hex.clone(), data.len() as u64);
        }
        Ok((hex, data.len() as u64))
    }
}

impl LayerStore {
    /// Writes the images `references` (names, ids or unique id prefixes) into `out` as
    /// one archive (see the module doc). Returns the report and `out`.
    ///
    /// Errors: an unknown reference (not found); [`StoreError::LayerChanged`] when a
    /// layer's content no longer hashes to its DiffID; write errors of `out`.
    #[tracing::instrument(level = "debug", skip(self, out))]
    pub fn save<W: Write>(
        &self,
        references: &[String],
        opts: &SaveOptions,
        out: W,
    ) -> Result<(SaveReport, W)> {
        // Images in argument order; names given by reference (an id gives none).
        let mut order: Vec<ImageId> = Vec::new();
        let mut names: HashMap<ImageId, Vec<String>> = HashMap::new();
        for r in references {
            let (id, name) = self.resolve_image_ref(r)?;
            if !order.contains(&id) {
                order.push(id.clone());
            }
            let e = names.entry(id).or_default();
            if let Some(n) = name {
                if !e.contains(&n) {
                    e.push(n);
                }
            }
        }
        let mut o = Out {
            tar: tar::Builder::new(out),
            blobs: HashMap::new(),
        };
        for d in ["blobs/", "blobs/sha256/"] {
            let h = header(d, 0, true);
            o.tar.append(&h, io::empty()).map_err(Out::<W>::write_err)?;
        }
        let mut index_entries: Vec<Descriptor> = Vec::new();
        let mut docker: Vec<serde_json::Value> = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        // Layer blob of each DiffID written so far: (media type, hex, size).
        let mut layer_blobs: HashMap<String, (MediaType, String, u64)> = HashMap::new();
        for id in &order {
            let img: ImageRecord = self.image(id)?;
            let chain = match img.top_layer() {
                Some(top) => self.layer_chain(top)?,
                None => Vec::new(),
            };
            let mut layer_descs = Vec::new();
            let mut layer_paths = Vec::new();
            for rec in &chain {
                let key = rec.diff_id.to_string();
                let (mt, hex, size) = match layer_blobs.get(&key) {
                    Some(b) => b.clone(),
                    None => {
                        let b = self.save_layer(rec, opts, &mut o)?;
                        layer_blobs.insert(key, b.clone());
                        b
                    }
                };
                layer_descs.push(Descriptor::new(mt, size, digest_of(&hex)?));
                layer_paths.push(format!("blobs/sha256/{hex}"));
            }
            let config = self.image_config(id)?;
            let (cfg_hex, cfg_size) = o.add_blob(&config)?;
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(Descriptor::new(
                    MediaType::ImageConfig,
                    cfg_size,
                    digest_of(&cfg_hex)?,
                ))
                .layers(layer_descs)
                .build()
                .map_err(|e| spec_err("image manifest", e))?;
            let mbytes = to_json(&manifest, "image manifest")?;
            let (m_hex, m_size) = o.add_blob(&mbytes)?;
            let img_names = names.get(id).cloned().unwrap_or_default();
            if img_names.is_empty() {
                index_entries.push(Descriptor::new(
                    MediaType::ImageManifest,
                    m_size,
                    digest_of(&m_hex)?,
                ));
            }
            for n in &img_names {
                let (repo, tag) = split_tag(n);
                // A digest reference (`foo@sha256:..`) has no tag: it goes in the index
                // by its full name only. In RepoTags `docker load` refuses the whole
                // archive ("invalid tag"), and `ref.name` / `repositories` got the
                // digest's hex as a "tag".
                let digested = n.contains('@');
                let mut d = Descriptor::new(MediaType::ImageManifest, m_size, digest_of(&m_hex)?);
                // In full, as `docker save` (v25+) and containerd write it.
                let mut ann = vec![(
                    CONTAINERD_NAME.to_owned(),
                    crate::ids::canonical_image_name(n).into_owned(),
                )];
                if !digested {
                    ann.push((ANNOTATION_REF_NAME.to_owned(), tag.to_owned()));
                }
                d.set_annotations(Some(ann.into_iter().collect()));
                index_entries.push(d);
                if digested {
                    continue;
                }
                if let Some(top) = layer_paths.last() {
                    repositories.entry(repo.to_owned()).or_default().insert(
                        tag.to_owned(),
                        top.trim_start_matches("blobs/sha256/").to_owned(),
                    );
                }
            }
            let repo_tags: Vec<&String> = img_names.iter().filter(|n| !n.contains('@')).collect();
            docker.push(json!({
                "Config": format!("blobs/sha256/{cfg_hex}"),
                "RepoTags": if repo_tags.is_empty() { serde_json::Value::Null } else { json!(repo_tags) },
                "Layers": layer_paths,
            }));
        }
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(index_entries)
            .build()
            .map_err(|e| spec_err("image index", e))?;
        o.add_bytes("index.json", &to_json(&index, "index.json")?)?;
        o.add_bytes("manifest.json", &to_json(&docker, "manifest.json")?)?;
        o.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        o.add_bytes("repositories", &to_json(&repositories, "repositories")?)?;
        let out = o.tar.into_inner().map_err(Out::<W>::write_err)?;
        Ok((
            SaveReport {
                images: order,
                layers: layer_blobs.len(),
            },
            out,
        ))
    }

    /// Writes one layer blob; returns (media type, hex digest, size).
    fn save_layer<W: Write>(
        &self,
        rec: &LayerRecord,
        opts: &SaveOptions,
        o: &mut Out<W>,
    ) -> Result<(MediaType, String, u64)> {
        let hex = rec.diff_id.hex().to_owned();
        if opts.compress.is_none() && self.has_tar_split(rec) {
            // Straight into the archive: size from the metadata, verified while streaming.
            let size =
                tar_split_size(&self.tar_split_path(rec)).map_err(|e| layer_read_error(rec, e))?;
            let name = format!("blobs/sha256/{hex}");
            if !o.blobs.contains_key(&hex) {
                let h = header(&name, size, false);
                let r = self.layer_tar(rec)?;
                o.tar.append(&h, r).map_err(|e| layer_read_error(rec, e))?;
                o.blobs.insert(hex.clone(), size);
            }
            return Ok((MediaType::ImageLayer, hex, size));
        }
        let spool = self.tmp_dir().join(format!("save-{}", random_hex(8)));
        let result = self.spool_layer(rec, opts, &spool, o);
        remove_logged(&spool);
        result
    }

    fn spool_layer<W: Write>(
        &self,
        rec: &LayerRecord,
        opts: &SaveOptions,
        spool: &Path,
        o: &mut Out<W>,
    ) -> Result<(MediaType, String, u64)> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(spool)
            .ctx("create spool file", spool)?;
        let mut w = HashingWriter {
            inner: BufWriter::with_capacity(256 << 10, f),
            hasher: Sha256::new(),
            size: 0,
        };
        let mut r = self.layer_tar(rec)?;
        let werr = |e: io::Error| StoreError::io("write", spool, e);
        let copy = |r: &mut dyn Read, w: &mut dyn Write| -> Result<()> {
            // Read errors are the layer's (changed content); write errors the spool's.
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(layer_read_error(rec, e)),
                };
                w.write_all(&buf[..n]).map_err(werr)?;
            }
        };
        let mt = match opts.compress {
            None => {
                copy(&mut r, &mut w)?;
                MediaType::ImageLayer
            }
            Some(SaveCompression::Gzip) => {
                let mut gz = flate2::write::GzEncoder::new(&mut w, flate2::Compression::default());
                copy(&mut r, &mut gz)?;
                gz.finish().map_err(werr)?;
                MediaType::ImageLayerGzip
            }
            Some(SaveCompression::Zstd) => {
                let mut z = zstd::Encoder::new(&mut w, 3).map_err(werr)?;
                copy(&mut r, &mut z)?;
                z.finish().map_err(werr)?;
                MediaType::ImageLayerZstd
            }
        };
        let size = w.size;
        let hex = hex::encode(w.hasher.finalize());
        let mut f = w.inner.into_inner().map_err(|e| werr(e.into_error()))?;
        if !o.blobs.contains_key(&hex) {
            f.rewind().map_err(werr)?;
            let h = header(&format!("blobs/sha256/{hex}"), size, false);
            o.tar
                .append(&h, BufReader::with_capacity(256 << 10, f))
                .map_err(Out::<W>::write_err)?;
            o.blobs.insert(hex.clone(), size);
        }
        Ok((mt, hex, size))
    }
}

/// Serialises a small JSON document of the archive.
/// Goes through `serde_json::Value`, whose objects are sorted by key, so maps (OCI
/// annotations are a `HashMap`) serialise the same way every time.
fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<Vec<u8>> {
    let err = |e| StoreError::BadJson {
        file: PathBuf::from(what),
        what: "serialize".into(),
        source: e,
    };
    let v = serde_json::to_value(v).map_err(err)?;
    serde_json::to_vec(&v).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_split_at_the_last_colon_after_the_last_slash() {
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("reg:5000/a/b"), ("reg:5000/a/b", "latest"));
        assert_eq!(split_tag("reg:5000/a/b:v1"), ("reg:5000/a/b", "v1"));
    }
}
