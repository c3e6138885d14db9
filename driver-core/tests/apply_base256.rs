//! GNU base-256 numeric fields are two's complement: a negative mtime is a date before
//! 1970 on disk; a negative uid, gid or size is an error naming the entry, before any
//! of the stream after it is read as data.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use driver_core::{DriverError, WhiteoutFormat};
use tar::{EntryType, Header};

/// 1960-01-01T00:00:00Z.
const T1960: i64 = -315_619_200;

/// GNU base-256 of `v` in a field of `len` bytes (first byte 0x80 or 0xff).
fn b256(v: i64, len: usize) -> Vec<u8> {
    let mut out = vec![if v < 0 { 0xff } else { 0 }; len];
    out[len - 8..].copy_from_slice(&v.to_be_bytes());
    out[0] |= 0x80;
    out
}

#[derive(Clone, Copy)]
enum Field {
    Mtime,
    Uid,
    Gid,
    Size,
}

/// A GNU header for `name` with `data`, one field overwritten with raw bytes.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    ty: EntryType,
    data: &[u8],
    set: Option<(Field, Vec<u8>)>,
) {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    if ty == EntryType::Symlink {
        h.set_link_name("target").unwrap();
    }
    h.set_entry_type(ty);
    h.set_mode(if ty == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    if let Some((f, raw)) = set {
        let o = h.as_old_mut();
        match f {
            Field::Mtime => o.mtime.copy_from_slice(&raw),
            Field::Uid => o.uid.copy_from_slice(&raw),
            Field::Gid => o.gid.copy_from_slice(&raw),
            Field::Size => o.size.copy_from_slice(&raw),
        }
    }
    h.set_cksum();
    // Append the header and data by hand: the builder would trust the size field.
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(data);
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    b.get_mut().extend_from_slice(&bytes);
}

fn finish(b: tar::Builder<Vec<u8>>) -> Vec<u8> {
    b.into_inner().unwrap()
}

#[test]
fn negative_base256_mtime_is_before_1970() {
    let mut b = tar::Builder::new(Vec::new());
    let old = Some((Field::Mtime, b256(T1960, 12)));
    raw_entry(&mut b, "d/", EntryType::Directory, b"", old.clone());
    raw_entry(&mut b, "d/f", EntryType::Regular, b"sixties", old.clone());
    raw_entry(&mut b, "d/l", EntryType::Symlink, b"", old);
    // Positive base-256 reads as itself.
    raw_entry(
        &mut b,
        "new",
        EntryType::Regular,
        b"x",
        Some((Field::Mtime, b256(1_700_000_000, 12))),
    );
    let t = finish(b);
    let sb = Sandbox::new();
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    for p in ["d", "d/f", "d/l"] {
        let md = fs::symlink_metadata(sb.p(p)).unwrap();
        assert_eq!(md.mtime(), T1960, "{p}: mtime is 1960-01-01");
    }
    assert_eq!(fs::read(sb.p("d/f")).unwrap(), b"sixties");
    assert_eq!(fs::metadata(sb.p("new")).unwrap().mtime(), 1_700_000_000);
}

#[test]
fn negative_base256_ids_and_sizes_are_errors_naming_the_entry() {
    for (what, field, raw, why) in [
        ("uid", Field::Uid, b256(-2, 8), "negative uid -2"),
        ("gid", Field::Gid, b256(-1, 8), "negative gid -1"),
        (
            "size -512",
            Field::Size,
            b256(-512, 12),
            "negative size -512",
        ),
        ("size -1", Field::Size, b256(-1, 12), "negative size -1"),
        (
            "size past 64 bits",
            Field::Size,
            [&[0x80u8, 0, 0, 1][..], &[0; 8]].concat(),
            "does not fit in 64 bits",
        ),
    ] {
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, "first", EntryType::Regular, b"1", None);
        // The bad entry's "data" is a whole valid entry: a reader that takes the size
        // as unsigned would swallow or misframe it.
        let mut inner = tar::Builder::new(Vec::new());
        raw_entry(&mut inner, "hidden", EntryType::Regular, b"h", None);
        let hidden = inner.into_inner().unwrap();
        raw_entry(
            &mut b,
            "bad",
            EntryType::Regular,
            &hidden[..1024],
            Some((field, raw)),
        );
        raw_entry(&mut b, "last", EntryType::Regular, b"3", None);
        let t = finish(b);
        let sb = Sandbox::new();
        let err = sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err();
        sb.assert_contained();
        match &err {
            DriverError::Tar { entry: Some(e), .. } => assert_eq!(e, "bad", "{what}: {err}"),
            other => panic!("{what}: expected a Tar error naming bad, got {other:?}"),
        }
        assert!(err.to_string().contains(why), "{what}: {err}");
        assert_eq!(fs::read(sb.p("first")).unwrap(), b"1", "{what}");
        for p in ["bad", "hidden", "last"] {
            assert!(!exists_nofollow(&sb.p(p)), "{what}: {p} not applied");
        }
    }
}

#[test]
fn base256_owners_apply() {
    if !need_root("base256_owners_apply") {
        return;
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_path("big-ids").unwrap();
    h.set_mode(0o640);
    h.set_size(0);
    h.set_mtime(1_600_000_000);
    h.as_old_mut().uid.copy_from_slice(&b256(3_000_000, 8));
    h.as_old_mut().gid.copy_from_slice(&b256(4_000_000, 8));
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    let t = finish(b);
    let sb = Sandbox::new();
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    let md = fs::metadata(sb.p("big-ids")).unwrap();
    assert_eq!((md.uid(), md.gid()), (3_000_000, 4_000_000));
}

#[test]
fn gnu_tar_pre_1970_files_keep_their_time() {
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("old");
    fs::write(&f, b"1960").unwrap();
    let ok = std::process::Command::new("touch")
        .args(["-h", "-d", "1960-01-01T00:00:00Z"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(fs::metadata(&f).unwrap().mtime(), T1960);
    for format in ["--format=gnu", "--format=posix", "--format=oldgnu"] {
        let out = std::process::Command::new("tar")
            .args([format, "-cf", "-", "-C"])
            .arg(src.path())
            .arg("old")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sb = Sandbox::new();
        sb.apply(&out.stdout, WhiteoutFormat::Overlay)
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(fs::read(sb.p("old")).unwrap(), b"1960");
        assert_eq!(
            fs::metadata(sb.p("old")).unwrap().mtime(),
            T1960,
            "{format}"
        );
    }
}
