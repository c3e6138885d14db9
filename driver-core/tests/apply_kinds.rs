//! Positive tar-apply tests: every entry kind with its metadata lands as written.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::*;
use driver_core::{apply_tar, ApplyOptions, WhiteoutFormat};
use tar::EntryType;

#[test]
fn every_kind_lands_with_its_metadata() {
    if !need_root("every_kind_lands_with_its_metadata") {
        return;
    }
    let sb = Sandbox::new();
    let t = tar(&[
        dir("./").mode(0o750).mtime(1_500_000_000),
        dir("bin").mode(0o755).mtime(1_400_000_000),
        file("bin/su", "suid").mode(0o4755).owner(0, 0),
        file("bin/wall", "sgid").mode(0o2755).owner(0, 5),
        dir("tmp").mode(0o1777),
        file("etc/shadow", "secret")
            .mode(0o600)
            .owner(1234, 5678)
            .mtime(1_234_567_890),
        symlink("bin/sh", "busybox")
            .owner(1234, 5678)
            .mtime(1_300_000_000),
        hardlink("bin/su2", "bin/su"),
        E::new("dev/null", EntryType::Char).dev(1, 3).mode(0o666),
        E::new("dev/sda", EntryType::Block)
            .dev(8, 0)
            .mode(0o660)
            .owner(0, 6),
        E::new("run/fifo", EntryType::Fifo).mode(0o620),
        dir("owned")
            .mode(0o2775)
            .owner(1234, 5678)
            .mtime(1_100_000_000),
        file("owned/a", "a"),
    ]);
    let stats = sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(stats.entries, 13);
    assert_eq!(stats.content_bytes, 4 + 4 + 6 + 1);

    let md = |p: &str| fs::symlink_metadata(sb.p(p)).unwrap();
    let root = fs::metadata(&sb.root).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o750);
    assert_eq!(root.mtime(), 1_500_000_000);
    assert_eq!(md("bin").mode() & 0o7777, 0o755);
    assert_eq!(
        md("bin").mtime(),
        1_400_000_000,
        "dir mtime applied after children"
    );
    assert_eq!(md("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(md("bin/wall").mode() & 0o7777, 0o2755);
    assert_eq!(md("bin/wall").gid(), 5);
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    let shadow = md("etc/shadow");
    assert_eq!(shadow.mode() & 0o7777, 0o600);
    assert_eq!((shadow.uid(), shadow.gid()), (1234, 5678));
    assert_eq!(shadow.mtime(), 1_234_567_890);
    assert_eq!(fs::read(sb.p("etc/shadow")).unwrap(), b"secret");
    // Implicit parents are 0755.
    assert_eq!(md("etc").mode() & 0o7777, 0o755);
    let sh = md("bin/sh");
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        fs::read_link(sb.p("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert_eq!((sh.uid(), sh.gid()), (1234, 5678));
    assert_eq!(sh.mtime(), 1_300_000_000);
    assert_eq!(md("bin/su2").ino(), md("bin/su").ino());
    assert_eq!(md("bin/su").nlink(), 2);
    let null = md("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let sda = md("dev/sda");
    assert!(sda.file_type().is_block_device());
    assert_eq!(sda.rdev(), nix::sys::stat::makedev(8, 0));
    assert_eq!(sda.gid(), 6);
    let fifo = md("run/fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    let owned = md("owned");
    assert_eq!(owned.mode() & 0o7777, 0o2775);
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    assert_eq!(owned.mtime(), 1_100_000_000);
    sb.assert_contained();
}

#[test]
fn xattrs_on_file_dir_and_symlink() {
    if !need_root("xattrs_on_file_dir_and_symlink") {
        return;
    }
    let sb = Sandbox::new();
    // security.capability v2 for cap_net_bind_service (bit 10), effective.
    let cap: Vec<u8> = vec![
        0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let t = tar(&[
        dir("d").xattr("user.dir", "dv").xattr("trusted.t", "tv"),
        file("d/ping", "ELF")
            .mode(0o755)
            .owner(1234, 5678)
            .xattr("user.file", "fv")
            .xattr("security.capability", &cap),
        symlink("d/link", "ping").xattr("trusted.link", "lv"),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    let get = |p: &str, n: &str| xattr::get(sb.p(p), n).unwrap();
    assert_eq!(get("d", "user.dir").as_deref(), Some(&b"dv"[..]));
    assert_eq!(get("d", "trusted.t").as_deref(), Some(&b"tv"[..]));
    assert_eq!(get("d/ping", "user.file").as_deref(), Some(&b"fv"[..]));
    assert_eq!(
        get("d/ping", "security.capability").as_deref(),
        Some(cap.as_slice()),
        "capability survives chown"
    );
    assert_eq!(get("d/link", "trusted.link").as_deref(), Some(&b"lv"[..]));
    assert_eq!(
        get("d/ping", "trusted.link"),
        None,
        "symlink xattr not written through"
    );
    let md = fs::metadata(sb.p("d/ping")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o755)
    );
}

#[test]
fn pax_times_long_names_and_long_links() {
    let sb = Sandbox::new();
    let long_dir = "l".repeat(90);
    let long = format!("{long_dir}/{}", "f".repeat(120));
    let t = tar(&[
        file("t", "x")
            .pax("mtime", "1234567890.123456789")
            .pax("atime", "1000000000.5"),
        symlink("ts", "t").pax("mtime", "1300000000.25"),
        file(&long, "long"),
        symlink("longlink", format!("{long}/../x")),
        hardlink("hl", &long),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    let md = fs::metadata(sb.p("t")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1234567890, 123456789));
    assert_eq!((md.atime(), md.atime_nsec()), (1000000000, 500_000_000));
    let ts = fs::symlink_metadata(sb.p("ts")).unwrap();
    assert_eq!((ts.mtime(), ts.mtime_nsec()), (1300000000, 250_000_000));
    assert_eq!(fs::read(sb.root.join(&long)).unwrap(), b"long");
    assert_eq!(
        fs::read_link(sb.p("longlink")).unwrap().to_str().unwrap(),
        format!("{long}/../x")
    );
    assert_eq!(
        fs::metadata(sb.p("hl")).unwrap().ino(),
        fs::metadata(sb.root.join(&long)).unwrap().ino()
    );
    sb.assert_contained();
}

#[test]
fn overwrites_file_by_dir_dir_by_file_and_symlink_by_file() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.p("a/deep/er")).unwrap();
    fs::write(sb.p("a/deep/er/f"), "old").unwrap();
    fs::write(sb.p("b"), "old").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sb.p("c")).unwrap();
    fs::create_dir(sb.p("d")).unwrap();
    fs::write(sb.p("d/keep"), "k").unwrap();
    let t = tar(&[
        file("a", "now a file").mode(0o640),
        dir("b").mode(0o711),
        file("b/inner", "i"),
        file("c", "not through the link"),
        dir("d").mode(0o700),
    ]);
    sb.apply(&t, WhiteoutFormat::Delete).unwrap();
    assert_eq!(fs::read(sb.p("a")).unwrap(), b"now a file");
    assert_eq!(fs::metadata(sb.p("a")).unwrap().mode() & 0o7777, 0o640);
    assert!(fs::metadata(sb.p("b")).unwrap().is_dir());
    assert_eq!(
        fs::metadata(sb.p("b")).unwrap().permissions().mode() & 0o7777,
        0o711
    );
    assert_eq!(fs::read(sb.p("b/inner")).unwrap(), b"i");
    assert!(!fs::symlink_metadata(sb.p("c"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(sb.p("c")).unwrap(), b"not through the link");
    // An existing dir is kept (its content too), only its metadata changes.
    assert_eq!(fs::read(sb.p("d/keep")).unwrap(), b"k");
    assert_eq!(fs::metadata(sb.p("d")).unwrap().mode() & 0o7777, 0o700);
    sb.assert_contained();
}

#[test]
fn duplicate_entries_last_wins() {
    let sb = Sandbox::new();
    let t = tar(&[
        file("x", "first").mode(0o600),
        file("x", "second").mode(0o644),
        dir("y").mode(0o700),
        dir("y").mode(0o755),
        symlink("z", "x"),
        file("z", "third"),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(fs::read(sb.p("x")).unwrap(), b"second");
    assert_eq!(fs::metadata(sb.p("x")).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(fs::metadata(sb.p("y")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::read(sb.p("z")).unwrap(), b"third");
    assert_eq!(fs::read(sb.p("x")).unwrap(), b"second");
    sb.assert_contained();
}

#[test]
fn owners_skipped_when_not_preserved() {
    let sb = Sandbox::new();
    let t = tar(&[file("f", "x").owner(1234, 5678)]);
    let mut opts = ApplyOptions::new(WhiteoutFormat::Overlay);
    opts.preserve_owners = false;
    apply_tar(&sb.root, &mut &t[..], &opts).unwrap();
    let md = fs::metadata(sb.p("f")).unwrap();
    assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
}

#[test]
fn pax_global_header_is_skipped() {
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(EntryType::XGlobalHeader);
    let rec = b"20 comment=global!\n";
    h.set_size(rec.len() as u64);
    h.set_path("pax_global_header").unwrap();
    h.set_cksum();
    b.append(&h, &rec[..]).unwrap();
    append(&mut b, &file("f", "x"));
    let t = b.into_inner().unwrap();
    let stats = sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(stats.entries, 1);
    assert!(!sb.p("pax_global_header").exists());
    assert_eq!(fs::read(sb.p("f")).unwrap(), b"x");
}

#[test]
fn large_file_content_is_exact() {
    let sb = Sandbox::new();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let t = tar(&[file("big", &data)]);
    let stats = sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(stats.content_bytes, data.len() as u64);
    assert_eq!(fs::read(sb.p("big")).unwrap(), data);
}

#[test]
fn gnu_sparse_file_is_expanded() {
    use std::io::{Seek, SeekFrom, Write};
    let src = tempfile::tempdir().unwrap();
    let p = src.path().join("sparse");
    let mut f = fs::File::create(&p).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"middle").unwrap();
    f.seek(SeekFrom::Start(3 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    let mut b = tar::Builder::new(Vec::new());
    b.sparse(true);
    b.append_path_with_name(&p, "sparse").unwrap();
    let t = b.into_inner().unwrap();
    assert!(
        t.len() < 1 << 20,
        "the builder wrote a sparse entry ({} bytes)",
        t.len()
    );
    let sb = Sandbox::new();
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(fs::read(sb.p("sparse")).unwrap(), fs::read(&p).unwrap());
    let md = fs::metadata(sb.p("sparse")).unwrap();
    assert_eq!(md.len(), (3 << 20) + 3);
    assert!(
        md.blocks() * 512 < 1 << 20,
        "holes kept: {} blocks",
        md.blocks()
    );
}

#[test]
fn replaced_ancestor_is_not_reused_from_the_parent_cache() {
    let sb = Sandbox::new();
    let t = tar(&[
        file("x/y/f1", "1"),
        dir("z/y"),
        // `x` (a dir the resolver has cached below) becomes a symlink to z.
        symlink("x", "z"),
        file("x/y/f2", "2"),
    ]);
    sb.apply(&t, WhiteoutFormat::Delete).unwrap();
    assert_eq!(fs::read(sb.p("z/y/f2")).unwrap(), b"2");
    assert!(!sb.p("z/y/f1").exists());
    assert!(fs::symlink_metadata(sb.p("x"))
        .unwrap()
        .file_type()
        .is_symlink());
    sb.assert_contained();
}

#[test]
fn file_below_a_file_is_an_io_error_naming_the_path() {
    let sb = Sandbox::new();
    let err = sb
        .apply(
            &tar(&[file("f", "x"), file("f/g", "y")]),
            WhiteoutFormat::Overlay,
        )
        .unwrap_err();
    assert!(
        matches!(err, driver_core::DriverError::Io { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("root/f"), "{err}");
}

#[test]
fn old_style_directory_with_trailing_slash() {
    let sb = Sandbox::new();
    let t = tar(&[
        E::new("v7dir/", EntryType::Regular).mode(0o711),
        file("v7dir/f", "x"),
    ]);
    sb.apply(&t, WhiteoutFormat::Overlay).unwrap();
    assert!(sb.p("v7dir").is_dir());
    assert_eq!(fs::metadata(sb.p("v7dir")).unwrap().mode() & 0o7777, 0o711);
}

#[test]
fn modes_do_not_depend_on_the_umask() {
    // Run the apply in a child with umask 077 (umask is process-wide: never change it
    // in the test process itself).
    let sb = Sandbox::new();
    let t = tar(&[
        file("implicit/dir/f", "x").mode(0o644),
        dir("explicit").mode(0o755),
        E::new("fifo", EntryType::Fifo).mode(0o666),
    ]);
    let tar_path = sb.tmp.path().join("layer.tar");
    fs::write(&tar_path, &t).unwrap();
    let exe = std::env::current_exe().unwrap();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" --exact umask_child --nocapture")
        .arg(&exe)
        .env("APPLY_UMASK_ROOT", &sb.root)
        .env("APPLY_UMASK_TAR", &tar_path)
        .status()
        .unwrap();
    assert!(st.success());
    let mode = |p: &str| fs::symlink_metadata(sb.p(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("implicit"), 0o755);
    assert_eq!(mode("implicit/dir"), 0o755);
    assert_eq!(mode("implicit/dir/f"), 0o644);
    assert_eq!(mode("explicit"), 0o755);
    assert_eq!(mode("fifo"), 0o666);
}

/// The child half of `modes_do_not_depend_on_the_umask` (a no-op when run directly).
#[test]
fn umask_child() {
    let (Some(root), Some(t)) = (
        std::env::var_os("APPLY_UMASK_ROOT"),
        std::env::var_os("APPLY_UMASK_TAR"),
    ) else {
        return;
    };
    let mut f = fs::File::open(t).unwrap();
    let mut opts = ApplyOptions::new(WhiteoutFormat::Overlay);
    opts.preserve_owners = is_root();
    apply_tar(std::path::Path::new(&root), &mut f, &opts).unwrap();
}
