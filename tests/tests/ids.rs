//! Content addressing: the same content imported twice gives the same image id and stores
//! each layer once; DiffIDs and ChainIDs match the values computed here (OCI formulas).

use layerctl_tests::fixtures::{chain_ids, gzip, sample_image, sha256_digest, Entry, Layer};
use layerctl_tests::harness::{self, Ctl};

#[test]
fn same_content_same_ids_one_copy() {
    if !harness::can_run("ids", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let img = sample_image("dedup");
    let save = ctl.write_work("save.tar", &img.docker_save());
    let id1 = ctl.import(&save, "dedup");
    let id2 = ctl.import(&save, "dedup-again");
    assert_eq!(id1, id2, "same docker-save archive imported twice");

    // The OCI layout of the same layers and config is the same image.
    let layout = ctl.work.join("layout");
    img.write_oci_layout(&layout).unwrap();
    let id3 = ctl.import(&layout, "dedup-oci");
    assert_eq!(id1, id3, "OCI layout with the same config and layers");

    let images = ctl.json(&["images"]);
    assert_eq!(
        images.as_array().unwrap().len(),
        1,
        "one image, several names: {images}"
    );
    let mut names: Vec<String> = images[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["dedup", "dedup-again", "dedup-oci"]);
    assert_eq!(images[0]["layers"], 3);
    assert_eq!(images[0]["top_layer"], img.chain_ids()[2].as_str());

    let all = ctl.json(&["layers"]);
    assert_eq!(
        all.as_array().unwrap().len(),
        3,
        "each layer stored once: {all}"
    );
    let vfs_dirs = std::fs::read_dir(ctl.root.join("vfs/dir")).unwrap().count();
    assert_eq!(vfs_dirs, 3, "three layer dirs on disk");

    // Chain bottom -> top with parents; ids as computed in-test.
    let chain = ctl.json(&["layers", "dedup"]);
    let diff_ids = img.diff_ids();
    let chain_ids = img.chain_ids();
    for (i, l) in chain.as_array().unwrap().iter().enumerate() {
        // DiffID = sha256 of the uncompressed tar, computed here from the bytes.
        assert_eq!(l["diff_id"], sha256_digest(&img.layers[i].tar()).as_str());
        assert_eq!(l["diff_id"], diff_ids[i].as_str());
        assert_eq!(l["chain_id"], chain_ids[i].as_str());
        let parent = if i == 0 {
            serde_json::Value::Null
        } else {
            chain_ids[i - 1].as_str().into()
        };
        assert_eq!(l["parent"], parent, "layer {i} parent");
        let cache = l["cache_id"].as_str().unwrap();
        assert!(
            cache.len() == 64 && cache.bytes().all(|b| b.is_ascii_hexdigit()),
            "cache_id {cache}"
        );
        assert!(l["size"].as_u64().is_some());
    }

    // rmi of one of its names takes only that name (Docker); of the last name it
    // removes the image and frees its layers.
    assert_eq!(ctl.ok(&["rmi", "dedup"]), "Untagged: dedup\n");
    assert_eq!(
        ctl.json(&["images"])[0]["names"],
        serde_json::json!(["dedup-again", "dedup-oci"])
    );
    ctl.fails(&["rmi", "dedup"], 3);
    // untag leaves the image; tag gives a name back.
    assert_eq!(ctl.ok(&["untag", "dedup-again"]), "Untagged: dedup-again\n");
    assert_eq!(ctl.ok(&["tag", "dedup-oci", "t:1"]).trim(), id1);
    ctl.ok(&["untag", "t:1"]);
    ctl.fails(&["untag", "t:1"], 3);
    let out = ctl.ok(&["rmi", "dedup-oci"]);
    assert!(
        out.starts_with("Untagged: dedup-oci\nDeleted: sha256:"),
        "{out}"
    );
    assert_eq!(ctl.json(&["images"]), serde_json::json!([]));
    assert_eq!(ctl.json(&["layers"]), serde_json::json!([]));
    ctl.fails(&["rmi", "dedup-oci"], 3);
    ctl.ok(&["check"]);
}

#[test]
fn flat_tar_diff_id_and_shared_base() {
    if !harness::can_run("ids", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let base = Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/os-release", b"ID=e2e\n".to_vec()),
    ]);
    let tar = base.tar();
    let plain = ctl.write_work("flat.tar", &tar);
    let gz = ctl.write_work("flat.tar.gz", &gzip(&tar));
    let zst = ctl.write_work(
        "flat.tar.zst",
        &zstd::encode_all(tar.as_slice(), 3).unwrap(),
    );
    let a = ctl.import(&plain, "flat");
    let b = ctl.import(&gz, "flat-gz");
    let c = ctl.import(&zst, "flat-zst");
    assert_eq!(a, b, "gzip of the same tar is the same image");
    assert_eq!(a, c, "zstd of the same tar is the same image");
    let layers = ctl.json(&["layers"]);
    assert_eq!(layers.as_array().unwrap().len(), 1, "{layers}");
    let diff_id = sha256_digest(&tar);
    assert_eq!(layers[0]["diff_id"], diff_id.as_str());
    assert_eq!(
        layers[0]["chain_id"],
        diff_id.as_str(),
        "ChainID of a base layer is its DiffID"
    );

    // A two-layer image sharing that base stores only its top layer anew.
    let mut img = sample_image("two");
    img.layers = vec![
        base.clone(),
        Layer::new(vec![Entry::file("top", b"t".to_vec())]),
    ];
    let save = ctl.write_work("two.tar", &img.docker_save());
    ctl.import(&save, "two");
    let layers = ctl.json(&["layers"]);
    assert_eq!(
        layers.as_array().unwrap().len(),
        2,
        "base layer shared: {layers}"
    );
    let want = chain_ids(&img.diff_ids());
    let chain = ctl.json(&["layers", "two"]);
    assert_eq!(chain[1]["chain_id"], want[1].as_str());
    assert_eq!(chain[0]["chain_id"], diff_id.as_str());

    // Removing the flat image (under its three names; the first two only untag) must
    // keep the base, which "two" still uses.
    for n in ["flat", "flat-gz", "flat-zst"] {
        ctl.ok(&["rmi", n]);
    }
    assert_eq!(ctl.json(&["images"]).as_array().unwrap().len(), 1);
    assert_eq!(ctl.json(&["layers"]).as_array().unwrap().len(), 2);
    ctl.ok(&["rmi", "two"]);
    assert_eq!(ctl.json(&["layers"]), serde_json::json!([]));
    ctl.ok(&["check"]);
}

#[test]
fn docker_save_with_wrong_diff_id_is_rejected() {
    if !harness::can_run("ids", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let img = sample_image("bad");
    // Tamper with one layer after the config was written.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let save = img.docker_save();
    let mut ar = tar::Archive::new(save.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if p.ends_with("layer.tar") && files.iter().all(|(n, _)| !n.ends_with("layer.tar")) {
            data = Layer::new(vec![Entry::file("tampered", b"x".to_vec())]).tar();
        }
        files.push((p, data));
    }
    let bad = ctl.write_work(
        "tampered.tar",
        &layerctl_tests::fixtures::plain_archive(&files),
    );
    let r = ctl.fails(&["import".as_ref(), bad.as_os_str()], 5);
    assert!(
        r.stderr.to_lowercase().contains("digest") || r.stderr.to_lowercase().contains("diff"),
        "message should say the digest/DiffID does not match: {}",
        r.stderr
    );
    assert_eq!(ctl.json(&["images"]), serde_json::json!([]));
    assert_eq!(
        ctl.json(&["layers"]),
        serde_json::json!([]),
        "no partial layers kept"
    );
    ctl.ok(&["check"]);
}

#[test]
fn oci_blob_digest_mismatch_is_rejected() {
    if !harness::can_run("ids", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let img = sample_image("bad");
    let layout = ctl.work.join("layout");
    img.write_oci_layout(&layout).unwrap();
    // Corrupt the first layer blob in place (same size, different bytes).
    let blob = img.layers[0].blob();
    let p = layout
        .join("blobs/sha256")
        .join(sha256_digest(&blob).trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let r = ctl.fails(&["import".as_ref(), layout.as_os_str()], 5);
    assert!(
        r.stderr.contains("sha256"),
        "message names the digest: {}",
        r.stderr
    );
    assert_eq!(ctl.json(&["layers"]), serde_json::json!([]));
    ctl.ok(&["check"]);
}
