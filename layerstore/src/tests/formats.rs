//! Layer stream formats at the store level: tars without end-of-archive blocks (DiffID
//! = sha256 of the bytes as given), junk after the marker, zstd streams starting with
//! skippable frames, multi-member gzip, and unknown compressions.

use super::*;

/// A tar cut right after its last entry (no end-of-archive blocks).
fn without_marker(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = tar_of(files);
    let end = t.len() - 1024;
    assert!(t[end..].iter().all(|b| *b == 0));
    // The builder ends with exactly two zero blocks after the last padded entry.
    t.truncate(end);
    assert!(
        t[end - 512..].iter().any(|b| *b != 0),
        "last block is entry data"
    );
    t
}

/// A zstd skippable frame (magic 0x184D2A50 + `nibble`, little-endian) around `payload`.
fn skippable(nibble: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x50 | nibble, 0x2a, 0x4d, 0x18];
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn layers_without_end_of_archive_blocks_import_with_their_own_digest() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let l = [
        without_marker(&[("etc/a", b"1"), ("etc/b", b"two")]),
        without_marker(&[("usr/c", b"3")]),
    ];
    let diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();

    // docker-save, the layer tars stored as they are.
    let f = write(t.path(), "save.tar", &docker_save(&l, &diffs, &["cut:1"]));
    let rep = s
        .import(ImportSource::Path(&f), &ImportOptions::default())
        .unwrap();
    assert_eq!(rep.format, Format::DockerSave);
    let img = s.image(&rep.images[0]).unwrap();
    assert_eq!(
        img.diff_ids.iter().map(DiffId::as_str).collect::<Vec<_>>(),
        diffs,
        "DiffIDs are the sha256 of the tars as given"
    );
    let chain = s.layer_chain(img.top_layer().unwrap()).unwrap();
    let bottom = s.driver().layer_dir(&chain[0].cache_id).unwrap();
    assert_eq!(fs::read(bottom.join("etc/b")).unwrap(), b"two");
    let top = s.driver().layer_dir(&chain[1].cache_id).unwrap();
    assert_eq!(fs::read(top.join("usr/c")).unwrap(), b"3");

    // OCI layout with compressed blobs: the DiffID is of the uncompressed bytes.
    let t2 = tempfile::tempdir().unwrap();
    let s2 = open(&t2.path().join("root"));
    let layout = t2.path().join("layout");
    oci_layout(&layout, &[gzip(&l[0]), zstd_of(&l[1])], &diffs, "v1");
    let rep = s2
        .import(ImportSource::Path(&layout), &ImportOptions::default())
        .unwrap();
    let img = s2.image(&rep.images[0]).unwrap();
    assert_eq!(
        img.diff_ids.iter().map(DiffId::as_str).collect::<Vec<_>>(),
        diffs
    );
    assert!(s2.check().unwrap().is_clean());
}

#[test]
fn junk_after_the_end_of_archive_marker_is_named() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let mut tar = tar_of(&[("a", b"1")]);
    tar.extend_from_slice(b"trailing junk");
    let f = write(t.path(), "junk.tar", &tar);
    let e = import_file(&s, &f, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let msg = format!("{e:#}");
    let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("after the end-of-archive marker"),
        "names the junk: {chain}"
    );
    assert!(
        !chain.contains("no end-of-archive marker") && !msg.contains("missing"),
        "{chain}"
    );
    assert!(s.layers().unwrap().is_empty());
    assert_eq!(driver_layer_count(&root), 0);
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn zstd_with_skippable_frames_and_multi_member_gzip_import() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let tar = tar_of(&[("big", &big), ("etc/x", b"x")]);
    let half = tar.len() / 2;
    // pzstd shape: a skippable frame before each zstd frame; seekable zstd ends with one.
    let zst = [
        skippable(0xa, &[0, 0, 1, 0]),
        zstd_of(&tar[..half]),
        skippable(0xa, &[0, 0, 1, 0]),
        zstd_of(&tar[half..]),
        skippable(0xe, &[7; 40]),
    ]
    .concat();
    assert_eq!(&zst[..4], &[0x5a, 0x2a, 0x4d, 0x18]);
    let gz = [gzip(&tar[..half]), gzip(&tar[half..])].concat();
    for (name, data) in [("skippable.tar.zst", zst.clone()), ("multi.tar.gz", gz)] {
        let f = write(t.path(), name, &data);
        let id = import_file(&s, &f, None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let img = s.image(&id).unwrap();
        assert_eq!(img.diff_ids[0].hex(), sha_hex(&tar), "{name}: DiffID");
        let layer = s.layer(&img.chain[0]).unwrap();
        let dir = s.driver().layer_dir(&layer.cache_id).unwrap();
        assert!(fs::read(dir.join("big")).unwrap() == big, "{name}: content");
    }
    // The same zstd blob inside an OCI layout (the per-layer decoder path).
    let t2 = tempfile::tempdir().unwrap();
    let s2 = open(&t2.path().join("root"));
    let layout = t2.path().join("layout");
    let diffs = [format!("sha256:{}", sha_hex(&tar))];
    oci_layout(&layout, &[zst], &diffs, "z");
    s2.import(ImportSource::Path(&layout), &ImportOptions::default())
        .unwrap();
}

#[test]
fn unknown_compression_names_the_formats_tried() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let xz = b"\xfd7zXZ\0\0\x04\xe6\xd6\xb4\x46\x02\x00\x21\x01".repeat(64);
    // As a whole file and as a layer blob in an OCI layout.
    let f = write(t.path(), "layer.tar.xz", &xz);
    let layout = t.path().join("layout");
    oci_layout(
        &layout,
        std::slice::from_ref(&xz),
        &[format!("sha256:{}", "0".repeat(64))],
        "x",
    );
    for src in [f, layout] {
        let e = s
            .import(ImportSource::Path(&src), &ImportOptions::default())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        for want in [
            "unknown format",
            "plain tar",
            "gzip",
            "zstd",
            "fd 37 7a 58 5a",
        ] {
            assert!(
                chain.contains(want),
                "{}: {want:?} in {chain}",
                src.display()
            );
        }
    }
    assert!(s.layers().unwrap().is_empty());
}

/// A layer blob longer than its descriptor's size (here 8 MiB of zeros appended, which a
/// plain tar would even accept as padding) is refused at the first byte past the size:
/// the import reads no more than size + 1 bytes of it, where it used to read the whole
/// file before the size check. Nothing is stored.
#[test]
fn a_blob_longer_than_its_descriptor_is_refused_without_reading_it() {
    let t = tempfile::tempdir().unwrap();
    let s = open(&t.path().join("root"));
    let layer = tar_of(&[("etc/os", b"long")]);
    let diffs = vec![format!("sha256:{}", sha_hex(&layer))];
    let dir = t.path().join("layout");
    oci_layout(&dir, std::slice::from_ref(&layer), &diffs, "v1");
    let blob = dir.join("blobs/sha256").join(sha_hex(&layer));
    let mut data = fs::read(&blob).unwrap();
    data.extend(std::iter::repeat_n(0u8, 8 << 20));
    fs::write(&blob, &data).unwrap();
    let seen = std::cell::Cell::new(0u64);
    let progress = |n: u64| seen.set(seen.get().max(n));
    let e = s
        .import(
            ImportSource::Path(&dir),
            &ImportOptions {
                progress: Some(&progress),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string().contains(&format!(
            "blob is longer than the {} bytes its descriptor gives",
            layer.len()
        )),
        "{e}"
    );
    assert!(
        seen.get() <= layer.len() as u64 + 1,
        "read {} bytes of a {}-byte blob",
        seen.get(),
        layer.len()
    );
    assert!(s.layers().unwrap().is_empty());
    assert!(s.check().unwrap().is_clean());
}
