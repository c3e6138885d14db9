//! The end of the stream: a tar ending at an entry boundary without end-of-archive
//! blocks applies (as with GNU tar); a cut inside a header, data or padding is an
//! error; bytes after the end-of-archive marker must be zeros, and the error for junk
//! there says so.

mod common;

use std::fs;

use common::*;
use driver_core::{DriverError, WhiteoutFormat};

/// `a` (6 bytes) and `b` (700 bytes): headers at 0 and 1024, b's data 1536..2236,
/// its padding to 2560, then the end-of-archive blocks.
fn two_files() -> Vec<u8> {
    tar(&[file("a", "hello\n"), file("b", vec![b'x'; 700])])
}

const END_OF_B: usize = 2560;

fn applied(t: &[u8]) -> Sandbox {
    let sb = Sandbox::new();
    sb.apply(t, WhiteoutFormat::Overlay)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    sb.assert_contained();
    sb
}

fn refused(t: &[u8]) -> DriverError {
    let sb = Sandbox::new();
    let e = sb.apply(t, WhiteoutFormat::Overlay).unwrap_err();
    sb.assert_contained();
    e
}

#[test]
fn tar_without_end_of_archive_blocks_applies() {
    let t = two_files();
    assert!(
        t[END_OF_B..].iter().all(|b| *b == 0),
        "layout as documented"
    );
    let sb = applied(&t[..END_OF_B]);
    assert_eq!(fs::read(sb.p("a")).unwrap(), b"hello\n");
    assert_eq!(fs::read(sb.p("b")).unwrap(), vec![b'x'; 700]);
    // One zero block only (a lone marker), and a long zero padding, are fine too.
    applied(&t[..END_OF_B + 512]);
    let padded = [&t[..], &[0u8; 20_000][..]].concat();
    applied(&padded);
    // An empty stream is an empty layer.
    let stats = applied(b"");
    assert!(!stats.p("a").exists());
}

#[test]
fn cuts_inside_an_entry_stay_errors() {
    let t = two_files();
    for (what, cut) in [
        ("inside b's header", 1024 + 100),
        ("right after b's header", 1536),
        ("inside b's data", 1536 + 300),
        ("inside b's padding", 2236 + 10),
        ("b's data without padding", 2236),
    ] {
        let e = refused(&t[..cut]);
        assert!(matches!(e, DriverError::Tar { .. }), "{what}: {e:?}");
        assert!(!e.to_string().contains("marker"), "{what}: {e}");
    }
}

#[test]
fn junk_after_the_marker_is_named_as_such() {
    let t = two_files();
    let mut junk = t.clone();
    junk.extend_from_slice(b"junk");
    let e = refused(&junk);
    let msg = e.to_string();
    assert!(matches!(e, DriverError::Tar { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("non-zero data at byte {}", t.len()))
            && msg.contains(&format!(
                "after the end-of-archive marker at byte {END_OF_B}"
            )),
        "{msg}"
    );
    assert!(
        !msg.contains("missing") && !msg.contains("truncated"),
        "{msg}"
    );

    // Entries hidden behind one zero block (GNU tar stops there, `tar -i` reads on)
    // are refused, not silently dropped.
    let hidden = tar(&[file("hidden", "h")]);
    let lone = [&t[..END_OF_B + 512], &hidden[..]].concat();
    let e = refused(&lone);
    assert!(
        e.to_string().contains(&format!(
            "after the end-of-archive marker at byte {END_OF_B}"
        )),
        "{e}"
    );
}
