//! Image fixtures built in memory from a plain description of their layers.
//!
//! A [`Layer`] is a list of [`Entry`]s (directories, files, symlinks, hard links, char
//! devices, fifos, OCI whiteouts) with owners, modes, mtimes and `user.*` xattrs. From an
//! [`Image`] (layers bottom to top) this module writes
//! - the layer tars (xattrs as PAX `SCHILY.xattr.*` records), optionally gzip or zstd,
//! - a `docker save` archive (`manifest.json`, config with `rootfs.diff_ids`,
//!   `<hex>/layer.tar`, `repositories`),
//! - an OCI image layout directory and an OCI archive (tar of the layout),
//! - the EXPECTED root filesystem ([`Expected`]): the layers applied with OCI whiteout
//!   semantics, which tests compare entry by entry with a mounted container.
//!
//! DiffIDs and ChainIDs are computed here independently of layerctl, with the OCI formulas.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// ChainIDs per the OCI image spec: ChainID(L0) = DiffID(L0),
/// ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// What an entry of a layer tar is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// Hard link to another path of the SAME layer (tar link name).
    HardLink(String),
    CharDev(u32, u32),
    Fifo,
}

/// One entry of a layer tar.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Relative path inside the layer (`etc/passwd`), no leading `/` or `./`.
    pub path: String,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Default mtime of fixture entries (2023-11-14T22:13:20Z), distinct from 0 and now.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

impl Entry {
    fn new(path: &str, kind: Kind, mode: u32) -> Self {
        Self {
            path: path
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: BTreeMap::new(),
        }
    }
    pub fn dir(path: &str) -> Self {
        Self::new(path, Kind::Dir, 0o755)
    }
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::File(content.into()), 0o644)
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Symlink(target.to_string()), 0o777)
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::HardLink(target.to_string()), 0o644)
    }
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::CharDev(major, minor), 0o666)
    }
    pub fn fifo(path: &str) -> Self {
        Self::new(path, Kind::Fifo, 0o600)
    }
    /// OCI whiteout deleting `path` of a lower layer: an empty file `<dir>/.wh.<name>`.
    pub fn whiteout(path: &str) -> Self {
        let path = path.trim_matches('/');
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        Self::new(&format!("{dir}.wh.{name}"), Kind::File(Vec::new()), 0o644)
    }
    /// OCI opaque whiteout: `<dir>/.wh..wh..opq` hides every lower entry below `dir`.
    pub fn opaque(dir: &str) -> Self {
        let dir = dir.trim_matches('/');
        Self::new(
            &format!("{dir}/.wh..wh..opq"),
            Kind::File(Vec::new()),
            0o644,
        )
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        self.xattrs.insert(key.to_string(), value.to_vec());
        self
    }
    fn base_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
    fn parent(&self) -> &str {
        self.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
}

/// How a layer blob is compressed in OCI images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => gzip(data),
            Compression::Zstd => zstd_checked(data),
        }
    }
}

/// zstd of `data` with a content checksum, as the `zstd` tool writes by default (without
/// it, corruption inside a raw block is undetectable by the decoder).
pub fn zstd_checked(data: &[u8]) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("zstd encoder");
    enc.include_checksum(true).expect("zstd checksum flag");
    enc.write_all(data).expect("zstd in memory");
    enc.finish().expect("zstd in memory")
}

/// gzip `data` in memory, at the default level (what builders use; zlib-rs's fast level
/// barely compresses runs of zeros, which the bomb test relies on).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// One layer: its entries in tar order and how its OCI blob is compressed.
#[derive(Clone, Debug)]
pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
}

impl Layer {
    pub fn new(entries: Vec<Entry>) -> Self {
        Self {
            entries,
            compression: Compression::None,
        }
    }
    pub fn compressed(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    /// The uncompressed layer tar (what the DiffID is computed over).
    pub fn tar(&self) -> Vec<u8> {
        build_tar(&self.entries).expect("building a fixture tar in memory")
    }

    /// The layer blob as stored in an OCI image (compressed per `self.compression`).
    pub fn blob(&self) -> Vec<u8> {
        self.compression.compress(&self.tar())
    }

    /// DiffID: sha256 of the uncompressed tar.
    pub fn diff_id(&self) -> String {
        sha256_digest(&self.tar())
    }
}

/// Writes `entries` as a tar archive (ustar headers, PAX records for xattrs, GNU long
/// names when needed), ending with the two zero blocks.
pub fn build_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Complete);
    for e in entries {
        if !e.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = e
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(0);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &e.path, data.as_slice())?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &e.path, target)?;
            }
            Kind::HardLink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &e.path, target)?;
            }
            Kind::CharDev(major, minor) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                b.append_data(&mut h, &e.path, std::io::empty())?;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &e.path, std::io::empty())?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// A file-system entry of the expected (or observed) tree, compared field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    /// Regular file: sha256 hex of the content and its size.
    File {
        sha256: String,
        size: u64,
    },
    Symlink(String),
    CharDev(u64, u64),
    BlockDev(u64, u64),
    Fifo,
    Socket,
    /// Listed by its directory, but `lstat`/`open`/`read` of it fails (overlayfs shows
    /// such entries for mis-stored whiteouts): the error. Only snapshots have these.
    Broken(String),
}

/// Expected state of one path in the assembled root filesystem.
#[derive(Clone, Debug)]
pub struct ExpEntry {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Paths sharing one inode (hard links) carry the same group key.
    pub link_group: Option<String>,
}

/// The expected root filesystem: relative path -> entry (the root itself excluded).
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub entries: BTreeMap<String, ExpEntry>,
}

impl Expected {
    fn remove_subtree(&mut self, path: &str) {
        self.entries.remove(path);
        self.remove_children(path);
    }
    fn remove_children(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = if dir.is_empty() {
            self.entries.keys().cloned().collect()
        } else {
            self.entries
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// Applies one layer with OCI semantics: whiteouts and opaque markers act on the
    /// lower layers only (they are processed first), then entries are added in order;
    /// a directory over a directory keeps its children, anything else replaces the subtree.
    pub fn apply(&mut self, layer: &Layer) -> Result<()> {
        for e in &layer.entries {
            let base = e.base_name();
            if base == ".wh..wh..opq" {
                self.remove_children(e.parent());
            } else if let Some(name) = base.strip_prefix(".wh.") {
                if name.is_empty() || name == "." || name == ".." {
                    bail!("invalid whiteout {}", e.path);
                }
                let victim = if e.parent().is_empty() {
                    name.to_string()
                } else {
                    format!("{}/{name}", e.parent())
                };
                self.remove_subtree(&victim);
            }
        }
        for e in &layer.entries {
            if e.base_name().starts_with(".wh.") {
                continue;
            }
            let parent = e.parent();
            if !parent.is_empty()
                && !matches!(self.entries.get(parent), Some(p) if p.kind == NodeKind::Dir)
            {
                bail!("fixture entry {} has no parent directory", e.path);
            }
            let mut new = ExpEntry {
                kind: NodeKind::Dir,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime: i64::try_from(e.mtime).context("fixture mtime past i64")?,
                xattrs: e.xattrs.clone(),
                link_group: None,
            };
            new.kind = match &e.kind {
                Kind::Dir => NodeKind::Dir,
                Kind::File(data) => NodeKind::File {
                    sha256: hex::encode(Sha256::digest(data)),
                    size: data.len() as u64,
                },
                Kind::Symlink(t) => NodeKind::Symlink(t.clone()),
                Kind::CharDev(ma, mi) => NodeKind::CharDev(u64::from(*ma), u64::from(*mi)),
                Kind::Fifo => NodeKind::Fifo,
                Kind::HardLink(target) => {
                    let target = target.trim_start_matches('/').to_string();
                    let t = self
                        .entries
                        .get_mut(&target)
                        .with_context(|| format!("hard link {} to missing {target}", e.path))?;
                    let group = t.link_group.get_or_insert_with(|| target.clone()).clone();
                    let mut copy = t.clone();
                    copy.link_group = Some(group);
                    self.remove_subtree(&e.path);
                    self.entries.insert(e.path.clone(), copy);
                    continue;
                }
            };
            match self.entries.get(&e.path) {
                Some(old) if old.kind == NodeKind::Dir && new.kind == NodeKind::Dir => {}
                _ => self.remove_subtree(&e.path),
            }
            self.entries.insert(e.path.clone(), new);
        }
        Ok(())
    }
}

/// An image: layers bottom to top plus a name (docker-save RepoTags / OCI ref name).
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub layers: Vec<Layer>,
}

impl Image {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(Layer::diff_id).collect()
    }
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }
    /// The OCI image config (deterministic bytes; the same for docker-save and OCI).
    pub fn config_json(&self) -> Vec<u8> {
        config_json_for(&self.diff_ids())
    }
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config_json())
    }
    /// The root filesystem all layers produce.
    pub fn expected(&self) -> Result<Expected> {
        let mut exp = Expected::default();
        for l in &self.layers {
            exp.apply(l)?;
        }
        Ok(exp)
    }

    /// The layers as image blobs (tar, blob, media type), bottom to top.
    pub fn layer_blobs(&self) -> Vec<LayerBlob> {
        self.layers
            .iter()
            .map(|l| LayerBlob {
                tar: l.tar(),
                blob: l.blob(),
                media_type: l.compression.media_type().to_string(),
            })
            .collect()
    }

    /// A `docker save` archive (layers uncompressed, as `docker save` writes them).
    pub fn docker_save(&self) -> Vec<u8> {
        let tars: Vec<Vec<u8>> = self.layers.iter().map(Layer::tar).collect();
        docker_save_of(&self.name, &tars)
    }

    /// The files of an OCI image layout: (relative path, content).
    pub fn oci_files(&self) -> Vec<(String, Vec<u8>)> {
        oci_files_of(&self.layer_blobs())
    }

    /// Writes the OCI image layout into `dir` (created if missing).
    pub fn write_oci_layout(&self, dir: &Path) -> Result<()> {
        for (rel, data) in self.oci_files() {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("has parent"))?;
            std::fs::write(&p, data).with_context(|| format!("write {}", p.display()))?;
        }
        Ok(())
    }

    /// An OCI archive: a tar of the OCI image layout.
    pub fn oci_archive(&self) -> Vec<u8> {
        plain_archive(&self.oci_files())
    }
}

/// One layer as an image holds it: the uncompressed tar (its sha256 is the DiffID) and
/// the blob of an OCI image (the tar itself or compressed) with its media type.
#[derive(Clone, Debug)]
pub struct LayerBlob {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
}

impl LayerBlob {
    /// An uncompressed layer: the blob is the tar.
    pub fn plain(tar: Vec<u8>) -> Self {
        Self {
            blob: tar.clone(),
            tar,
            media_type: Compression::None.media_type().to_string(),
        }
    }
}

/// The OCI image config of an image whose layers have `diff_ids` (deterministic bytes).
pub fn config_json_for(diff_ids: &[String]) -> Vec<u8> {
    let history: Vec<_> = (0..diff_ids.len())
        .map(|i| json!({"created": "2023-11-14T22:13:20Z", "created_by": format!("layer {i}")}))
        .collect();
    let v = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    serde_json::to_vec(&v).expect("json")
}

/// A `docker save` archive named `name` of the layer tars `tars` (bottom to top, stored
/// as they are in `<chain hex>/layer.tar`), with the config listing their DiffIDs.
pub fn docker_save_of(name: &str, tars: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = tars.iter().map(|t| sha256_digest(t)).collect();
    let chains = chain_ids(&diff_ids);
    let config = config_json_for(&diff_ids);
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut layer_paths = Vec::new();
    for (chain, tar) in chains.iter().zip(tars) {
        let dir = chain.trim_start_matches("sha256:").to_string();
        files.push((format!("{dir}/VERSION"), b"1.0".to_vec()));
        files.push((
            format!("{dir}/json"),
            format!("{{\"id\":\"{dir}\"}}").into_bytes(),
        ));
        files.push((format!("{dir}/layer.tar"), tar.clone()));
        layer_paths.push(format!("{dir}/layer.tar"));
    }
    let top = chains
        .last()
        .map(|c| c.trim_start_matches("sha256:").to_string())
        .unwrap_or_default();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [format!("{name}:latest")],
        "Layers": layer_paths,
    }]);
    let repos = json!({ name: {"latest": top} });
    files.push((config_name.clone(), config));
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).expect("json"),
    ));
    files.push((
        "repositories".into(),
        serde_json::to_vec(&repos).expect("json"),
    ));
    plain_archive(&files)
}

/// The files of an OCI image layout holding one image of `layers` (bottom to top):
/// (relative path, content).
pub fn oci_files_of(layers: &[LayerBlob]) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(&l.tar)).collect();
    let config = config_json_for(&diff_ids);
    let mut descs = Vec::new();
    for l in layers {
        let d = sha256_digest(&l.blob);
        descs.push(json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()}));
        files.push((blob_path(&d), l.blob.clone()));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": descs,
    }))
    .expect("json");
    let md = sha256_digest(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    }))
    .expect("json");
    files.push((blob_path(&sha256_digest(&config)), config));
    files.push((blob_path(&md), manifest));
    files.push(("index.json".into(), index));
    files
}

/// An OCI archive (a tar of the OCI image layout) holding one image of `layers`.
pub fn oci_archive_of(layers: &[LayerBlob]) -> Vec<u8> {
    plain_archive(&oci_files_of(layers))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// A tar of plain files (parent directories added as entries), used for the image archives.
pub fn plain_archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in files {
        let mut acc = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            if dirs.insert(acc.clone()) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_mtime(DEFAULT_MTIME);
                h.set_size(0);
                b.append_data(&mut h, format!("{acc}/"), std::io::empty())
                    .expect("tar in memory");
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(DEFAULT_MTIME);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data.as_slice())
            .expect("tar in memory");
    }
    b.into_inner().expect("tar in memory")
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for corruption tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The standard three-layer image of the suite. Layer 0 is a base tree with every entry
/// kind and odd metadata; layer 1 deletes, replaces and makes a directory opaque; layer 2
/// adds on top of the opaque directory and deletes a whole directory.
pub fn sample_image(name: &str) -> Image {
    let l0 = Layer::new(vec![
        Entry::dir("bin"),
        Entry::file("bin/tool", b"#!/bin/sh\necho tool\n".to_vec()).mode(0o755),
        Entry::hardlink("bin/tool-link", "bin/tool"),
        Entry::file("bin/suid", b"setuid binary".to_vec()).mode(0o4755),
        Entry::file("bin/sgid", b"setgid binary".to_vec())
            .mode(0o2711)
            .owner(0, 42),
        Entry::dir("etc"),
        Entry::file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
        Entry::file("etc/to-delete", b"deleted by layer 1\n".to_vec()),
        Entry::file("etc/odd-owner", b"owned by 1234:5678\n".to_vec())
            .owner(1234, 5678)
            .mode(0o640)
            .mtime(1_234_567_890),
        Entry::file("etc/xattrs", b"has xattrs\n".to_vec())
            .xattr("user.e2e", b"value-1")
            .xattr("user.binary", &[0, 1, 2, 255]),
        Entry::symlink("etc/abs-link", "/etc/passwd"),
        Entry::symlink("etc/rel-link", "../bin/tool"),
        Entry::symlink("etc/dangling", "no/such/target"),
        Entry::dir("dev"),
        Entry::char_dev("dev/null", 1, 3),
        Entry::char_dev("dev/odd", 10, 200).mode(0o620).owner(0, 5),
        Entry::fifo("dev/pipe"),
        Entry::dir("tmp").mode(0o1777),
        Entry::dir("opaque"),
        Entry::file("opaque/lower-a", b"hidden by opaque\n".to_vec()),
        Entry::dir("opaque/lower-dir"),
        Entry::file("opaque/lower-dir/deep", b"also hidden\n".to_vec()),
        Entry::dir("gone"),
        Entry::file("gone/file", b"whole dir deleted in layer 2\n".to_vec()),
        Entry::dir("home").owner(1000, 1000).mode(0o750),
        Entry::file("home/big", noise(300_000, 7)).owner(1000, 1000),
        Entry::file("replace-me", b"file replaced by a dir\n".to_vec()),
    ]);
    let l1 = Layer::new(vec![
        Entry::dir("etc"),
        Entry::whiteout("etc/to-delete"),
        Entry::file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home:/bin/sh\n".to_vec(),
        )
        .mtime(1_600_000_000),
        Entry::dir("opaque").mode(0o711),
        Entry::opaque("opaque"),
        Entry::file("opaque/upper", b"survives the opaque marker\n".to_vec()),
        Entry::dir("replace-me"),
        Entry::file("replace-me/inside", b"now a dir\n".to_vec()),
        Entry::file("bin/suid", b"setuid binary v2".to_vec())
            .mode(0o4755)
            .owner(0, 0),
    ])
    .compressed(Compression::Gzip);
    let l2 = Layer::new(vec![
        Entry::whiteout("gone"),
        Entry::dir("opaque"),
        Entry::file("opaque/top", b"from layer 2\n".to_vec()).xattr("user.layer", b"2"),
        Entry::dir("sticky").mode(0o1777),
        Entry::file("sticky/setuid-root", b"x".to_vec()).mode(0o6755),
        Entry::file("etc/new", b"new in layer 2\n".to_vec()).owner(1234, 5678),
        Entry::file("etc/new-link-src", b"hard linked in layer 2\n".to_vec()),
        Entry::hardlink("etc/new-link", "etc/new-link-src"),
    ])
    .compressed(Compression::Zstd);
    Image {
        name: name.to_string(),
        layers: vec![l0, l1, l2],
    }
}

/// Reads a plain (uncompressed) tar into a [`Layer`] description, so the expected tree of
/// any tar (e.g. busybox.tar) can be computed. The root entry `./` is skipped.
pub fn layer_from_tar(bytes: &[u8]) -> Result<Layer> {
    let mut ar = tar::Archive::new(bytes);
    let mut entries = Vec::new();
    for ent in ar.entries()? {
        let mut ent = ent?;
        let raw_path = ent.path()?.to_string_lossy().into_owned();
        let path = raw_path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let h = ent.header().clone();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = ent.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Some(k) = ext.key()?.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let link = || -> Result<String> { Ok(ent_link(&h)?.trim_start_matches("./").to_string()) };
        let kind = match h.entry_type() {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut ent, &mut data)?;
                Kind::File(data)
            }
            tar::EntryType::Symlink => Kind::Symlink(ent_link(&h)?),
            tar::EntryType::Link => Kind::HardLink(link()?),
            tar::EntryType::Char => Kind::CharDev(
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            ),
            tar::EntryType::Fifo => Kind::Fifo,
            other => bail!("unsupported entry type {other:?} for {path}"),
        };
        entries.push(Entry {
            path,
            kind,
            mode: h.mode()? & 0o7777,
            uid: h.uid()?,
            gid: h.gid()?,
            mtime: h.mtime()?,
            xattrs,
        });
    }
    Ok(Layer::new(entries))
}

fn ent_link(h: &tar::Header) -> Result<String> {
    Ok(h.link_name()?
        .context("link entry without a link name")?
        .to_string_lossy()
        .into_owned())
}

/// Builds the busybox rootfs tar with the project's `scripts/make-busybox-tar.sh` (Debian's
/// static busybox, deterministic) at `out`. Errors carry the script's stderr.
pub fn busybox_tar(out: &Path) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ has a parent")?
        .join("scripts/make-busybox-tar.sh");
    let o = std::process::Command::new("bash")
        .arg(&script)
        .arg(out)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !o.status.success() {
        bail!(
            "make-busybox-tar.sh failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_formula() {
        let d = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:aa");
        assert_eq!(c[1], sha256_digest(b"sha256:aa sha256:bb"));
    }

    #[test]
    fn sample_expected_tree() {
        let img = sample_image("t");
        let exp = img.expected().unwrap();
        let e = &exp.entries;
        assert!(!e.contains_key("etc/to-delete"), "whiteout applied");
        assert!(
            !e.contains_key("gone") && !e.contains_key("gone/file"),
            "dir whiteout applied"
        );
        assert!(!e.contains_key("opaque/lower-a") && !e.contains_key("opaque/lower-dir/deep"));
        assert!(e.contains_key("opaque/upper") && e.contains_key("opaque/top"));
        assert_eq!(e["replace-me"].kind, NodeKind::Dir);
        assert_eq!(e["bin/tool-link"].link_group.as_deref(), Some("bin/tool"));
        assert_eq!(e["etc/odd-owner"].uid, 1234);
        assert_eq!(e["etc/xattrs"].xattrs["user.e2e"], b"value-1");
        // Round trip through the tar reader gives the same tree.
        let mut again = Expected::default();
        for l in &img.layers {
            again.apply(&layer_from_tar(&l.tar()).unwrap()).unwrap();
        }
        assert_eq!(format!("{:?}", again.entries), format!("{:?}", exp.entries));
    }

    #[test]
    fn archives_are_readable_tars() {
        let img = sample_image("t");
        for bytes in [img.docker_save(), img.oci_archive()] {
            let mut ar = tar::Archive::new(bytes.as_slice());
            let names: Vec<String> = ar
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                .collect();
            assert!(
                names
                    .iter()
                    .any(|n| n == "manifest.json" || n == "index.json"),
                "{names:?}"
            );
        }
    }
}
