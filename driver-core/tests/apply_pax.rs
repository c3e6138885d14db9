//! PAX and GNU long-name headers: records are read by their length prefix, so binary
//! values holding newlines and NULs apply byte-equal and the records after them still
//! count; malformed records are refused naming the entry.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use driver_core::{DriverError, WhiteoutFormat};
use tar::{EntryType, Header};

/// `security.capability` v2, effective, permitted = cap_dac_override (1) + cap_fowner
/// (3) = 0x0a: the blob holds a newline byte.
const CAP_V2_NL: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A `user.*` value with newlines, NULs, a lone `=` and high bytes.
const NL_VALUE: &[u8] = b"line1\nline2\n\0=\x0a\xff\n";

/// A path longer than the 100-byte header name field.
fn long_path() -> String {
    format!("pax/{}/{}", "d".repeat(80), "f".repeat(90))
}

fn get(sb: &Sandbox, p: &str, name: &str) -> Option<Vec<u8>> {
    xattr::get(sb.p(p), name).unwrap()
}

/// Appends a PAX `x` header with exactly `data`, then `e`.
fn raw_pax(b: &mut tar::Builder<Vec<u8>>, data: &[u8], e: &E) {
    let mut h = Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
    append(b, e);
}

/// One PAX record, length prefix computed.
fn record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [key.as_bytes(), b"=", value, b"\n"].concat();
    let mut n = body.len() + 2;
    while format!("{n} ").len() + body.len() != n {
        n += 1;
    }
    [format!("{n} ").into_bytes(), body].concat()
}

#[test]
fn binary_xattr_values_with_newlines_apply_byte_equal() {
    let sb = Sandbox::new();
    let mut f = file("f", "data").xattr("user.nl", NL_VALUE);
    let root = is_root();
    if root {
        f = f.xattr("security.capability", CAP_V2_NL);
    }
    let t = tar(&[
        dir("d").xattr("user.nl", b"\n"),
        f,
        file("after", "x").xattr("user.plain", "v"),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"data");
    assert_eq!(get(&sb, "f", "user.nl").as_deref(), Some(NL_VALUE));
    assert_eq!(get(&sb, "d", "user.nl").as_deref(), Some(&b"\n"[..]));
    if root {
        assert_eq!(
            get(&sb, "f", "security.capability").as_deref(),
            Some(&CAP_V2_NL[..])
        );
    } else {
        eprintln!("security.capability part skipped: needs root");
    }
    // The xattrs belong to their own entry only.
    assert_eq!(get(&sb, "after", "user.nl"), None);
    assert_eq!(get(&sb, "after", "user.plain").as_deref(), Some(&b"v"[..]));
    sb.assert_contained();
}

#[test]
fn records_after_a_newline_value_still_count() {
    let sb = Sandbox::new();
    let long = long_path();
    // Go's writer sorts records, so `SCHILY.xattr.*` comes before `path`, `linkpath`.
    let t = tar(&[
        file("short", "long one")
            .xattr("user.nl", NL_VALUE)
            .pax("path", &long)
            .pax("mtime", "1234567890.5"),
        // Symlinks cannot carry user.* xattrs; any record with a newline will do.
        symlink("s", "ignored")
            .pax("comment", b"a\nb")
            .pax("linkpath", &long),
        file("next", "n"),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(fs::read(sb.p(&long)).unwrap(), b"long one");
    assert!(!exists_nofollow(&sb.p("short")), "header name must lose");
    assert_eq!(get(&sb, &long, "user.nl").as_deref(), Some(NL_VALUE));
    let md = fs::metadata(sb.p(&long)).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 500_000_000));
    assert_eq!(
        fs::read_link(sb.p("s")).unwrap().to_str().unwrap(),
        long.as_str()
    );
    // The path record was for one entry only.
    assert_eq!(fs::read(sb.p("next")).unwrap(), b"n");
    sb.assert_contained();
}

#[test]
fn owner_records_after_a_newline_value_still_count() {
    if !need_root("owner_records_after_a_newline_value_still_count") {
        return;
    }
    let sb = Sandbox::new();
    let t = tar(&[file("f", "x")
        .owner(1, 1)
        .xattr("user.nl", NL_VALUE)
        .pax("uid", "4321")
        .pax("gid", "8765")]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    let md = fs::metadata(sb.p("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4321, 8765));
}

#[test]
fn pax_size_the_reader_cannot_frame_is_refused() {
    // The tar crate reads `size` with its newline-splitting parser: after a value with
    // a newline it frames the data by the header size instead. A disagreement is
    // refused rather than read as two different archives.
    let sb = Sandbox::new();
    let t = tar(&[file("f", "abc")
        .xattr("user.nl", b"a\nb")
        .pax("size", "999")]);
    match sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err() {
        DriverError::Tar {
            entry: Some(e),
            source,
        } => {
            assert_eq!(e, "f");
            assert!(source.to_string().contains("PAX size 999"), "{source}");
        }
        other => panic!("expected Tar error, got {other:?}"),
    }
    assert!(!exists_nofollow(&sb.p("f")));
    // An agreeing size is fine.
    let ok = tar(&[file("g", "abc").xattr("user.nl", b"a\nb").pax("size", "3")]);
    let sb = Sandbox::new();
    sb.apply(&ok, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(fs::read(sb.p("g")).unwrap(), b"abc");
}

#[test]
fn malformed_records_are_tar_errors_naming_the_entry() {
    let good = record("SCHILY.xattr.user.nl", b"a\nb");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length past the data", b"99 path=../../escaped\n".to_vec()),
        ("length not digits", b"x9 path=a\n".to_vec()),
        ("no space after length", b"10path=ab\n".to_vec()),
        (
            "length too short",
            [good.clone(), b"6 path=../../x\n".to_vec()].concat(),
        ),
        ("no newline at the end", b"11 path=abcd".to_vec()),
        ("no equals sign", b"9 pathab\n".to_vec()),
        ("uid not a number", [good, record("uid", b"12ab")].concat()),
    ];
    for (what, data) in cases {
        let sb = Sandbox::new();
        let mut b = tar::Builder::new(Vec::new());
        raw_pax(&mut b, &data, &file("innocent", "x"));
        let t = b.into_inner().unwrap();
        match sb.apply(&t, WhiteoutFormat::Overlay) {
            Err(DriverError::Tar {
                entry: Some(e),
                source,
            }) => {
                assert_eq!(e, "innocent", "{what}");
                let msg = source.to_string();
                assert!(msg.contains("PAX"), "{what}: {msg}");
            }
            other => panic!("{what}: expected Tar error, got {other:?}"),
        }
        assert_eq!(
            fs::read_dir(&sb.root).unwrap().count(),
            0,
            "{what}: nothing may be written"
        );
        sb.assert_contained();
    }
}

#[test]
fn oversized_pax_header_is_refused() {
    let sb = Sandbox::new();
    let huge = record("comment", &vec![b'a'; 2 << 20]);
    let mut b = tar::Builder::new(Vec::new());
    raw_pax(&mut b, &huge, &file("big", "x"));
    let t = b.into_inner().unwrap();
    match sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err() {
        DriverError::Tar { entry, source } => {
            assert_eq!(entry.as_deref(), Some("big"), "{source}");
            assert!(source.to_string().contains("limit"), "{source}");
        }
        other => panic!("expected Tar error, got {other:?}"),
    }
    assert_eq!(fs::read_dir(&sb.root).unwrap().count(), 0);
}

#[test]
fn hand_written_records_and_nul_padding_are_read() {
    // Records written by hand (not by the tar crate's builder), NUL padding after them.
    let sb = Sandbox::new();
    let long = long_path();
    let data = [
        record("SCHILY.xattr.user.nl", NL_VALUE),
        record("path", long.as_bytes()),
        record("atime", b"1000000000"),
        vec![0; 7],
    ]
    .concat();
    let mut b = tar::Builder::new(Vec::new());
    raw_pax(&mut b, &data, &file("short", "content"));
    append(&mut b, &file("plain", "p"));
    let t = b.into_inner().unwrap();
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    // atime first: reading the file may update it.
    assert_eq!(fs::metadata(sb.p(&long)).unwrap().atime(), 1_000_000_000);
    assert_eq!(fs::read(sb.p(&long)).unwrap(), b"content");
    assert_eq!(get(&sb, &long, "user.nl").as_deref(), Some(NL_VALUE));
    assert_eq!(get(&sb, "plain", "user.nl"), None);
    assert!(!exists_nofollow(&sb.p("short")));
}

#[test]
fn gnu_long_names_and_links_with_pax_records() {
    let sb = Sandbox::new();
    let long = long_path();
    let long_target = format!("{}/target", "t".repeat(120));
    let t = tar(&[
        // L and K records plus a PAX header with a newline value on the same entry.
        file(&long, "via L").xattr("user.nl", NL_VALUE),
        symlink(format!("{long}-link"), &long_target).pax("comment", b"\n"),
        hardlink("hl", &long),
        file("after", "a"),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(fs::read(sb.p(&long)).unwrap(), b"via L");
    assert_eq!(get(&sb, &long, "user.nl").as_deref(), Some(NL_VALUE));
    assert_eq!(
        fs::read_link(sb.p(&format!("{long}-link")))
            .unwrap()
            .to_str()
            .unwrap(),
        long_target
    );
    assert_eq!(
        fs::metadata(sb.p("hl")).unwrap().ino(),
        fs::metadata(sb.p(&long)).unwrap().ino()
    );
    assert_eq!(fs::read(sb.p("after")).unwrap(), b"a");
    sb.assert_contained();
}

#[test]
fn gnu_long_name_with_several_trailing_nuls() {
    let sb = Sandbox::new();
    let long = long_path();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_mode(0o644);
    let data = [long.as_bytes(), b"\0\0\0"].concat();
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
    append(&mut b, &file("short", "x"));
    sb.apply(&b.into_inner().unwrap(), WhiteoutFormat::Overlay)
        .unwrap();
    assert_eq!(fs::read(sb.p(&long)).unwrap(), b"x");
}

#[test]
fn dangling_extension_header_at_the_end_is_an_error() {
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, &file("a", "x"));
    let mut h = Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(EntryType::XHeader);
    let data = record("path", b"ghost");
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
    let t = b.into_inner().unwrap();
    match sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err() {
        DriverError::Tar { .. } => {}
        other => panic!("expected Tar error, got {other:?}"),
    }
    assert!(!exists_nofollow(&sb.p("ghost")));
    sb.assert_contained();
}

#[test]
fn pax_header_then_global_header_then_entries() {
    // Global headers are skipped and do not eat the next entry's records.
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut g = Header::new_ustar();
    g.set_path("pax_global_header").unwrap();
    g.set_entry_type(EntryType::XGlobalHeader);
    let gd = record("comment", b"abc\ndef");
    g.set_size(gd.len() as u64);
    g.set_cksum();
    b.append(&g, gd.as_slice()).unwrap();
    raw_pax(
        &mut b,
        &[
            record("SCHILY.xattr.user.nl", b"x\ny"),
            record("path", b"renamed"),
        ]
        .concat(),
        &file("orig", "1"),
    );
    append(&mut b, &file("second", "2"));
    sb.apply(&b.into_inner().unwrap(), WhiteoutFormat::Overlay)
        .unwrap();
    assert_eq!(fs::read(sb.p("renamed")).unwrap(), b"1");
    assert_eq!(
        get(&sb, "renamed", "user.nl").as_deref(),
        Some(&b"x\ny"[..])
    );
    assert_eq!(fs::read(sb.p("second")).unwrap(), b"2");
    assert_eq!(get(&sb, "second", "user.nl"), None);
}

#[test]
fn endless_metadata_before_an_entry_is_refused() {
    // A 17 MiB long-name header: the recorder's bound stops the tar reader before it
    // buffers it all.
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, &file("first", "1"));
    let name = vec![b'a'; 17 << 20];
    let mut h = Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(name.len() as u64);
    h.set_cksum();
    b.append(&h, name.as_slice()).unwrap();
    append(&mut b, &file("last", "x"));
    let t = b.into_inner().unwrap();
    match sb.apply(&t, WhiteoutFormat::Overlay).unwrap_err() {
        DriverError::Tar { source, .. } => {
            let msg = source.to_string();
            assert!(msg.contains("MiB of tar metadata"), "{msg}");
            assert!(msg.contains("after entry \"first\""), "{msg}");
        }
        other => panic!("expected Tar error, got {other:?}"),
    }
    assert_eq!(fs::read(sb.p("first")).unwrap(), b"1");
    assert!(!exists_nofollow(&sb.p("last")));
    sb.assert_contained();
}
