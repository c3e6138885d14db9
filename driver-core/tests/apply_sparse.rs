//! GNU sparse files: tars written by GNU tar itself in every sparse encoding it has
//! (`--format=gnu -S`, `--format=posix --sparse-version=0.0|0.1|1.0 -S`) apply to the
//! exact content and size, with the holes of the source (compared with SEEK_DATA /
//! SEEK_HOLE); malformed maps are refused naming the entry.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{tar, E, *};
use driver_core::{DriverError, WhiteoutFormat};
use nix::unistd::{lseek, Whence};
use tar::EntryType;

/// Real size of the main test file (the example).
const SIZE: u64 = 1_049_000;

/// Writes a file of `size` bytes holding `data` at the given offsets, holes elsewhere.
fn sparse_file(path: &Path, size: u64, data: &[(u64, Vec<u8>)]) {
    let mut f = fs::File::create(path).unwrap();
    for (off, d) in data {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(d).unwrap();
    }
    f.set_len(size).unwrap();
    f.sync_all().unwrap();
}

/// The data extents of a file: (start, end) pairs from SEEK_DATA / SEEK_HOLE.
fn data_map(path: &Path) -> Vec<(i64, i64)> {
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let mut out = Vec::new();
    let mut at = 0i64;
    while at < len {
        let start = match lseek(f.as_fd(), at, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => panic!("SEEK_DATA {}: {e}", path.display()),
        };
        let end = lseek(f.as_fd(), start, Whence::SeekHole).unwrap();
        out.push((start, end));
        at = end;
    }
    out
}

/// The source tree: a file like the issue's, one with 200 data regions (GNU extension
/// headers, a 1.0 map longer than one block) ending in a hole, one with no data at all.
fn make_sources(dir: &Path) {
    sparse_file(
        &dir.join("sparse"),
        SIZE,
        &[
            (5_000, b"head".to_vec()),
            (300_000, vec![b'A'; 5_000]),
            (700_000, b"middle".to_vec()),
            (SIZE - 10, b"tail".to_vec()),
        ],
    );
    let many: Vec<(u64, Vec<u8>)> = (0..200u64)
        .map(|i| (i * 12_288 + 100, format!("region {i}").into_bytes()))
        .collect();
    fs::create_dir(dir.join("d")).unwrap();
    sparse_file(&dir.join("d/many"), 3_000_000, &many);
    sparse_file(&dir.join("holes-only"), 1 << 20, &[]);
}

const FILES: [&str; 3] = ["sparse", "d/many", "holes-only"];

/// Runs GNU tar in `src` with `args` and returns the archive.
fn gnu_tar(src: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(args)
        .args(["-S", "-cf", "-", "-C"])
        .arg(src)
        .args(["sparse", "d", "holes-only"])
        .output()
        .expect("running GNU tar");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn gnu_tar_sparse_formats_apply_with_holes() {
    let src = tempfile::tempdir().unwrap();
    make_sources(src.path());
    for (what, args, marker) in [
        ("gnu S", &["--format=gnu"][..], None),
        (
            "pax 0.0",
            &["--format=posix", "--sparse-version=0.0"][..],
            Some(&b"GNU.sparse.offset="[..]),
        ),
        (
            "pax 0.1",
            &["--format=posix", "--sparse-version=0.1"][..],
            Some(&b"GNU.sparse.map="[..]),
        ),
        (
            "pax 1.0",
            &["--format=posix", "--sparse-version=1.0"][..],
            Some(&b"GNU.sparse.major=1"[..]),
        ),
    ] {
        let t = gnu_tar(src.path(), args);
        // Real sizes add up to 5 MB; the data regions (4 KiB blocks) to under 1 MB.
        assert!(
            t.len() < 1_500_000,
            "{what}: tar wrote sparse entries ({} bytes)",
            t.len()
        );
        if let Some(m) = marker {
            assert!(
                contains(&t, m),
                "{what}: the tar uses the encoding under test"
            );
        }
        if what.ends_with("0.1") || what.ends_with("1.0") {
            assert!(
                contains(&t, b"GNUSparseFile."),
                "{what}: member names mangled"
            );
        }
        let sb = Sandbox::new();
        let stats = sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
        sb.assert_contained();
        let mut names: Vec<String> = fs::read_dir(&sb.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["d", "holes-only", "sparse"],
            "{what}: real names only"
        );
        let mut total = 0;
        for f in FILES {
            let (s, d) = (src.path().join(f), sb.p(f));
            let (sm, dm) = (fs::metadata(&s).unwrap(), fs::metadata(&d).unwrap());
            assert_eq!(dm.len(), sm.len(), "{what} {f}: size");
            assert!(
                fs::read(&d).unwrap() == fs::read(&s).unwrap(),
                "{what} {f}: content"
            );
            assert_eq!(
                data_map(&d),
                data_map(&s),
                "{what} {f}: holes where the source has them"
            );
            assert!(
                dm.blocks() <= sm.blocks() + 8,
                "{what} {f}: {} blocks allocated, source {}",
                dm.blocks(),
                sm.blocks()
            );
            assert_eq!(dm.mtime(), sm.mtime(), "{what} {f}: mtime");
            assert_eq!(dm.mode() & 0o7777, sm.mode() & 0o7777, "{what} {f}: mode");
            total += sm.len();
        }
        assert_eq!(fs::metadata(sb.p("sparse")).unwrap().len(), SIZE);
        assert!(
            fs::metadata(sb.p("sparse")).unwrap().blocks() * 512 < 64 << 10,
            "{what}: the 1 MB file is mostly holes"
        );
        assert_eq!(
            stats.content_bytes, total,
            "{what}: content bytes are real sizes"
        );
    }
}

/// A one-entry tar: PAX records `pax`, header name `name`, data `data`.
fn pax_sparse(name: &str, pax: &[(&str, &str)], data: Vec<u8>) -> Vec<u8> {
    let mut e = E::new(name, EntryType::Regular).data(data);
    for (k, v) in pax {
        e = e.pax(k, v);
    }
    tar(&[e, file("after", "ok")])
}

/// `text` padded with NULs to a whole block.
fn map_block(text: &str) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

#[test]
fn hand_built_pax_sparse_entries_apply() {
    let data_a = vec![b'a'; 1024];
    let data_b = b"bb".to_vec();
    let both = [data_a.clone(), data_b.clone()].concat();
    let cases = [
        (
            "0.1",
            pax_sparse(
                "x/GNUSparseFile.7/f",
                &[
                    ("GNU.sparse.size", "10000"),
                    ("GNU.sparse.numblocks", "2"),
                    ("GNU.sparse.name", "dir/f"),
                    ("GNU.sparse.map", "4096,1024,9000,2"),
                ],
                both.clone(),
            ),
        ),
        (
            "0.0",
            pax_sparse(
                "dir/f",
                &[
                    ("GNU.sparse.size", "10000"),
                    ("GNU.sparse.numblocks", "2"),
                    ("GNU.sparse.offset", "4096"),
                    ("GNU.sparse.numbytes", "1024"),
                    ("GNU.sparse.offset", "9000"),
                    ("GNU.sparse.numbytes", "2"),
                ],
                both.clone(),
            ),
        ),
        (
            "1.0",
            pax_sparse(
                "./GNUSparseFile.7/f",
                &[
                    ("GNU.sparse.major", "1"),
                    ("GNU.sparse.minor", "0"),
                    ("GNU.sparse.name", "dir/f"),
                    ("GNU.sparse.realsize", "10000"),
                ],
                [map_block("2\n4096\n1024\n9000\n2\n"), both.clone()].concat(),
            ),
        ),
    ];
    let mut want = vec![0u8; 10_000];
    want[4096..5120].copy_from_slice(&data_a);
    want[9000..9002].copy_from_slice(&data_b);
    for (what, t) in cases {
        let sb = Sandbox::new();
        sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
        assert!(fs::read(sb.p("dir/f")).unwrap() == want, "{what}: content");
        assert_eq!(
            fs::read(sb.p("after")).unwrap(),
            b"ok",
            "{what}: stream in step"
        );
        assert!(
            !sb.p("x").exists() && !sb.p("GNUSparseFile.7").exists(),
            "{what}"
        );
        let map = data_map(&sb.p("dir/f"));
        assert_eq!(
            map,
            [(4096, 10_000)],
            "{what}: leading hole, data from 4096"
        );
        let blocks = fs::metadata(sb.p("dir/f")).unwrap().blocks();
        assert!(blocks <= 16, "{what}: {blocks} blocks for 8 KiB of data");
    }
}

#[test]
fn malformed_sparse_maps_are_refused_naming_the_entry() {
    let v01 = |map: &str, size: &str, data: usize| {
        pax_sparse(
            "GNUSparseFile.1/f",
            &[
                ("GNU.sparse.size", size),
                ("GNU.sparse.name", "f"),
                ("GNU.sparse.map", map),
            ],
            vec![7u8; data],
        )
    };
    let v10 = |map: &str, data: Vec<u8>| {
        pax_sparse(
            "GNUSparseFile.1/f",
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "f"),
                ("GNU.sparse.realsize", "8192"),
            ],
            [map_block(map), data].concat(),
        )
    };
    let cases = [
        (
            "out of order",
            v01("4096,512,0,512", "8192", 1024),
            "out of order",
        ),
        (
            "overlapping",
            v01("0,1024,512,512", "8192", 1536),
            "overlaps",
        ),
        (
            "past realsize",
            v01("0,512,8000,512", "8192", 1024),
            "runs past the real size",
        ),
        (
            "larger than the data",
            v01("0,1024", "8192", 512),
            "lists 1024 bytes of data",
        ),
        (
            "smaller than the data",
            v01("0,512", "8192", 1024),
            "the entry holds 1024",
        ),
        ("odd map", v01("0,512,7", "8192", 512), "odd count"),
        (
            "not numbers",
            v01("0,5x2", "8192", 512),
            "not two decimal numbers",
        ),
        (
            "unaligned middle region",
            v01("0,100,512,512", "8192", 612),
            "multiple of 512",
        ),
        (
            "1.0 map past the data",
            v10("1\n0\n512\n", vec![]),
            "lists 512 bytes of data",
        ),
        (
            "1.0 map cut short",
            pax_sparse(
                "GNUSparseFile.1/f",
                &[
                    ("GNU.sparse.major", "1"),
                    ("GNU.sparse.minor", "0"),
                    ("GNU.sparse.name", "f"),
                    ("GNU.sparse.realsize", "8192"),
                ],
                b"3\n0\n512\n".to_vec(),
            ),
            "map cut short",
        ),
        (
            "1.0 map padded early",
            v10("3\n0\n512\n", vec![]),
            "not decimal lines",
        ),
        (
            "1.0 map not decimal",
            v10("1\n0\nzz\n", vec![0; 512]),
            "not decimal lines",
        ),
        (
            "1.0 past realsize",
            v10("1\n8000\n512\n", vec![0; 512]),
            "runs past",
        ),
        (
            "0.0 numbytes first",
            pax_sparse(
                "f",
                &[("GNU.sparse.size", "8192"), ("GNU.sparse.numbytes", "512")],
                vec![0; 512],
            ),
            "without a GNU.sparse.offset",
        ),
        (
            "unknown version",
            pax_sparse(
                "GNUSparseFile.1/f",
                &[
                    ("GNU.sparse.major", "2"),
                    ("GNU.sparse.minor", "0"),
                    ("GNU.sparse.name", "f"),
                    ("GNU.sparse.realsize", "8192"),
                ],
                vec![0; 512],
            ),
            "unsupported GNU sparse version 2.0",
        ),
        (
            "no real size",
            pax_sparse(
                "GNUSparseFile.1/f",
                &[("GNU.sparse.name", "f"), ("GNU.sparse.map", "0,512")],
                vec![0; 512],
            ),
            "without a real size",
        ),
        (
            "numblocks disagree",
            pax_sparse(
                "f",
                &[
                    ("GNU.sparse.size", "8192"),
                    ("GNU.sparse.numblocks", "3"),
                    ("GNU.sparse.map", "0,512"),
                ],
                vec![0; 512],
            ),
            "numblocks is 3",
        ),
    ];
    for (what, t, why) in cases {
        let sb = Sandbox::new();
        let err = sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err();
        sb.assert_contained();
        match &err {
            DriverError::Tar { entry: Some(e), .. } => assert_eq!(e, "f", "{what}: {err}"),
            other => panic!("{what}: expected a Tar error naming f, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(why), "{what}: {msg}");
        assert!(!sb.p("f").exists(), "{what}: nothing written for a bad map");
        assert!(!sb.p("after").exists(), "{what}: apply stopped");
    }
}

#[test]
fn sparse_records_on_a_directory_are_refused() {
    let t = tar(&[dir("d").pax("GNU.sparse.size", "10")]);
    let sb = Sandbox::new();
    let err = sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err();
    assert!(
        err.to_string().contains("only regular files can be sparse"),
        "{err}"
    );
}

#[test]
fn sparse_name_is_cleaned_like_any_name() {
    let t = pax_sparse(
        "GNUSparseFile.1/f",
        &[
            ("GNU.sparse.size", "512"),
            ("GNU.sparse.name", "../../escape"),
            ("GNU.sparse.map", "0,512"),
        ],
        vec![1; 512],
    );
    let sb = Sandbox::new();
    let err = sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err();
    assert_unsafe(&err, "../../escape");
    sb.assert_contained();
}
