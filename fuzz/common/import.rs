//! Fuzz harness of the import parsers, shared by the `compression_detect`,
//! `docker_save_manifest` and `oci_index` fuzz targets and by the regression test
//! `layerstore/tests/fuzz_regressions.rs` (included by `#[path]`).
//!
//! - [`compression`]: `detect` on the bytes, then the decoder over them (at most
//!   [`DECODE_CAP`] bytes read out); a gzip or zstd encoding of the same bytes must be
//!   detected as such.
//! - [`Importer::docker_save`] / [`Importer::oci`]: a real import into a vfs store of an
//!   archive whose one document is the fuzz input (byte 0 says which: the docker-save
//!   `manifest.json` or the config; the OCI `index.json`, the manifest, a nested index
//!   or the config), every other member valid and every digest that names the fuzzed
//!   document computed from it, so the parsers past the digest checks are reached.
//!   Checked: no panic; afterwards `check` finds nothing (a refused import leaves
//!   nothing behind); an accepted image's layers all exist. An accepted image is
//!   removed again so every input starts from the same store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use layerstore::import::decompress::{decoder, detect, Compression};
use layerstore::{ImportOptions, ImportSource, LayerStore, LockMode};
use sha2::{Digest, Sha256};

/// Bytes read out of a decoder per input: bounds the time a bomb can take.
pub const DECODE_CAP: u64 = 1 << 20;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Detection and decoding of one input.
pub fn compression(data: &[u8]) {
    let got = detect(&data[..data.len().min(layerstore::import::decompress::SNIFF_LEN)]);
    if let Ok(Compression::Gzip) = got {
        assert_eq!(&data[..2], &[0x1f, 0x8b], "gzip without its magic");
    }
    if let Ok((_, mut d)) = decoder(std::io::BufReader::new(data)) {
        let mut sink = Vec::new();
        let _ = (&mut d).take(DECODE_CAP).read_to_end(&mut sink);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(detect(&gz), Ok(Compression::Gzip), "gzip of the input");
    let (_, mut d) = decoder(std::io::BufReader::new(&gz[..])).expect("decoder of gzip");
    let mut back = Vec::new();
    d.read_to_end(&mut back).expect("gzip round trip");
    assert_eq!(back, data, "gzip round trip");
}

/// A vfs store and the valid parts of an image.
pub struct Importer {
    pub dir: tempfile::TempDir,
    store: LayerStore,
    layer: Vec<u8>,
    diff_id: String,
    n: std::cell::Cell<u64>,
}

impl Importer {
    /// A fresh store in `$TMPDIR`.
    pub fn new() -> Importer {
        let dir = tempfile::Builder::new()
            .prefix("layerctl-fuzz-import-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        let driver = driver_vfs::VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap();
        let store = LayerStore::open(&root, Box::new(driver), LockMode::Exclusive).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("etc/hostname").unwrap();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_cksum();
        b.append(&h, &b"fuzz\n"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let diff_id = sha(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        Importer {
            dir,
            store,
            layer: gz.finish().unwrap(),
            diff_id,
            n: Default::default(),
        }
    }

    /// A valid image config with the one layer.
    pub fn config(&self) -> Vec<u8> {
        format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
            self.diff_id
        )
        .into_bytes()
    }

    fn work(&self) -> PathBuf {
        let n = self.n.get();
        self.n.set(n + 1);
        self.dir.path().join(format!("in-{n}"))
    }

    /// The valid docker-save `manifest.json`.
    pub fn valid_docker_manifest(&self) -> Vec<u8> {
        format!(
            r#"[{{"Config":"blobs/sha256/{}","RepoTags":["fuzz:latest"],"Layers":["blobs/sha256/{}"]}}]"#,
            sha(&self.config()),
            sha(&self.layer)
        )
        .into_bytes()
    }

    /// Seeds of the import targets: (target, name, input).
    pub fn seeds(&self) -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let with = |mode: u8, doc: &[u8]| [&[mode][..], doc].concat();
        let (manifest, nested, index) = self.oci_documents(None, None, None);
        vec![
            (
                "docker_save_manifest",
                "manifest",
                with(0, &self.valid_docker_manifest()),
            ),
            ("docker_save_manifest", "config", with(1, &self.config())),
            ("oci_index", "index", with(0, &index)),
            ("oci_index", "manifest", with(1, &manifest)),
            ("oci_index", "nested", with(2, &nested)),
            ("oci_index", "config", with(3, &self.config())),
        ]
    }

    /// A docker-save archive: byte 0 even, the rest is `manifest.json`; odd, the rest
    /// is the config (named by its digest). Returns whether the import succeeded.
    pub fn docker_save(&self, data: &[u8]) -> bool {
        let Some((&mode, doc)) = data.split_first() else {
            return false;
        };
        let layer_hex = sha(&self.layer);
        let (config, manifest) = if mode & 1 == 0 {
            (self.config(), doc.to_vec())
        } else {
            let m = format!(
                r#"[{{"Config":"blobs/sha256/{}","RepoTags":["fuzz:latest"],"Layers":["blobs/sha256/{layer_hex}"]}}]"#,
                sha(doc)
            );
            (doc.to_vec(), m.into_bytes())
        };
        let config_hex = sha(&config);
        let members: Vec<(String, &[u8])> = vec![
            ("manifest.json".into(), &manifest[..]),
            (format!("blobs/sha256/{config_hex}"), &config[..]),
            (format!("{config_hex}.json"), &config[..]),
            (format!("blobs/sha256/{layer_hex}"), &self.layer[..]),
            ("layer/layer.tar".into(), &self.layer[..]),
        ];
        let file = self.work();
        std::fs::write(&file, tar_of(&members)).unwrap();
        let ok = self.import_and_check(&file);
        std::fs::remove_file(&file).unwrap();
        ok
    }

    /// (manifest, nested index, index.json), each the given one or a valid one
    /// pointing at the documents below it (with their real digests and sizes).
    fn oci_documents(
        &self,
        config: Option<&[u8]>,
        manifest: Option<&[u8]>,
        nested: Option<&[u8]>,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let own_config = self.config();
        let config = config.unwrap_or(&own_config);
        let manifest = manifest.map(<[u8]>::to_vec).unwrap_or_else(|| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}}]}}"#,
                sha(config),
                config.len(),
                sha(&self.layer),
                self.layer.len()
            )
            .into_bytes()
        });
        let nested_given = nested.is_some();
        let nested = nested.map(<[u8]>::to_vec).unwrap_or_else(|| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
                sha(&manifest),
                manifest.len()
            )
            .into_bytes()
        });
        let index = if nested_given {
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{}","size":{}}}]}}"#,
                sha(&nested),
                nested.len()
            )
        } else {
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"fuzz"}}}}]}}"#,
                sha(&manifest),
                manifest.len()
            )
        };
        (manifest, nested, index.into_bytes())
    }

    /// An OCI layout directory: byte 0 % 4 picks the fuzzed document (0 `index.json`,
    /// 1 the manifest, 2 a nested index, 3 the config). Returns whether the import
    /// succeeded.
    pub fn oci(&self, data: &[u8]) -> bool {
        let Some((&mode, doc)) = data.split_first() else {
            return false;
        };
        let config = if mode % 4 == 3 {
            doc.to_vec()
        } else {
            self.config()
        };
        let (manifest, nested, index) = self.oci_documents(
            Some(&config),
            (mode % 4 == 1).then_some(doc),
            (mode % 4 == 2).then_some(doc),
        );
        let index = if mode % 4 == 0 { doc.to_vec() } else { index };
        let dir = self.work();
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), &index).unwrap();
        for blob in [&config, &manifest, &nested, &self.layer] {
            std::fs::write(blobs.join(sha(blob)), blob).unwrap();
        }
        let ok = self.import_and_check(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        ok
    }

    fn import_and_check(&self, input: &Path) -> bool {
        let opts = ImportOptions::default();
        let result = self.store.import(ImportSource::Path(input), &opts);
        let report = self.store.check().expect("check after import");
        assert!(
            report.is_clean(),
            "import ({result:?}) left problems: {:?}",
            report.problems
        );
        if let Ok(r) = result {
            for id in &r.images {
                let img = self.store.image(id).expect("imported image reads back");
                for c in &img.chain {
                    assert!(self.store.has_layer(c), "image {id} lacks layer {c}");
                }
            }
            for img in self.store.images().unwrap() {
                self.store
                    .remove_image(&img.id.to_string())
                    .expect("remove the imported image");
            }
            let report = self.store.check().expect("check after rmi");
            assert!(report.is_clean(), "rmi left {:?}", report.problems);
            return true;
        }
        false
    }
}

impl Default for Importer {
    fn default() -> Self {
        Importer::new()
    }
}

/// A tar of regular files.
fn tar_of(members: &[(String, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}
