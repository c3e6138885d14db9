//! Store tests on the vfs driver in temp dirs: imports of every format, ids, dedupe,
//! rollback of failed imports, containers, removal rules, check and repair.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use driver_core::{CreateOpts, LayerId};
use driver_vfs::VfsDriver;
use sha2::{Digest as _, Sha256};

use crate::check::Problem;
use crate::error::{ErrorKind, StoreError};
use crate::ids::{ChainId, DiffId, ImageId};
use crate::import::{Format, ImportOptions, ImportSource};
use crate::store::{LayerStore, LockMode};

fn open(root: &Path) -> LayerStore {
    let driver = VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap();
    LayerStore::open(root, Box::new(driver), LockMode::Exclusive).unwrap()
}

/// A tar of regular files (parents as directories), plus `.wh.` names as given.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (p, _) in files {
        let mut acc = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for d in &parts[..parts.len() - 1] {
            acc.push_str(d);
            acc.push('/');
            if dirs.insert(acc.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1_600_000_000);
                h.set_size(0);
                b.append_data(&mut h, &acc, std::io::empty()).unwrap();
            }
        }
    }
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd_of(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).unwrap()
}

fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A docker-save archive of one image with `layers` (legacy `<n>/layer.tar` names).
fn docker_save(layers: &[Vec<u8>], diff_ids: &[String], tags: &[&str]) -> Vec<u8> {
    let config = config_json(diff_ids);
    let cfg_name = format!("{}.json", sha_hex(&config));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_name, "RepoTags": tags, "Layers": names,
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&cfg_name, &config);
    for (n, l) in names.iter().zip(layers) {
        add(n, l);
    }
    add("manifest.json", &manifest);
    add("repositories", b"{}");
    b.into_inner().unwrap()
}

/// Writes an OCI layout into `dir` with the given (already compressed) layer blobs.
fn oci_layout(dir: &Path, blobs: &[Vec<u8>], diff_ids: &[String], ref_name: &str) {
    let bdir = dir.join("blobs/sha256");
    fs::create_dir_all(&bdir).unwrap();
    let put = |data: &[u8]| {
        let h = sha_hex(data);
        fs::write(bdir.join(&h), data).unwrap();
        (format!("sha256:{h}"), data.len())
    };
    let config = config_json(diff_ids);
    let (cd, cs) = put(&config);
    let layers: Vec<_> = blobs
        .iter()
        .map(|b| {
            let (d, s) = put(b);
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }))
    .unwrap();
    let (md, ms) = put(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }],
    }))
    .unwrap();
    fs::write(dir.join("index.json"), index).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Tars a directory tree (for OCI archives).
fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

fn import_file(s: &LayerStore, file: &Path, name: Option<&str>) -> crate::Result<ImageId> {
    let opts = ImportOptions {
        name: name.map(str::to_owned),
        progress: None,
        ..Default::default()
    };
    let r = s.import(ImportSource::Path(file), &opts)?;
    Ok(r.images.last().unwrap().clone())
}

fn driver_layer_count(root: &Path) -> usize {
    fs::read_dir(root.join("vfs/dir")).unwrap().count()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, data).unwrap();
    p
}

#[test]
fn flat_import_ids_and_idempotence() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let tar = tar_of(&[("etc/motd", b"hello\n"), ("bin/sh", b"#!")]);
    let f = write(t.path(), "flat.tar", &tar);
    let id = import_file(&s, &f, Some("flat")).unwrap();
    let img = s.image(&id).unwrap();
    assert_eq!(img.names, vec!["flat"]);
    assert_eq!(img.diff_ids.len(), 1);
    assert_eq!(
        img.diff_ids[0].hex(),
        sha_hex(&tar),
        "DiffID = sha256 of the file"
    );
    assert_eq!(
        img.chain[0].as_str(),
        img.diff_ids[0].as_str(),
        "base ChainID = DiffID"
    );
    assert_eq!(ImageId::of_bytes(&s.image_config(&id).unwrap()), id);
    let layer = s.layer(&img.chain[0]).unwrap();
    assert_eq!(layer.size, 8);
    let dir = s.driver().layer_dir(&layer.cache_id).unwrap();
    assert_eq!(fs::read(dir.join("etc/motd")).unwrap(), b"hello\n");
    // Same content again (gzip-compressed this time): same ids, stored once.
    let fz = write(t.path(), "flat.tar.gz", &gzip(&tar));
    let id2 = import_file(&s, &fz, None).unwrap();
    assert_eq!(id2, id);
    assert_eq!(s.layers().unwrap().len(), 1);
    assert_eq!(s.images().unwrap().len(), 1);
    assert_eq!(
        driver_layer_count(&root),
        1,
        "the duplicate copy was removed"
    );
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn stdin_import_is_spooled() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let tar = zstd_of(&tar_of(&[("a", b"1")]));
    let mut r = &tar[..];
    let seen = std::cell::Cell::new(0u64);
    let progress = |n: u64| seen.set(n);
    let rep = s
        .import(
            ImportSource::Reader(&mut r),
            &ImportOptions {
                name: Some("x".into()),
                progress: Some(&progress),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rep.format, Format::FlatTar);
    assert!(seen.get() > 0);
    assert_eq!(s.resolve_image("x").unwrap(), rep.images[0]);
    assert!(s.check().unwrap().is_clean(), "spool file removed");
}

#[test]
fn docker_save_three_layers_chain_ids() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let l: Vec<Vec<u8>> = vec![
        tar_of(&[("etc/a", b"1"), ("etc/b", b"2")]),
        tar_of(&[("etc/a", b"one")]),
        tar_of(&[("usr/c", b"3"), ("etc/.wh.b", b"")]),
    ];
    let diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();
    let f = write(
        t.path(),
        "save.tar",
        &docker_save(&l, &diffs, &["busybox:latest"]),
    );
    let rep = s
        .import(ImportSource::Path(&f), &ImportOptions::default())
        .unwrap();
    assert_eq!(rep.format, Format::DockerSave);
    assert_eq!(rep.new_layers, 3);
    let id = rep.images[0].clone();
    assert_eq!(
        s.resolve_image("busybox").unwrap(),
        id,
        "name:latest matches"
    );
    let img = s.image(&id).unwrap();
    let c0 = diffs[0].clone();
    let c1 = format!(
        "sha256:{}",
        sha_hex(format!("{c0} {}", diffs[1]).as_bytes())
    );
    let c2 = format!(
        "sha256:{}",
        sha_hex(format!("{c1} {}", diffs[2]).as_bytes())
    );
    let got: Vec<&str> = img.chain.iter().map(ChainId::as_str).collect();
    assert_eq!(got, vec![c0.as_str(), c1.as_str(), c2.as_str()]);
    let chain = s.layer_chain(img.top_layer().unwrap()).unwrap();
    assert_eq!(chain[2].parent.as_ref().unwrap().as_str(), c1);
    let top = s.driver().layer_dir(&chain[2].cache_id).unwrap();
    assert_eq!(fs::read(top.join("etc/a")).unwrap(), b"one");
    assert_eq!(fs::read(top.join("usr/c")).unwrap(), b"3");
    assert!(!top.join("etc/b").exists(), "whiteout applied");
    // `docker save | gzip` is recognised too (same image).
    let fz = write(t.path(), "save.tar.gz", &gzip(&fs::read(&f).unwrap()));
    let rep_gz = s
        .import(ImportSource::Path(&fz), &ImportOptions::default())
        .unwrap();
    assert_eq!(rep_gz.format, Format::DockerSave);
    assert_eq!(rep_gz.images, rep.images);
    // Again: everything is skipped without reading blobs.
    let rep2 = s
        .import(ImportSource::Path(&f), &ImportOptions::default())
        .unwrap();
    assert_eq!((rep2.new_layers, rep2.existing_layers), (0, 3));
    assert_eq!(driver_layer_count(&root), 3);
}

#[test]
fn digest_mismatch_is_rejected_and_store_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let l = vec![tar_of(&[("a", b"1")]), tar_of(&[("b", b"2")])];
    let mut diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();
    diffs[1] = format!("sha256:{}", "0".repeat(64));
    let f = write(t.path(), "bad.tar", &docker_save(&l, &diffs, &["bad:1"]));
    let e = import_file(&s, &f, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    assert!(
        e.to_string().contains("l1/layer.tar"),
        "names the blob: {e}"
    );
    assert!(s.layers().unwrap().is_empty(), "layer 0 rolled back");
    assert!(s.images().unwrap().is_empty());
    assert_eq!(driver_layer_count(&root), 0);
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn truncated_compressed_layers_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let tar = tar_of(&[("big", &big), ("small", b"x")]);
    for (name, data) in [("t.tar.gz", gzip(&tar)), ("t.tar.zst", zstd_of(&tar))] {
        let cut = &data[..data.len() / 2];
        let f = write(t.path(), name, cut);
        let e = import_file(&s, &f, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        assert!(s.layers().unwrap().is_empty(), "{name}");
        assert_eq!(driver_layer_count(&root), 0, "{name}");
        let report = s.check().unwrap();
        assert!(report.is_clean(), "{name}: {:?}", report.problems);
    }
    // A tar cut inside an entry's data is refused (one cut at an entry boundary is
    // accepted: see formats.rs).
    let plain = tar_of(&[("a", b"1"), ("b", b"2")]);
    let f = write(t.path(), "cut.tar", &plain[..1024 + 512 + 100]);
    let e = import_file(&s, &f, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(driver_layer_count(&root), 0);
    // Garbage and empty inputs are refused too.
    let e = import_file(&s, &write(t.path(), "junk", b"not a tar at all"), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("unknown format"), "{e}");
    let e = import_file(&s, &write(t.path(), "empty", b""), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = import_file(&s, &t.path().join("missing.tar"), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn oci_layout_and_archive_verify_blobs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let l = [tar_of(&[("etc/os", b"oci")]), tar_of(&[("bin/x", b"zz")])];
    let diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();
    let blobs = vec![gzip(&l[0]), zstd_of(&l[1])];
    let layout = t.path().join("layout");
    oci_layout(&layout, &blobs, &diffs, "v1");
    let rep = s
        .import(ImportSource::Path(&layout), &ImportOptions::default())
        .unwrap();
    assert_eq!(rep.format, Format::OciLayout);
    let img = s.image(&rep.images[0]).unwrap();
    // `v1` is a bare-tag ref.name: a tag, not a name (import/names.rs).
    assert!(img.names.is_empty(), "{:?}", img.names);
    assert_eq!(
        img.diff_ids.iter().map(DiffId::as_str).collect::<Vec<_>>(),
        diffs
    );
    // The same layout as an archive, renamed: same image, name moves.
    let f = write(t.path(), "oci.tar", &tar_dir(&layout));
    let rep2 = s
        .import(
            ImportSource::Path(&f),
            &ImportOptions {
                name: Some("other".into()),
                progress: None,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rep2.format, Format::OciArchive);
    assert_eq!(rep2.images, rep.images);
    assert_eq!(s.image(&rep.images[0]).unwrap().names, vec!["other"]);

    // A corrupted blob (same size) is refused, and nothing new is stored.
    let t2 = tempfile::tempdir().unwrap();
    let s2 = open(&t2.path().join("root"));
    let bad = t2.path().join("layout");
    oci_layout(&bad, &blobs, &diffs, "v1");
    let blob1 = bad.join("blobs/sha256").join(sha_hex(&blobs[1]));
    let mut data = fs::read(&blob1).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&blob1, &data).unwrap();
    let e = s2
        .import(ImportSource::Path(&bad), &ImportOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(s2.layers().unwrap().is_empty());
    assert!(s2.check().unwrap().is_clean());
}

#[test]
fn names_move_to_the_newest_image() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let a = import_file(
        &s,
        &write(t.path(), "a", &tar_of(&[("a", b"1")])),
        Some("n"),
    )
    .unwrap();
    let b = import_file(
        &s,
        &write(t.path(), "b", &tar_of(&[("b", b"2")])),
        Some("n"),
    )
    .unwrap();
    assert!(s.image(&a).unwrap().names.is_empty());
    assert_eq!(s.image(&b).unwrap().names, vec!["n"]);
    assert_eq!(s.resolve_image("n").unwrap(), b);
    assert_eq!(s.resolve_image(&a.hex()[..10]).unwrap(), a);
    assert_eq!(s.resolve_image(a.as_str()).unwrap(), a);
    assert_eq!(
        s.resolve_image("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // rmi of one of several names removes only that name; of the last, the image.
    import_file(
        &s,
        &write(t.path(), "b2", &tar_of(&[("b", b"2")])),
        Some("m"),
    )
    .unwrap();
    let r = s.remove_image("m").unwrap();
    assert_eq!((&r.id, r.deleted, r.layers.len()), (&b, false, 0));
    assert_eq!(r.untagged, vec!["m"]);
    assert_eq!(s.image(&b).unwrap().names, vec!["n"]);
    let r = s.remove_image("n").unwrap();
    assert_eq!((&r.id, r.deleted, r.layers.len()), (&b, true, 1));
    assert_eq!(r.untagged, vec!["n"]);
    assert_eq!(
        s.resolve_image("n").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn container_init_layer_content_is_exact() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let f = write(
        t.path(),
        "img",
        &tar_of(&[("etc/motd", b"m"), ("bin/sh", b"s")]),
    );
    import_file(&s, &f, Some("img")).unwrap();
    let c = s.create_container("web-1", "img").unwrap();
    assert_eq!(c.init_id.as_str(), format!("{}-init", c.mount_id));
    let init = s.driver().layer_dir(&c.init_id).unwrap();
    assert_eq!(
        fs::read_to_string(init.join("etc/hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb-1\n"
    );
    assert_eq!(
        fs::read_to_string(init.join("etc/hostname")).unwrap(),
        "web-1\n"
    );
    let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(fs::read(init.join("etc/resolv.conf")).unwrap(), host_resolv);
    assert_eq!(
        fs::read_link(init.join("etc/mtab")).unwrap(),
        PathBuf::from("/proc/mounts")
    );
    for d in ["dev/pts", "dev/shm", "proc", "sys"] {
        assert!(fs::symlink_metadata(init.join(d)).unwrap().is_dir(), "{d}");
    }
    assert_eq!(fs::metadata(init.join("dev/console")).unwrap().len(), 0);
    assert_eq!(
        fs::read(init.join("etc/motd")).unwrap(),
        b"m",
        "image below"
    );
    // The container's view (vfs: a copy) has both; its diff against init is empty.
    let root = s.mount_container("web-1").unwrap();
    assert_eq!(fs::read(root.join("bin/sh")).unwrap(), b"s");
    assert!(s
        .driver()
        .changes(&c.mount_id, Some(&c.init_id))
        .unwrap()
        .is_empty());
    s.unmount_container("web-1").unwrap();
    // Names are validated; duplicates refused.
    assert_eq!(
        s.create_container("web-1", "img").unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        s.create_container("../x", "img").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        s.create_container("c2", "nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn rm_and_rmi_refusals_and_layer_release() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let base = tar_of(&[("a", b"1")]);
    let l1 = tar_of(&[("b", b"2")]);
    let l2 = tar_of(&[("c", b"3")]);
    let d = |x: &[u8]| format!("sha256:{}", sha_hex(x));
    let fa = write(
        t.path(),
        "a.tar",
        &docker_save(&[base.clone(), l1.clone()], &[d(&base), d(&l1)], &["a:1"]),
    );
    let fb = write(
        t.path(),
        "b.tar",
        &docker_save(&[base.clone(), l2.clone()], &[d(&base), d(&l2)], &["b:1"]),
    );
    let a = import_file(&s, &fa, None).unwrap();
    let b = import_file(&s, &fb, None).unwrap();
    assert_eq!(s.layers().unwrap().len(), 3, "base shared");
    s.create_container("c", "a:1").unwrap();
    s.mount_container("c").unwrap();
    s.mount_container("c").unwrap();
    let e = s.remove_image("a:1").unwrap_err();
    assert!(matches!(e, StoreError::ImageInUse { .. }), "{e}");
    let e = s.remove_container("c", false).unwrap_err();
    assert!(
        matches!(e, StoreError::ContainerMounted { count: 2, .. }),
        "{e}"
    );
    s.remove_container("c", true).unwrap();
    assert!(s.containers().unwrap().is_empty());
    let removed = s.remove_image(a.as_str()).unwrap();
    assert_eq!(removed.layers.len(), 1, "base kept for b");
    assert_eq!(s.layers().unwrap().len(), 2);
    let removed = s.remove_image("b:1").unwrap();
    assert_eq!(removed.id, b);
    assert_eq!(removed.layers.len(), 2);
    assert!(s.layers().unwrap().is_empty());
    assert_eq!(driver_layer_count(&root), 0);
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn check_finds_and_repairs_crash_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let f1 = write(t.path(), "1.tar", &tar_of(&[("a", b"1")]));
    let f2 = write(t.path(), "2.tar", &tar_of(&[("b", b"2")]));
    import_file(&s, &f1, Some("one")).unwrap();
    let two = import_file(&s, &f2, Some("two")).unwrap();
    s.create_container("c", "one").unwrap();
    assert!(s.check().unwrap().is_clean());
    // Crash between apply and publish: an orphan driver layer.
    let orphan = LayerId::random();
    s.driver()
        .create(&orphan, None, &CreateOpts::default())
        .unwrap();
    // Interrupted driver removal: a half-removed layer in the driver's tree.
    let half = root
        .join("vfs/dir")
        .join(format!(".{}-removing", LayerId::random()));
    fs::create_dir_all(half.join("etc")).unwrap();
    // Interrupted metadata write: a leftover in tmp/.
    fs::create_dir(root.join("tmp/meta-deadbeef")).unwrap();
    // Torn metadata: an empty cache-id of image two's layer.
    let top2 = s.image(&two).unwrap().chain[0].clone();
    fs::write(
        root.join("layerdb/sha256")
            .join(top2.hex())
            .join("cache-id"),
        b"",
    )
    .unwrap();
    let report = s.check().unwrap();
    let has = |f: &dyn Fn(&Problem) -> bool| report.problems.iter().any(f);
    assert!(
        has(&|p| matches!(p, Problem::OrphanLayer(id) if *id == orphan)),
        "{:?}",
        report.problems
    );
    assert!(has(&|p| matches!(p, Problem::TmpLeftover(_))));
    assert!(has(
        &|p| matches!(p, Problem::DriverLeftover(x) if *x == half)
    ));
    assert!(has(
        &|p| matches!(p, Problem::CorruptLayer { chain, .. } if *chain == top2)
    ));
    drop(s);
    // Reopening (exclusive) already empties tmp/; repair fixes the rest.
    let s = open(&root);
    let fixed = s.repair().unwrap();
    assert!(fixed.is_clean(), "{:?}", fixed.problems);
    assert!(!fixed.repaired.is_empty());
    assert!(!s.driver().exists(&orphan));
    assert!(!half.exists(), "driver cleanup finished the removal");
    assert!(s.resolve_image("two").is_err(), "broken image removed");
    assert!(s.resolve_image("one").is_ok(), "healthy image kept");
    assert_eq!(s.containers().unwrap().len(), 1, "healthy container kept");
    // The store still works: re-import and create.
    let again = import_file(&s, &f2, Some("two")).unwrap();
    assert_eq!(again, two);
    s.create_container("d", "two").unwrap();
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn container_with_missing_layer_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    import_file(
        &s,
        &write(t.path(), "1.tar", &tar_of(&[("a", b"1")])),
        Some("one"),
    )
    .unwrap();
    let c = s.create_container("c", "one").unwrap();
    s.driver().remove(&c.mount_id).unwrap();
    let r = s.check().unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::ContainerBroken { .. })),
        "{:?}",
        r.problems
    );
    let r = s.repair().unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
    assert!(s.containers().unwrap().is_empty());
    assert!(
        !s.driver().exists(&c.init_id),
        "its init layer became an orphan and went"
    );
}

#[test]
fn driver_mismatch_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    drop(open(&root));
    assert_eq!(
        LayerStore::recorded_driver(&root).unwrap().as_deref(),
        Some("vfs")
    );
    fs::write(root.join("driver"), "overlay2\n").unwrap();
    let driver = VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap();
    let e = LayerStore::open(&root, Box::new(driver), LockMode::Shared).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    // Writers need the exclusive lock.
    fs::write(
        root.join("driver"),
        "vfs
",
    )
    .unwrap();
    let driver = VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap();
    let s = LayerStore::open(&root, Box::new(driver), LockMode::Shared).unwrap();
    let f = write(t.path(), "x.tar", &tar_of(&[("a", b"1")]));
    assert!(matches!(
        import_file(&s, &f, None).unwrap_err(),
        StoreError::NeedsExclusiveLock { op: "import" }
    ));
    assert!(s.images().unwrap().is_empty(), "readers work");
}

/// Unmounts a container on drop, so a failing assertion leaks no mount.
struct MountGuard<'a> {
    store: &'a LayerStore,
    name: &'static str,
    refs: u32,
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        for _ in 0..self.refs {
            if let Err(e) = self.store.unmount_container(self.name) {
                eprintln!("unmount {} in guard: {e}", self.name);
            }
        }
    }
}

/// The whole container life cycle on overlay2, with real mounts (root + overlayfs).
#[test]
fn overlay2_container_life_cycle() {
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = t.path().join("root");
    let home = root.join("overlay2");
    let driver = match driver_overlay2::Overlay2Driver::new(&home, &Default::default()) {
        Ok(d) => d,
        Err(e) => {
            if driver_core::privileged_required() {
                panic!("overlay2 unavailable but LAYERCTL_REQUIRE_PRIVILEGED=1: {e}");
            }
            eprintln!("skipping overlay2 test: {e}");
            return;
        }
    };
    let s = LayerStore::open(&root, Box::new(driver), LockMode::Exclusive).unwrap();
    let l = vec![
        tar_of(&[("etc/a", b"1"), ("etc/gone", b"x")]),
        tar_of(&[("etc/.wh.gone", b""), ("usr/b", b"2")]),
    ];
    let diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();
    let f = write(t.path(), "save.tar", &docker_save(&l, &diffs, &["ov:1"]));
    import_file(&s, &f, None).unwrap();
    let c = s.create_container("ov", "ov:1").unwrap();
    {
        let m = s.mount_container("ov").unwrap();
        let mut guard = MountGuard {
            store: &s,
            name: "ov",
            refs: 1,
        };
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            mi.lines()
                .any(|l| l.contains(m.to_str().unwrap()) && l.contains(" overlay ")),
            "overlay mounted at {}",
            m.display()
        );
        assert_eq!(fs::read(m.join("etc/a")).unwrap(), b"1");
        assert_eq!(fs::read(m.join("usr/b")).unwrap(), b"2");
        assert!(!m.join("etc/gone").exists(), "whiteout hides the file");
        assert_eq!(fs::read_to_string(m.join("etc/hostname")).unwrap(), "ov\n");
        assert_eq!(
            fs::read_link(m.join("etc/mtab")).unwrap(),
            PathBuf::from("/proc/mounts")
        );
        fs::write(m.join("new"), b"n").unwrap();
        let changes = s.driver().changes(&c.mount_id, Some(&c.init_id)).unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].path, PathBuf::from("/new"));
        // A second reference returns the same path; rm refuses while mounted.
        assert_eq!(s.mount_container("ov").unwrap(), m);
        guard.refs = 2;
        assert!(matches!(
            s.remove_container("ov", false).unwrap_err(),
            StoreError::ContainerMounted { count: 2, .. }
        ));
        s.remove_container("ov", true).unwrap();
        guard.refs = 0;
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mi.contains(root.to_str().unwrap()), "nothing left mounted");
    }
    s.remove_image("ov:1").unwrap();
    assert!(s.check().unwrap().is_clean());
    assert!(s.layers().unwrap().is_empty());
}

/// Docker 25+ `docker save`: config and layers named `blobs/sha256/<hex>`, verified by
/// their names.
#[test]
fn docker_save_with_blob_names() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let layer = tar_of(&[("etc/x", b"x")]);
    let lhex = sha_hex(&layer);
    let config = config_json(&[format!("sha256:{lhex}")]);
    let chex = sha_hex(&config);
    let build = |layer_bytes: &[u8]| {
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": format!("blobs/sha256/{chex}"),
            "RepoTags": ["new:1"],
            "Layers": [format!("blobs/sha256/{lhex}")],
        }]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            (format!("blobs/sha256/{chex}"), &config[..]),
            (format!("blobs/sha256/{lhex}"), layer_bytes),
            ("manifest.json".to_owned(), &manifest[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    };
    // A layer blob whose bytes do not match its name is refused.
    let mut evil = tar_of(&[("etc/x", b"y")]);
    evil.truncate(layer.len());
    let f = write(t.path(), "bad.tar", &build(&evil));
    let e = import_file(&s, &f, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("blobs/sha256/"), "{e}");
    assert!(s.layers().unwrap().is_empty());
    let f = write(t.path(), "good.tar", &build(&layer));
    let id = import_file(&s, &f, None).unwrap();
    assert_eq!(id.hex(), chex);
    assert_eq!(s.image(&id).unwrap().names, vec!["new:1"]);
}

/// Concurrent writers serialise on the store lock and leave a consistent store: four
/// threads import (two of them the same content) at once.
#[test]
fn concurrent_imports_serialise() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    drop(open(&root));
    let files: Vec<PathBuf> = (0..4)
        .map(|i| {
            let content = format!("{}", i % 3);
            write(
                t.path(),
                &format!("{i}.tar"),
                &tar_of(&[("f", content.as_bytes())]),
            )
        })
        .collect();
    let handles: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = open(&root);
                import_file(&s, &f, Some(&format!("img{i}"))).unwrap()
            })
        })
        .collect();
    let ids: Vec<ImageId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(ids[0], ids[3], "same content, same image");
    let s = open(&root);
    assert_eq!(s.images().unwrap().len(), 3);
    assert_eq!(s.layers().unwrap().len(), 3);
    assert_eq!(driver_layer_count(&root), 3);
    assert!(s.check().unwrap().is_clean());
}

/// A store on `driver` ("vfs" or "overlay2"); `None` (skip) when overlay2 cannot run
/// here and privileged tests are not required.
fn open_with(root: &Path, driver: &str) -> Option<LayerStore> {
    let d: Box<dyn driver_core::Driver> = match driver {
        "vfs" => Box::new(VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap()),
        _ => {
            match driver_overlay2::Overlay2Driver::new(&root.join("overlay2"), &Default::default())
            {
                Ok(d) => Box::new(d),
                Err(e) if !driver_core::privileged_required() => {
                    eprintln!("SKIP overlay2: {e}");
                    return None;
                }
                Err(e) => panic!("overlay2 unavailable but LAYERCTL_REQUIRE_PRIVILEGED=1: {e}"),
            }
        }
    };
    Some(LayerStore::open(root, d, LockMode::Exclusive).unwrap())
}

/// The init layer's `/dev` when an upper image layer deleted the image's `dev/`: the
/// deleted directory lends no attributes (0755 0:0 from the recipe), on every driver.
#[test]
fn init_layer_ignores_a_directory_the_image_deleted() {
    let root_user = nix::unistd::Uid::effective().is_root();
    let dir_entry = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, id: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_uid(id);
        h.set_gid(id);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    let mut b = tar::Builder::new(Vec::new());
    dir_entry(&mut b, "dev/", 0o700, 1000);
    dir_entry(&mut b, "proc/", 0o555, 0);
    let l0 = b.into_inner().unwrap();
    let l1 = tar_of(&[(".wh.dev", b"")]);
    for driver in ["vfs", "overlay2"] {
        let t = tempfile::tempdir_in("/var/tmp").unwrap();
        let Some(s) = open_with(&t.path().join("root"), driver) else {
            continue;
        };
        let layers = vec![l0.clone(), l1.clone()];
        let diffs: Vec<String> = layers
            .iter()
            .map(|x| format!("sha256:{}", sha_hex(x)))
            .collect();
        let f = write(
            t.path(),
            "save.tar",
            &docker_save(&layers, &diffs, &["img:1"]),
        );
        import_file(&s, &f, None).unwrap();
        s.create_container("c", "img:1").unwrap();
        let m = s.mount_container("c").unwrap();
        let attrs = |rel: &str| {
            use std::os::unix::fs::MetadataExt;
            let md = fs::symlink_metadata(m.join(rel)).unwrap();
            (md.mode() & 0o7777, md.uid(), md.gid())
        };
        let dev = attrs("dev");
        let proc_ = attrs("proc");
        s.unmount_container("c").unwrap();
        s.remove_container("c", true).unwrap();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let owner = if root_user { (0, 0) } else { me };
        assert_eq!(dev, (0o755, owner.0, owner.1), "{driver}: /dev");
        assert_eq!(proc_.0, 0o555, "{driver}: /proc keeps the image's mode");
    }
}

mod commit;
mod formats;
mod oci_errors;
mod platforms;
mod staging;

#[test]
fn tag_and_untag_names() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let a = import_file(
        &s,
        &write(t.path(), "a", &tar_of(&[("a", b"1")])),
        Some("a"),
    )
    .unwrap();
    let b = import_file(
        &s,
        &write(t.path(), "b", &tar_of(&[("b", b"2")])),
        Some("b"),
    )
    .unwrap();
    assert_eq!(s.tag_image("a", "x:1").unwrap(), a);
    assert_eq!(s.tag_image(a.as_str(), "x:1").unwrap(), a, "idempotent");
    assert_eq!(s.image(&a).unwrap().names, vec!["a", "x:1"]);
    // A name moves: tagging b with x:1 takes it from a.
    s.tag_image("b", "x:1").unwrap();
    assert_eq!(s.image(&a).unwrap().names, vec!["a"]);
    assert_eq!(s.image(&b).unwrap().names, vec!["b", "x:1"]);
    assert_eq!(
        s.tag_image("a", "Bad Name").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        s.tag_image("nope", "y").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // untag leaves the image, even without names; ids are not names.
    assert_eq!(s.untag_image("a").unwrap(), (a.clone(), "a".to_owned()));
    assert!(s.image(&a).unwrap().names.is_empty());
    assert_eq!(
        s.untag_image(a.as_str()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(s.untag_image("a").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.images().unwrap().len(), 2);
    assert!(s.check().unwrap().is_clean());
}

/// `foo` and `foo:latest` are one name (Docker's): tagging one image `foo:latest` takes
/// `foo` from another, `foo:latest` finds the image named `foo`, and an image given
/// `foo:latest` while it has `foo` keeps one of them.
#[test]
fn a_name_and_its_latest_tag_are_one_name() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let a = import_file(
        &s,
        &write(t.path(), "a", &tar_of(&[("a", b"1")])),
        Some("foo"),
    )
    .unwrap();
    let b = import_file(
        &s,
        &write(t.path(), "b", &tar_of(&[("b", b"2")])),
        Some("bar:latest"),
    )
    .unwrap();
    assert_eq!(s.resolve_image("foo:latest").unwrap(), a);
    assert_eq!(s.resolve_image("bar").unwrap(), b);
    s.tag_image(b.as_str(), "foo:latest").unwrap();
    assert_eq!(s.image(&a).unwrap().names, Vec::<String>::new());
    assert_eq!(s.image(&b).unwrap().names, vec!["bar:latest", "foo:latest"]);
    assert_eq!(s.resolve_image("foo").unwrap(), b);
    s.tag_image(b.as_str(), "bar").unwrap();
    assert_eq!(s.image(&b).unwrap().names, vec!["bar", "foo:latest"]);
    assert_eq!(
        s.untag_image("foo").unwrap(),
        (b.clone(), "foo:latest".to_owned())
    );
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn disk_usage_unique_shared_and_rw() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let base = tar_of(&[("base", b"12345")]);
    let top_a = tar_of(&[("a", b"aaa")]);
    let top_b = tar_of(&[("b", b"bb")]);
    let d = |x: &[u8]| format!("sha256:{}", sha_hex(x));
    let fa = write(
        t.path(),
        "a.tar",
        &docker_save(
            &[base.clone(), top_a.clone()],
            &[d(&base), d(&top_a)],
            &["a"],
        ),
    );
    let fb = write(
        t.path(),
        "b.tar",
        &docker_save(
            &[base.clone(), top_b.clone()],
            &[d(&base), d(&top_b)],
            &["b"],
        ),
    );
    let a = import_file(&s, &fa, None).unwrap();
    let b = import_file(&s, &fb, None).unwrap();
    s.create_container("c", "a").unwrap();
    let m = s.mount_container("c").unwrap();
    fs::write(m.join("rw"), b"1234567").unwrap();
    let du = s.disk_usage().unwrap();
    assert_eq!((du.layers, du.layers_size), (3, 5 + 3 + 2));
    let ia = du.images.iter().find(|i| i.id == a).unwrap();
    assert_eq!(
        (ia.size, ia.unique_size, ia.shared_size, ia.containers),
        (8, 3, 5, 1)
    );
    let ib = du.images.iter().find(|i| i.id == b).unwrap();
    assert_eq!(
        (ib.size, ib.unique_size, ib.shared_size, ib.containers),
        (7, 2, 5, 0)
    );
    assert_eq!(du.containers.len(), 1);
    assert_eq!((du.containers[0].rw_size, du.rw_size), (7, 7));
    s.unmount_container("c").unwrap();
}

/// gc removes unused layers (an image record lost between layer and image publish),
/// orphan driver layers, and keeps what images and containers need; the store's
/// apparent size returns to what it was; a dry run removes nothing.
#[test]
fn gc_removes_only_what_nothing_needs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let base = tar_of(&[("base", b"12345")]);
    let top = tar_of(&[("top", &[7u8; 10_000])]);
    let d = |x: &[u8]| format!("sha256:{}", sha_hex(x));
    let fa = write(
        t.path(),
        "a.tar",
        &docker_save(std::slice::from_ref(&base), &[d(&base)], &["a"]),
    );
    import_file(&s, &fa, None).unwrap();
    s.create_container("c", "a").unwrap();
    s.remove_image("a").unwrap_err(); // in use
    let size =
        |s: &LayerStore| crate::gc::apparent_size(s.root(), &mut Default::default()).unwrap();
    let clean = size(&s);
    assert_eq!(
        s.gc(false).unwrap().layers,
        Vec::<ChainId>::new(),
        "nothing to collect"
    );
    assert_eq!(size(&s), clean);

    // Garbage: a two-layer image whose image record is lost (as after a crash between
    // publishing its layers and its config), and an orphan driver layer.
    let fb = write(
        t.path(),
        "b.tar",
        &docker_save(&[base.clone(), top.clone()], &[d(&base), d(&top)], &["b"]),
    );
    let b = import_file(&s, &fb, None).unwrap();
    fs::remove_dir_all(root.join("images/sha256").join(b.hex())).unwrap();
    let orphan = LayerId::random();
    s.driver()
        .create(&orphan, None, &CreateOpts::default())
        .unwrap();
    fs::write(
        s.driver().layer_dir(&orphan).unwrap().join("junk"),
        [1u8; 5000],
    )
    .unwrap();
    let top_chain = ChainId::chain(&[
        DiffId::new(&d(&base)).unwrap(),
        DiffId::new(&d(&top)).unwrap(),
    ])[1]
        .clone();

    let dry = s.gc(true).unwrap();
    assert_eq!(
        dry.layers,
        vec![top_chain.clone()],
        "only the top: the base is a's"
    );
    assert_eq!(dry.orphans, vec![orphan.clone()]);
    assert!(dry.bytes >= 15_000, "{dry:?}");
    assert!(
        s.has_layer(&top_chain) && s.driver().exists(&orphan),
        "dry run removes nothing"
    );

    let r = s.gc(false).unwrap();
    assert_eq!(
        (r.layers.clone(), r.orphans.clone()),
        (vec![top_chain.clone()], vec![orphan.clone()])
    );
    assert!(r.bytes >= 15_000, "{r:?}");
    assert!(!s.has_layer(&top_chain) && !s.driver().exists(&orphan));
    assert_eq!(s.layers().unwrap().len(), 1, "a's base stays");
    assert!(s.check().unwrap().is_clean());
    assert_eq!(size(&s), clean, "apparent size back to before");
    s.remove_container("c", false).unwrap();
    s.remove_image("a").unwrap();
    assert_eq!(s.gc(false).unwrap(), crate::gc::GcReport::default());
}

mod tarsplit;
