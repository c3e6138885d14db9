//! Whiteouts in the three on-disk formats.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::*;
use driver_core::WhiteoutFormat;

/// A lower layer as vfs would have copied it.
fn lower(sb: &Sandbox) {
    fs::create_dir_all(sb.p("etc/conf.d")).unwrap();
    fs::write(sb.p("etc/passwd"), "root").unwrap();
    fs::write(sb.p("etc/conf.d/a"), "a").unwrap();
    fs::create_dir_all(sb.p("var/cache/apt")).unwrap();
    fs::write(sb.p("var/cache/apt/pkg"), "p").unwrap();
    fs::write(sb.p("var/keep"), "k").unwrap();
    fs::create_dir_all(sb.p("opq/sub")).unwrap();
    fs::write(sb.p("opq/old"), "o").unwrap();
    fs::write(sb.p("opq/sub/old"), "o").unwrap();
    std::os::unix::fs::symlink(sb.tmp.path().join("sentinel"), sb.p("link")).unwrap();
}

#[test]
fn delete_format_removes_lower_paths() {
    let mut sb = Sandbox::new();
    lower(&sb);
    fs::write(sb.tmp.path().join("sentinel/precious"), "p").unwrap();
    sb.rebaseline();
    let t = tar(&[
        file("etc/.wh.passwd", ""),
        file("var/.wh.cache", ""),
        file(".wh.link", ""),
        file("missing/.wh.x", ""),
        file(".wh.nothing-here", ""),
    ]);
    let stats = sb.apply(&t, WhiteoutFormat::Delete).unwrap();
    assert_eq!(stats.entries, 5);
    assert!(!exists_nofollow(&sb.p("etc/passwd")));
    assert!(!exists_nofollow(&sb.p("etc/.wh.passwd")));
    assert!(!exists_nofollow(&sb.p("var/cache")));
    assert!(
        !exists_nofollow(&sb.p("link")),
        "symlink removed, not followed"
    );
    assert!(
        !exists_nofollow(&sb.p("missing")),
        "whiteout creates no directories"
    );
    assert_eq!(fs::read(sb.p("var/keep")).unwrap(), b"k");
    assert_eq!(
        fs::read(sb.tmp.path().join("sentinel/precious")).unwrap(),
        b"p"
    );
}

#[test]
fn delete_format_opaque_keeps_same_layer_entries() {
    let sb = Sandbox::new();
    lower(&sb);
    let t = tar(&[
        dir("opq"),
        file("opq/new", "n"),
        file("opq/sub/new", "n"),
        file("opq/.wh..wh..opq", ""),
        file("etc/conf.d/b", "b"),
        file("etc/conf.d/.wh.b", ""),
        file("etc/.wh.conf.d", ""),
    ]);
    sb.apply(&t, WhiteoutFormat::Delete).unwrap();
    assert_eq!(fs::read(sb.p("opq/new")).unwrap(), b"n");
    assert_eq!(fs::read(sb.p("opq/sub/new")).unwrap(), b"n");
    assert!(!exists_nofollow(&sb.p("opq/old")));
    assert!(
        !exists_nofollow(&sb.p("opq/sub/old")),
        "lower content below a kept dir goes too"
    );
    assert!(!exists_nofollow(&sb.p("opq/.wh..wh..opq")));
    // Same-layer entries are never whited out (OCI: whiteouts apply to lower layers):
    // `.wh.conf.d` after this layer wrote into conf.d hides only the lower conf.d/a.
    assert_eq!(fs::read(sb.p("etc/conf.d/b")).unwrap(), b"b");
    assert!(sb.p("etc/conf.d").is_dir());
    assert!(!exists_nofollow(&sb.p("etc/conf.d/a")));
    sb.assert_contained();
}

#[test]
fn delete_format_opaque_first_then_entries() {
    let sb = Sandbox::new();
    lower(&sb);
    let t = tar(&[file("opq/.wh..wh..opq", ""), file("opq/fresh", "f")]);
    sb.apply(&t, WhiteoutFormat::Delete).unwrap();
    let mut names: Vec<_> = fs::read_dir(sb.p("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["fresh"]);
}

#[test]
fn overlay_format_makes_char_devices_and_opaque_xattr() {
    if !need_root("overlay_format_makes_char_devices_and_opaque_xattr") {
        return;
    }
    let sb = Sandbox::new();
    fs::write(sb.p("existing"), "x").unwrap();
    fs::create_dir(sb.p("etc")).unwrap();
    let t = tar(&[
        file("etc/.wh.passwd", "").owner(1234, 5678),
        // A whiteout in a directory that exists nowhere deletes nothing, makes nothing.
        file("nowhere/.wh.x", ""),
        file(".wh.existing", ""),
        file("newdir/.wh..wh..opq", ""),
        dir("d"),
        file("d/.wh..wh..opq", ""),
        file("d/f", "f"),
        file("meta/.wh..wh.plnk", ""),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    let wh = fs::symlink_metadata(sb.p("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!((wh.uid(), wh.gid()), (1234, 5678));
    assert!(fs::symlink_metadata(sb.p("existing"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(!exists_nofollow(&sb.p("etc/.wh.passwd")));
    assert!(!exists_nofollow(&sb.p("nowhere")));
    for d in ["newdir", "d"] {
        assert_eq!(
            xattr::get(sb.p(d), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..]),
            "{d}"
        );
        assert!(!exists_nofollow(&sb.p(&format!("{d}/.wh..wh..opq"))));
    }
    assert_eq!(fs::metadata(sb.p("newdir")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::read(sb.p("d/f")).unwrap(), b"f");
    assert!(!exists_nofollow(&sb.p("meta/.wh..wh.plnk")));
    sb.assert_contained();
}

#[test]
fn overlay_whiteout_through_symlinked_dir_stays_inside() {
    if !need_root("overlay_whiteout_through_symlinked_dir_stays_inside") {
        return;
    }
    let mut sb = Sandbox::new();
    fs::write(sb.tmp.path().join("sentinel/victim"), "v").unwrap();
    sb.rebaseline();
    let t = tar(&[
        symlink("s", "../sentinel"),
        file("s/.wh.victim", ""),
        file("s/.wh..wh..opq", ""),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(
        fs::read(sb.tmp.path().join("sentinel/victim")).unwrap(),
        b"v"
    );
    // `s` resolves to `<root>/sentinel`: the whiteout found no such directory (nothing to
    // delete), the opaque marker made it, empty and opaque, inside the root.
    assert!(!exists_nofollow(&sb.p("sentinel/victim")));
    assert_eq!(
        xattr::get(sb.p("sentinel"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(fs::symlink_metadata(sb.p("s"))
        .unwrap()
        .file_type()
        .is_symlink());
    sb.assert_contained();
}

#[test]
fn delete_whiteout_through_symlinked_dir_stays_inside() {
    let mut sb = Sandbox::new();
    fs::write(sb.tmp.path().join("sentinel/victim"), "v").unwrap();
    sb.rebaseline();
    std::os::unix::fs::symlink(sb.tmp.path().join("sentinel"), sb.p("s")).unwrap();
    std::os::unix::fs::symlink("../sentinel", sb.p("r")).unwrap();
    let t = tar(&[
        file("s/.wh.victim", ""),
        file("r/.wh.victim", ""),
        file("r/.wh..wh..opq", ""),
        file("s/.wh..wh..opq", ""),
    ]);
    sb.apply(&t, WhiteoutFormat::Delete).unwrap();
    assert_eq!(
        fs::read(sb.tmp.path().join("sentinel/victim")).unwrap(),
        b"v"
    );
    sb.assert_contained();
}

#[test]
fn aufs_format_keeps_whiteout_files() {
    let sb = Sandbox::new();
    fs::write(sb.p("x"), "x").unwrap();
    let t = tar(&[
        file(".wh.x", ""),
        file("d/.wh..wh..opq", ""),
        file("d/.wh..wh.plnk", ""),
        dir(".wh..wh.plnk"),
        file(".wh..wh.plnk/1234.5678", "hidden"),
        file(".wh..wh.orph/x", "orphan"),
    ]);
    sb.apply(&t, WhiteoutFormat::Aufs).unwrap();
    assert!(!exists_nofollow(&sb.p(".wh..wh.plnk")));
    assert!(!exists_nofollow(&sb.p(".wh..wh.orph")));
    assert!(sb.p(".wh.x").is_file());
    assert_eq!(fs::read(sb.p("x")).unwrap(), b"x");
    assert!(sb.p("d/.wh..wh..opq").is_file());
    assert!(!exists_nofollow(&sb.p("d/.wh..wh.plnk")));
}

/// `trusted.overlay.*` xattrs in a layer tar are overlay's own metadata: the kernel would
/// obey them on overlay2 (opaque, redirect, whiteout) and nowhere else, so they are
/// dropped on every driver; other xattrs of the same entry stay.
#[test]
fn overlay_private_xattrs_from_the_tar_are_dropped() {
    if !need_root("overlay_private_xattrs_from_the_tar_are_dropped") {
        return;
    }
    for format in [WhiteoutFormat::Overlay, WhiteoutFormat::Delete] {
        let sb = Sandbox::new();
        let t = tar(&[
            dir("opt")
                .xattr("trusted.overlay.redirect", "/etc")
                .xattr("trusted.overlay.opaque", "y")
                .xattr("user.keep", "k"),
            file("opt/f", "f").xattr("trusted.overlay.metacopy", ""),
        ]);
        sb.apply(&t, format).unwrap();
        for p in ["opt", "opt/f"] {
            let names: Vec<String> = xattr::list(sb.p(p))
                .unwrap()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| !n.starts_with("trusted.overlay.")),
                "{format:?} {p}: {names:?}"
            );
        }
        assert_eq!(
            xattr::get(sb.p("opt"), "user.keep").unwrap().as_deref(),
            Some(&b"k"[..])
        );
    }
}

/// A hard link to a name this layer whited out has no target, on every driver (vfs
/// deleted it; overlay holds only the whiteout, which must not get a second name).
#[test]
fn hardlink_to_a_whited_out_name_is_refused() {
    if !need_root("hardlink_to_a_whited_out_name_is_refused") {
        return;
    }
    for format in [WhiteoutFormat::Overlay, WhiteoutFormat::Delete] {
        let sb = Sandbox::new();
        fs::write(sb.p("x"), "lower").unwrap();
        let err = sb
            .apply(&tar(&[file(".wh.x", ""), hardlink("y", "x")]), format)
            .unwrap_err();
        assert_unsafe(&err, "y");
        assert!(!exists_nofollow(&sb.p("y")), "{format:?}");
    }
}

/// A 0/0 character device is overlay's whiteout: refused as an entry on every driver.
#[test]
fn zero_zero_char_device_is_refused() {
    for format in [
        WhiteoutFormat::Overlay,
        WhiteoutFormat::Delete,
        WhiteoutFormat::Aufs,
    ] {
        let sb = Sandbox::new();
        let cdev = E::new("cdev", tar::EntryType::Char).dev(0, 0);
        let err = sb.apply(&tar(&[cdev]), format).unwrap_err();
        assert_unsafe(&err, "cdev");
        assert!(err.to_string().contains("whiteout"), "{err}");
    }
}

/// A directory entry meeting an existing directory leaves exactly the entry's xattrs
/// (a full-tree layer holds the parent's copy; overlay creates the directory anew), the
/// layer root too.
#[test]
fn directory_entry_over_existing_dir_has_only_its_own_xattrs() {
    for format in [WhiteoutFormat::Delete, WhiteoutFormat::Overlay] {
        let sb = Sandbox::new();
        fs::create_dir(sb.p("d")).unwrap();
        xattr::set(sb.p("d"), "user.old", b"o").unwrap();
        xattr::set(sb.p(""), "user.rootold", b"o").unwrap();
        sb.apply(
            &tar(&[
                dir("./").xattr("user.rootnew", "n"),
                dir("d").xattr("user.new", "n"),
            ]),
            format,
        )
        .unwrap();
        let names = |p: &str| -> Vec<String> {
            let mut v: Vec<String> = xattr::list(sb.p(p))
                .unwrap()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| n.starts_with("user."))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("d"), ["user.new"], "{format:?}");
        assert_eq!(names(""), ["user.rootnew"], "{format:?}");
    }
}

/// Applying a layer onto a full tree leaves the times of directories it changes without
/// an entry of their own (the root included) as they were, as overlay's implied parents
/// keep the times of the directories they copy: the tree does not depend on when the
/// layer was imported.
#[test]
fn full_tree_apply_keeps_times_of_implied_parents() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.p("usr/bin")).unwrap();
    fs::write(sb.p("usr/bin/gone"), "x").unwrap();
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    for p in ["usr/bin", "usr", ""] {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &sb.p(p),
            &old,
            &old,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    sb.apply(
        &tar(&[
            file("usr/bin/new", "n"),
            file("usr/bin/.wh.gone", ""),
            file("top", "t"),
        ]),
        WhiteoutFormat::Delete,
    )
    .unwrap();
    for p in ["usr/bin", "usr", ""] {
        assert_eq!(
            fs::metadata(sb.p(p)).unwrap().mtime(),
            1_000_000_000,
            "{p:?} keeps its mtime"
        );
    }
    assert_eq!(fs::read(sb.p("usr/bin/new")).unwrap(), b"n");
}
