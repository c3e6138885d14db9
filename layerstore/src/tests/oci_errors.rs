//! OCI layouts a user can meet that layerctl cannot import: each refused with exit 5 and
//! a message that says what the layout is, not a parser's complaint.

use super::*;

fn layout_dir(t: &tempfile::TempDir) -> PathBuf {
    let dir = t.path().join("layout");
    let layer = tar_of(&[("etc/os", b"x")]);
    oci_layout(
        &dir,
        std::slice::from_ref(&layer),
        &[format!("sha256:{}", sha_hex(&layer))],
        "v1",
    );
    dir
}

fn refused(dir: &Path, want: &str) {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let e = s
        .import(ImportSource::Path(dir), &ImportOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains(want), "want {want:?} in: {e}");
    assert!(s.layers().unwrap().is_empty());
}

/// Rewrites the one manifest of `dir` with `edit`, storing it under its new digest.
fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let old = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blobs = dir.join("blobs/sha256");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(blobs.join(&old["sha256:".len()..])).unwrap()).unwrap();
    edit(&mut m);
    let data = serde_json::to_vec(&m).unwrap();
    let h = sha_hex(&data);
    fs::write(blobs.join(&h), &data).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{h}").into();
    index["manifests"][0]["size"] = data.len().into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Before: "missing field `config`".
#[test]
fn a_schema_1_manifest_is_named_as_such() {
    let t = tempfile::tempdir().unwrap();
    let dir = layout_dir(&t);
    edit_manifest(&dir, |m| {
        *m = serde_json::json!({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []});
    });
    refused(&dir, "image manifest schema 1, which is not supported");
}

/// A non-distributable ("foreign") layer the layout does not hold, only its URLs.
/// Before: "member ... is missing or not a safe relative path".
#[test]
fn a_foreign_layer_missing_from_the_layout_is_named_with_its_urls() {
    let t = tempfile::tempdir().unwrap();
    let dir = layout_dir(&t);
    let mut digest = String::new();
    edit_manifest(&dir, |m| {
        let l = &mut m["layers"][0];
        l["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into();
        l["urls"] = serde_json::json!(["https://example.invalid/layer"]);
        digest = l["digest"].as_str().unwrap().to_owned();
    });
    fs::remove_file(dir.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
    refused(&dir, "is a non-distributable layer");
    refused(&dir, "https://example.invalid/layer");
}

/// Before: "no manifest for linux/amd64".
#[test]
fn an_empty_index_says_it_is_empty() {
    let t = tempfile::tempdir().unwrap();
    let dir = layout_dir(&t);
    fs::write(
        dir.join("index.json"),
        br#"{"schemaVersion": 2, "manifests": []}"#,
    )
    .unwrap();
    refused(&dir, "index.json lists no manifests");
}

/// An OCI layout tarred with its own directory (`tar -cf x.tar layout/`) is refused
/// naming the directory; before, it was imported as a root filesystem holding
/// `layout/index.json` and the blobs. The same layout tarred from inside imports.
#[test]
fn a_layout_tarred_with_its_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = layout_dir(&t);
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all("ocidir", &dir).unwrap();
    let nested = write(t.path(), "nested.tar", &b.into_inner().unwrap());
    refused(
        &nested,
        "tarred with its directory: its members are below ocidir/",
    );
    let flat = write(t.path(), "flat.tar", &tar_dir(&dir));
    let s = open(&t.path().join("root2"));
    let rep = s
        .import(ImportSource::Path(&flat), &ImportOptions::default())
        .unwrap();
    assert_eq!(rep.format, Format::OciArchive);
}
