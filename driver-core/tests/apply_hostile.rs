//! Hostile layer tars: every one is refused with an error naming the entry, or applied
//! safely; nothing ever appears outside the layer root.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use driver_core::{DriverError, WhiteoutFormat};

/// Applies `entries` in a fresh sandbox with every whiteout format, expects
/// UnsafeEntry naming `bad`, and checks containment.
#[track_caller]
fn refused(entries: &[E], bad: &str) {
    for format in [
        WhiteoutFormat::Delete,
        WhiteoutFormat::Overlay,
        WhiteoutFormat::Aufs,
    ] {
        let sb = Sandbox::new();
        let err = sb.apply(&tar(entries), format).unwrap_err();
        assert_unsafe(&err, bad);
        sb.assert_contained();
    }
}

#[test]
fn dotdot_and_absolute_names_are_refused() {
    for bad in [
        "../x",
        "a/../../x",
        "a/..",
        "..",
        "./../x",
        "a/b/../../../x",
    ] {
        refused(&[file("ok", "1"), file(bad, "evil")], bad);
    }
    let long_dotdot = format!("{}/../../{}", "d".repeat(150), "x".repeat(20));
    refused(&[file(&long_dotdot, "evil")], &long_dotdot);
    refused(&[symlink("../up", "x")], "../up");
    refused(&[hardlink("../up", "x")], "../up");
}

/// Absolute names are read as GNU tar reads them: the same path inside the layer
/// (`ko` images name their entries `/ko-app/...`); a hard link's absolute target too.
#[test]
fn absolute_names_land_inside_the_root() {
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[
            file("/abs", "in"),
            file("/etc/passwd", "in"),
            hardlink("/etc/pw2", "/etc/passwd"),
        ]),
        WhiteoutFormat::Delete,
    )
    .unwrap();
    assert_eq!(fs::read(sb.p("abs")).unwrap(), b"in");
    assert_eq!(fs::read(sb.p("etc/passwd")).unwrap(), b"in");
    assert_eq!(
        fs::metadata(sb.p("etc/pw2")).unwrap().ino(),
        fs::metadata(sb.p("etc/passwd")).unwrap().ino()
    );
    sb.assert_contained();
}

#[test]
fn empty_and_overlong_names_are_refused() {
    refused(&[file("", "x")], "");
    let too_long = "a/".repeat(2100) + "x";
    refused(&[file(&too_long, "x")], &too_long);
}

/// A component over NAME_MAX (255 bytes) is refused on every whiteout format, also
/// the whiteout `.wh.<name>` of a 253-byte name (257 bytes), which only vfs and
/// overlay2 could have carried out; a 255-byte name is a name like any other.
#[test]
fn components_longer_than_name_max_are_refused() {
    let long = format!("d/{}", "L".repeat(256));
    refused(&[dir("d"), file(&long, "x")], &long);
    let name = "L".repeat(253);
    let wh = format!("d/.wh.{name}");
    refused(
        &[dir("d"), file(format!("d/{name}"), "x"), file(&wh, "")],
        &wh,
    );
    let sb = Sandbox::new();
    let max = format!("d/{}", "M".repeat(255));
    sb.apply(&tar(&[dir("d"), file(&max, "ok")]), WhiteoutFormat::Delete)
        .unwrap();
    assert_eq!(fs::read(sb.p(&max)).unwrap(), b"ok");
}

#[test]
fn bad_whiteout_names_are_refused() {
    for bad in [".wh.", ".wh..", ".wh...", "a/.wh.", "a/.wh..", "a/.wh..."] {
        refused(&[dir("a"), file("a/f", "f"), file(bad, "")], bad);
    }
}

#[test]
fn non_directory_root_entry_is_refused() {
    refused(&[file(".", "x")], ".");
    refused(&[symlink(".", "/etc")], ".");
}

/// Writes through `link` (created in the same tar) must stay in the root.
fn symlink_escape(target: &str, through: &str) {
    let sb = Sandbox::new();
    let r = sb.apply(
        &tar(&[symlink("evil", target), file(through, "pwned")]),
        WhiteoutFormat::Overlay,
    );
    sb.assert_contained();
    if let Err(e) = r {
        // Refusing is acceptable; landing outside is not.
        eprintln!("{target}: refused: {e}");
    }
}

#[test]
fn symlink_escape_absolute_lands_inside() {
    let outside = fresh_tmp_name("abs");
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[
            symlink("evil", outside.to_str().unwrap()),
            file("evil/pwned", "pwned"),
        ]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    assert!(
        !outside.exists(),
        "{} was created outside the root",
        outside.display()
    );
    let inside = sb
        .root
        .join(outside.strip_prefix("/").unwrap())
        .join("pwned");
    assert_eq!(fs::read(&inside).unwrap(), b"pwned");
    // The symlink itself is data and kept as written.
    assert_eq!(fs::read_link(sb.p("evil")).unwrap(), outside);
    sb.assert_contained();
}

#[test]
fn symlink_escape_relative_is_clamped() {
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[
            symlink("evil", "../../.."),
            file("evil/sentinel/pwned", "pwned"),
            dir("sub"),
            symlink("sub/up", "../../sentinel"),
            file("sub/up/pwned2", "pwned"),
        ]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    sb.assert_contained();
    assert_eq!(fs::read(sb.p("sentinel/pwned")).unwrap(), b"pwned");
    assert_eq!(fs::read(sb.p("sentinel/pwned2")).unwrap(), b"pwned");
    for t in [
        "/",
        "../",
        "../../../../../../",
        "/tmp/../..",
        "sentinel/../../..",
    ] {
        symlink_escape(t, "evil/pwned-by-symlink");
    }
}

#[test]
fn symlink_chains_and_final_symlink_are_not_followed() {
    let outside = fresh_tmp_name("chain");
    let sb = Sandbox::new();
    // A chain a -> b -> /outside, then a dir entry and a file through the chain.
    sb.apply(
        &tar(&[
            symlink("b", outside.to_str().unwrap()),
            symlink("a", "b"),
            file("a/x", "through chain"),
            // Final component is a symlink to outside: replaced, not written through.
            symlink("f", "../sibling"),
            file("f", "replaced"),
            symlink("g", "/etc/passwd"),
            dir("g"),
        ]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    sb.assert_contained();
    assert!(!outside.exists());
    assert_eq!(
        fs::read(sb.root.join(outside.strip_prefix("/").unwrap()).join("x")).unwrap(),
        b"through chain"
    );
    assert!(fs::symlink_metadata(sb.p("f")).unwrap().is_file());
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(sb.p("g")).unwrap().is_dir());
    assert_eq!(fs::read(sb.tmp.path().join("sibling")).unwrap(), b"keep");
}

#[test]
fn preexisting_symlink_in_lower_layer_is_clamped() {
    // vfs: the layer is a copy of its parent, which may hold hostile symlinks.
    let sb = Sandbox::new();
    std::os::unix::fs::symlink(sb.tmp.path().join("sentinel"), sb.p("lower")).unwrap();
    std::os::unix::fs::symlink("../sentinel", sb.p("lower2")).unwrap();
    sb.apply(
        &tar(&[
            file("lower/a", "a"),
            file("lower2/b", "b"),
            hardlink("lower/c", "lower2/b"),
        ]),
        WhiteoutFormat::Delete,
    )
    .unwrap();
    sb.assert_contained();
    let inside = sb
        .root
        .join(sb.tmp.path().join("sentinel").strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside.join("a")).unwrap(), b"a");
    assert_eq!(fs::read(sb.p("sentinel/b")).unwrap(), b"b");
    assert_eq!(fs::read(inside.join("c")).unwrap(), b"b");
}

#[test]
fn hardlink_targets_must_be_inside_and_existing() {
    refused(&[hardlink("pw", "/etc/passwd")], "pw");
    refused(&[hardlink("pw", "../../etc/passwd")], "pw");
    refused(&[hardlink("pw", "a/../../etc/passwd")], "pw");
    refused(&[hardlink("pw", "missing")], "pw");
    refused(&[hardlink("pw", "nodir/missing")], "pw");
    refused(&[dir("d"), hardlink("pw", "d")], "pw");
    refused(&[hardlink("pw", ".")], "pw");
    refused(&[file("f", "x"), hardlink("pw", "f/x")], "pw");
    let sb = Sandbox::new();
    let err = sb
        .apply(
            &tar(&[hardlink("pw", "/etc/passwd")]),
            WhiteoutFormat::Overlay,
        )
        .unwrap_err();
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
    let err = sb
        .apply(&tar(&[hardlink("pw", "missing")]), WhiteoutFormat::Overlay)
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn hardlink_through_symlink_is_clamped() {
    // `etc` -> /etc then a hard link to etc/passwd must not link the host's passwd.
    let sb = Sandbox::new();
    let r = sb.apply(
        &tar(&[symlink("etc", "/etc"), hardlink("pw", "etc/passwd")]),
        WhiteoutFormat::Overlay,
    );
    let err = r.unwrap_err();
    assert_unsafe(&err, "pw");
    assert!(!sb.p("pw").exists());
    // With a real file at <root>/etc/passwd it links that one.
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[
            file("realetc/passwd", "inside"),
            symlink("etc", "/realetc"),
            hardlink("pw", "etc/passwd"),
        ]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    assert_eq!(fs::read(sb.p("pw")).unwrap(), b"inside");
    assert_eq!(
        fs::metadata(sb.p("pw")).unwrap().ino(),
        fs::metadata(sb.p("realetc/passwd")).unwrap().ino()
    );
    assert_ne!(
        fs::metadata(sb.p("pw")).unwrap().ino(),
        fs::metadata("/etc/passwd").unwrap().ino()
    );
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[symlink("s", "/etc/passwd"), hardlink("h", "s")]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    let h = fs::symlink_metadata(sb.p("h")).unwrap();
    assert!(h.file_type().is_symlink());
    assert_eq!(h.ino(), fs::symlink_metadata(sb.p("s")).unwrap().ino());
    sb.assert_contained();
}

#[test]
fn hardlink_to_itself_is_a_noop() {
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[file("f", "x"), hardlink("f", "f")]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"x");
}

fn tar_err(bytes: &[u8]) -> DriverError {
    let sb = Sandbox::new();
    let err = sb.apply(bytes, WhiteoutFormat::Overlay).unwrap_err();
    sb.assert_contained();
    err
}

#[test]
fn truncated_mid_data_names_the_entry() {
    let t = tar(&[file("a", "1"), file("big", vec![7u8; 10_000])]);
    // Cut inside big's data (headers: a=512+512, big header at 1024, data from 1536).
    let err = tar_err(&t[..1536 + 3000]);
    match &err {
        DriverError::Tar { entry: Some(e), .. } => assert_eq!(e, "big", "{err}"),
        other => panic!("expected Tar error naming big, got {other:?}"),
    }
    assert!(err.to_string().contains("big"));
}

#[test]
fn truncated_mid_header_is_a_tar_error() {
    let t = tar(&[file("a", "1"), file("b", "2")]);
    let err = tar_err(&t[..1024 + 100]);
    assert!(matches!(err, DriverError::Tar { .. }), "{err:?}");
    // Cut right after a header whose data is missing entirely.
    let err = tar_err(&t[..1024 + 512]);
    assert!(matches!(err, DriverError::Tar { .. }), "{err:?}");
}

#[test]
fn garbage_and_bad_checksum_are_tar_errors() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = tar_err(&garbage);
    assert!(matches!(err, DriverError::Tar { .. }), "{err:?}");
    assert!(err.to_string().contains("reading layer tar"), "{err}");

    let mut t = tar(&[file("a", "1"), file("b", "2")]);
    t[1024 + 5] ^= 0x20; // flip a bit in b's name: checksum no longer matches
    let err = tar_err(&t);
    assert!(matches!(err, DriverError::Tar { .. }), "{err:?}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn pax_path_with_dotdot_is_refused() {
    // The PAX `path` record overrides the header name; it is checked the same way.
    refused(
        &[file("innocent", "x").pax("path", "../escaped")],
        "../escaped",
    );
    refused(
        &[
            symlink("l", "x").pax("linkpath", "y"),
            hardlink("innocent", "x").pax("linkpath", "../../etc/passwd"),
        ],
        "innocent",
    );
}

#[test]
fn dev_nodes_cannot_escape_either() {
    if !need_root("dev_nodes_cannot_escape_either") {
        return;
    }
    refused(
        &[E::new("../null", tar::EntryType::Char).dev(1, 3)],
        "../null",
    );
    let sb = Sandbox::new();
    sb.apply(
        &tar(&[
            symlink("d", "/dev"),
            E::new("d/mynull", tar::EntryType::Char).dev(1, 3),
        ]),
        WhiteoutFormat::Overlay,
    )
    .unwrap();
    assert!(!std::path::Path::new("/dev/mynull").exists());
    assert!(sb.p("dev/mynull").symlink_metadata().is_ok());
    sb.assert_contained();
}

#[test]
fn unsupported_entry_type_is_refused() {
    // GNU volume header ('V').
    refused(&[E::new("vol", tar::EntryType::new(b'V'))], "vol");
}

#[test]
fn error_messages_read_well() {
    let t = tar(&[file("a", "1"), file("b", "2")]);
    let msgs = [
        tar_err(&t[..1024 + 100]).to_string(),
        tar_err(&tar(&[file("big", vec![1u8; 4000])])[..1000]).to_string(),
        Sandbox::new()
            .apply(&tar(&[file("x/../../y", "")]), WhiteoutFormat::Overlay)
            .unwrap_err()
            .to_string(),
        Sandbox::new()
            .apply(&tar(&[file("d/.wh...", "")]), WhiteoutFormat::Delete)
            .unwrap_err()
            .to_string(),
    ];
    for m in &msgs {
        eprintln!("{m}");
    }
    assert!(msgs[0].contains("after entry \"a\""), "{}", msgs[0]);
    assert!(
        msgs[1].contains("\"big\"") && msgs[1].contains("truncated"),
        "{}",
        msgs[1]
    );
    assert!(
        msgs[2].contains("x/../../y") && msgs[2].contains(".."),
        "{}",
        msgs[2]
    );
    assert!(
        msgs[3].contains("d/.wh...") && msgs[3].contains("whiteout"),
        "{}",
        msgs[3]
    );
}

#[test]
fn absurd_times_and_ids_do_not_panic() {
    let sb = Sandbox::new();
    let t = tar(&[
        file("far", "x").mtime(u64::MAX / 2),
        file("neg", "x").pax("mtime", "-99999999999.5"),
        file("junk", "x").pax("mtime", "not a number"),
        dir("d").pax("mtime", "99999999999999999999999"),
    ]);
    match sb.apply(&t, WhiteoutFormat::Overlay) {
        Ok(_) => assert_eq!(fs::read(sb.p("junk")).unwrap(), b"x"),
        Err(e) => assert!(matches!(e, DriverError::Io { .. }), "{e:?}"),
    }
    let big_uid = tar(&[file("u", "x").pax("uid", "99999999999")]);
    let err = Sandbox::new()
        .apply(&big_uid, WhiteoutFormat::Overlay)
        .unwrap_err();
    assert_unsafe(&err, "u");
    sb.assert_contained();
}

/// An xattr the kernel refuses as invalid (here a name over XATTR_NAME_MAX, ERANGE on
/// every filesystem; a malformed POSIX ACL gives EINVAL where ACLs are supported) is
/// invalid input naming the entry, on a file and on a directory: before, it was an I/O
/// error (exit 1).
#[test]
fn an_xattr_the_kernel_calls_invalid_is_refused() {
    let attr = format!("user.{}", "n".repeat(300));
    for bad in [
        file("f", "x").xattr(&attr, b"v"),
        dir("d").xattr(&attr, b"v"),
    ] {
        let name = String::from_utf8(bad.name.clone()).unwrap();
        let sb = Sandbox::new();
        let err = sb.apply(&tar(&[bad]), WhiteoutFormat::Delete).unwrap_err();
        assert_unsafe(&err, &name);
        assert!(err.to_string().contains("refuses it as invalid"), "{err}");
        sb.assert_contained();
    }
}
