//! Breaking layerctl as a new user would (breaker 3): inputs and habits of real use
//! that the other suites do not try, on every driver of `harness::DRIVERS`. Each test
//! is the smallest reproduction of one failure found by hand; the commit that adds it
//! says what was wrong.

use std::path::{Path, PathBuf};
use std::process::Command;

use layerctl_tests::fixtures::{Entry, Layer};
use layerctl_tests::harness::{self, Ctl, Run};

fn small_tar(ctl: &Ctl) -> PathBuf {
    ctl.write_work(
        "small.tar",
        &Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/motd", b"hello\n".to_vec()),
        ])
        .tar(),
    )
}

/// `layerctl --root <rel> --driver D ARGS...` run from `cwd` (the store given by a
/// path relative to the working directory, as a user types `--root ./store`).
fn run_in(ctl: &Ctl, cwd: &Path, root: &str, args: &[&str]) -> Run {
    let empty = ctl.work.join("empty-config.toml");
    std::fs::write(&empty, "").expect("write empty config");
    Command::new(&ctl.bin)
        .current_dir(cwd)
        .env("LAYERCTL_CONFIG", &empty)
        .env_remove("RUST_LOG")
        .args(["--root", root, "--driver", &ctl.driver])
        .args(args)
        .output()
        .expect("spawn layerctl")
        .into()
}

/// A relative `--root` (`root`) and one through a symlink (`link/root`, as
/// `/var/lib/docker -> /data/docker`) work like the absolute one on every driver:
/// `mount` prints an absolute path that is the container's root (and `ps` shows it),
/// `umount` leaves no mount. Before the fix the userspace aufs mount failed ("the
/// server said ready but the mount does not answer": the driver looked for the mount
/// point, as given, in /proc/self/mountinfo, which lists it resolved) and left its FUSE
/// mount and server behind, and vfs/overlay2 printed a path relative to the caller's
/// working directory.
#[test]
fn relative_and_symlinked_root() {
    for (spec, spelling) in harness::drivers("breaker3 relative_and_symlinked_root")
        .into_iter()
        .flat_map(|s| [(s, "root"), (s, "link/root")])
    {
        let ctl = Ctl::new(spec.name);
        let tar = small_tar(&ctl);
        let base = ctl.base().to_path_buf();
        std::os::unix::fs::symlink(".", base.join("link")).unwrap();
        let ok = |args: &[&str]| {
            let r = run_in(&ctl, &base, spelling, args);
            assert_eq!(r.code, 0, "[{}] layerctl {args:?}: {r:?}", spec.name);
            r.stdout
        };
        ok(&["import", tar.to_str().unwrap(), "--name", "small"]);
        ok(&["create", "c", "small"]);
        let out = ok(&["mount", "c"]);
        let mnt = PathBuf::from(out.trim());
        assert!(
            mnt.is_absolute(),
            "[{}] mount printed {mnt:?}, not an absolute path",
            spec.name
        );
        assert!(mnt.starts_with(&ctl.root), "[{}] {mnt:?}", spec.name);
        ctl.assert_mounted(&mnt, true);
        assert_eq!(
            std::fs::read(mnt.join("etc/motd")).unwrap(),
            b"hello\n",
            "[{}]",
            spec.name
        );
        let ps = ok(&["ps"]);
        assert!(
            ps.contains(mnt.to_str().unwrap()),
            "[{}] ps shows the absolute mount point: {ps}",
            spec.name
        );
        ok(&["umount", "c"]);
        ctl.assert_mounted(&mnt, false);
        ok(&["rm", "c"]);
        assert!(
            harness::mounts_under(ctl.base()).is_empty(),
            "[{}] mounts left: {:?}",
            spec.name,
            harness::mounts_under(ctl.base())
        );
    }
}

/// A name that is another image's full id would shadow that id (names are resolved
/// first): `tag B <id of A>` then `create c <id of A>` made a container of B and
/// `rmi <id of A>` went for B. Such names are refused with exit 5, as Docker refuses
/// 64-hex-digit names; the id keeps reaching its own image.
#[test]
fn a_full_image_id_is_not_a_name() {
    if !harness::can_run("breaker3 a_full_image_id_is_not_a_name", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let a = ctl.import(&small_tar(&ctl), "a");
    let other = ctl.write_work(
        "other.tar",
        &Layer::new(vec![Entry::file("other", b"b\n".to_vec())]).tar(),
    );
    let b = ctl.import(&other, "b");
    let hex = a.trim_start_matches("sha256:");
    for name in [a.as_str(), hex] {
        let r = ctl.fails(&["tag", "b", name], 5);
        assert!(
            r.stderr.contains(name),
            "error names the name: {}",
            r.stderr
        );
        ctl.fails(&["import", other.to_str().unwrap(), "--name", name], 5);
    }
    ctl.ok(&["create", "c", a.as_str()]);
    let ps = ctl.json(&["ps"]);
    assert_eq!(ps[0]["image"], a, "container of {a}, not of {b}: {ps}");
    ctl.ok(&["rm", "c"]);
    let out = ctl.ok(&["rmi", a.as_str()]);
    assert!(out.contains(&format!("Deleted: {a}")), "{out}");
    let imgs = ctl.json(&["images"]);
    assert_eq!(imgs.as_array().unwrap().len(), 1, "{imgs}");
    assert_eq!(imgs[0]["id"], b, "{imgs}");
}

/// The temp-file idiom (open, unlink, keep using the descriptor: bash here-documents,
/// `tmpfile(3)`, dpkg, sqlite) inside a container on every driver: after the unlink
/// the descriptor still reads, writes, `fstat`s (nlink 0), `fchmod`s and `ftruncate`s,
/// for a new file and for an image file opened for writing (copied up). Before the fix
/// the userspace aufs answered ESTALE to fstat/fchmod/ftruncate (and so to Python's
/// read(), which fstats first): the server found the file by its path only.
#[test]
fn an_open_unlinked_file_stays_usable() {
    use std::fs::OpenOptions;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for spec in harness::drivers("breaker3 an_open_unlinked_file_stays_usable") {
        let ctl = Ctl::new(spec.name);
        ctl.import(&small_tar(&ctl), "small");
        ctl.ok(&["create", "c", "small"]);
        let m = ctl.mount("c");
        let new = m.join("etc/tmpfile");
        let cases: [(&Path, &[u8]); 2] = [(&new, b""), (&m.join("etc/motd"), b"hello\n")];
        for (p, before) in cases {
            let what = format!("[{}] {}", spec.name, p.display());
            let mut f = OpenOptions::new()
                .read(true)
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("{what}: open: {e}"));
            f.write_all(b"data").unwrap();
            std::fs::remove_file(p).unwrap();
            assert!(!p.exists(), "{what}: still listed after unlink");
            f.write_all(b"more").unwrap();
            let md = f
                .metadata()
                .unwrap_or_else(|e| panic!("{what}: fstat: {e}"));
            assert_eq!(md.nlink(), 0, "{what}: nlink");
            assert_eq!(md.len(), before.len() as u64 + 8, "{what}: size");
            let mut got = Vec::new();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut got).unwrap();
            assert_eq!(got, [before, b"datamore"].concat(), "{what}: content");
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("{what}: fchmod: {e}"));
            f.set_len(2)
                .unwrap_or_else(|e| panic!("{what}: ftruncate: {e}"));
            let md = f.metadata().unwrap();
            assert_eq!((md.len(), md.mode() & 0o7777), (2, 0o600), "{what}");
        }
        let diff = ctl.ok(&["diff", "c"]);
        assert!(
            diff.contains("D /etc/motd") && !diff.contains("tmpfile"),
            "[{}] {diff}",
            spec.name
        );
        ctl.ok(&["umount", "c"]);
    }
}

/// A sparse file of an image (`/var/log/lastlog` of an image with a big uid is one,
/// Docker's famous terabyte file) stays sparse on every driver: in a vfs container
/// (a copy of the image) and after a copy-up (an append through the mount). Before
/// the fix vfs containers and aufs copy-ups wrote every hole out as zeros (1 GiB on
/// disk and seconds of writing for this 1 GiB file with 8 KiB of data).
#[test]
fn sparse_files_stay_sparse_in_containers_and_copy_ups() {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::{FileExt, MetadataExt};
    const SIZE: u64 = 1 << 30;
    for spec in harness::drivers("breaker3 sparse_files_stay_sparse") {
        let ctl = Ctl::new(spec.name);
        let src = ctl.work.join("src");
        std::fs::create_dir(&src).unwrap();
        let f = std::fs::File::create(src.join("big")).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", SIZE / 2).unwrap();
        f.set_len(SIZE).unwrap();
        drop(f);
        let tar = ctl.work.join("sparse.tar");
        let st = Command::new("tar")
            .args(["-S", "--format=posix", "--numeric-owner", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg("big")
            .status()
            .expect("GNU tar");
        assert!(st.success());
        ctl.import(&tar, "sparse");
        ctl.ok(&["create", "c", "sparse"]);
        let m = ctl.mount("c");
        let p = m.join("big");
        let on_disk = |what: &str| {
            let md = std::fs::metadata(&p).unwrap();
            assert_eq!(md.len(), SIZE + if what == "image" { 0 } else { 4 });
            let bytes = md.blocks() * 512;
            assert!(
                bytes < 4 << 20,
                "[{}] {what}: {bytes} bytes on disk for a file with 11 bytes of data",
                spec.name
            );
        };
        on_disk("image");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .open(&p)
            .unwrap();
        std::io::Write::write_all(&mut f, b"tail").unwrap();
        drop(f);
        on_disk("copy-up");
        let mut f = std::fs::File::open(&p).unwrap();
        let mut buf = [0u8; 6];
        f.read_exact(&mut buf[..5]).unwrap();
        assert_eq!(&buf[..5], b"start", "[{}]", spec.name);
        f.seek(SeekFrom::Start(SIZE / 2)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"middle", "[{}]", spec.name);
        f.seek(SeekFrom::Start(SIZE)).unwrap();
        f.read_exact(&mut buf[..4]).unwrap();
        assert_eq!(&buf[..4], b"tail", "[{}]", spec.name);
        drop(f);
        ctl.ok(&["umount", "c"]);
    }
}

/// The userspace aufs server killed (SIGKILL) while it copies a large image file up
/// for an append: after the next `mount` (which detaches the dead mount) the container
/// still shows the image's file, whole. Before the fix the copy-up wrote straight to
/// the file's name in the rw layer, so the cut-short copy (a truncated file, mode 0600)
/// hid the image's file for good; `diff` listed it as changed.
#[test]
fn aufs_server_killed_during_copy_up_leaves_the_image_file_whole() {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    if !harness::can_run("breaker3 aufs_server_killed_during_copy_up", "aufs") {
        return;
    }
    let ctl = Ctl::new("aufs");
    let src = ctl.work.join("src");
    std::fs::create_dir(&src).unwrap();
    let chunk = layerctl_tests::fixtures::noise(1 << 20, 7);
    let mut f = std::fs::File::create(src.join("big")).unwrap();
    let mut h = Sha256::new();
    for _ in 0..384 {
        f.write_all(&chunk).unwrap();
        h.update(&chunk);
    }
    drop(f);
    let want = hex::encode(h.finalize());
    let tar = ctl.work.join("big.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("big")
        .status()
        .expect("GNU tar");
    assert!(st.success());
    std::fs::remove_dir_all(&src).unwrap();
    ctl.import(&tar, "big");
    ctl.ok(&["create", "c", "big"]);
    let m = ctl.mount("c");
    let id = m.file_name().unwrap().to_str().unwrap().to_owned();
    let pid: i32 = std::fs::read_to_string(ctl.root.join(format!("aufs/run/{id}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rw = ctl.layer_dir(&id);
    let target = m.join("big");
    let writer = std::thread::spawn(move || {
        let r = std::fs::OpenOptions::new().append(true).open(&target);
        r.and_then(|mut f| f.write_all(b"tail"))
    });
    // Kill the server once the copy has started (some data is in the rw layer).
    let started = std::time::Instant::now();
    loop {
        let busy = std::fs::read_dir(&rw)
            .unwrap()
            .flatten()
            .any(|e| e.metadata().is_ok_and(|md| md.is_file() && md.len() > 0));
        if busy {
            break;
        }
        assert!(started.elapsed().as_secs() < 60, "copy-up never started");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -KILL {pid}");
    let r = writer.join().unwrap();
    assert!(r.is_err(), "the append must fail with its server gone");
    let m = ctl.mount("c");
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(m.join("big")).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    drop(f);
    assert_eq!(
        hex::encode(h.finalize()),
        want,
        "the container's /big is not the image's file"
    );
    let md = std::fs::metadata(m.join("big")).unwrap();
    assert_eq!(md.len(), 384 << 20);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o644
    );
    let diff = ctl.ok(&["diff", "c"]);
    assert!(!diff.contains("/big"), "diff: {diff}");
    ctl.ok(&["umount", "c"]);
    ctl.ok(&["rm", "c"]);
}

/// `export -o FILE` where FILE is no regular file: a device node (`/dev/null` as in
/// `export c -o /dev/null` to time an export), a FIFO, a symlink to a file. The tar
/// goes into it and the node stays what it was. Before the fix the temp file was
/// renamed over it: `-o /dev/full` (tried by hand) replaced the system's /dev/full
/// with a 12 MB regular file and exited 0; a FIFO became a file the reader never saw.
/// The test makes its own device node (1,3 = null) and FIFO in its work dir.
#[test]
fn export_into_a_device_a_fifo_or_a_symlink_keeps_the_node() {
    use std::os::unix::fs::FileTypeExt;
    if !harness::can_run("breaker3 export_into_a_device_or_fifo", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    ctl.import(&small_tar(&ctl), "small");
    // `save` writes its archive the same way (one helper): the same rules hold.
    for cmd in ["export", "save"] {
        let dev = ctl.work.join(format!("{cmd}-null"));
        let st = Command::new("mknod")
            .arg(&dev)
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(st.success());
        ctl.ok(&[cmd, "small", "-o", dev.to_str().unwrap()]);
        let md = std::fs::symlink_metadata(&dev).unwrap();
        assert!(
            md.file_type().is_char_device(),
            "{cmd}: {dev:?} is now {md:?}"
        );

        let fifo = ctl.work.join(format!("{cmd}-fifo"));
        let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success());
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let fifo = fifo.clone();
            // Not joined: a reader whose FIFO was replaced would wait forever.
            std::thread::spawn(move || tx.send(std::fs::read(fifo).unwrap()));
        }
        ctl.ok(&[cmd, "small", "-o", fifo.to_str().unwrap()]);
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the FIFO's reader got no tar");
        let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(ft.is_fifo(), "{cmd}: {fifo:?} is no FIFO any more");
        let plain = ctl.work.join(format!("{cmd}-plain.tar"));
        ctl.ok(&[cmd, "small", "-o", plain.to_str().unwrap()]);
        let want = std::fs::read(&plain).unwrap();
        assert!(
            got == want,
            "{cmd}: the FIFO's reader got the same tar as a file"
        );

        let real = ctl.work.join(format!("{cmd}-real.tar"));
        std::fs::write(&real, b"old").unwrap();
        let link = ctl.work.join(format!("{cmd}-link.tar"));
        std::os::unix::fs::symlink(format!("{cmd}-real.tar"), &link).unwrap();
        ctl.ok(&[cmd, "small", "-o", link.to_str().unwrap()]);
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(
            std::fs::read(&real).unwrap() == want,
            "{cmd}: the link's target holds the tar"
        );

        let r = ctl.run(&[cmd, "small", "-o", ctl.work.to_str().unwrap()]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("is a directory"), "{cmd}: {}", r.stderr);
    }
}

/// A change to an image file that only copies it up (chmod, an append, a write to one
/// name of a hard-link group, whose other names follow it up) changes no directory's
/// mtime, on every driver, also after a remount (no kernel cache). Before the fix the
/// userspace aufs showed each directory a copy-up had gone through with the time of
/// the change (the copy-up adds entries to branch 0's directories), so exports and
/// commits of the same changes differed from vfs and overlay2 in directory mtimes.
#[test]
fn copy_up_changes_no_directory_mtime() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const T: [(&str, u64); 4] = [
        ("a", 1_600_000_000),
        ("a/b", 1_600_000_100),
        ("a/c", 1_600_000_200),
        ("a/b/deeper", 1_600_000_300),
    ];
    for spec in harness::drivers("breaker3 copy_up_changes_no_directory_mtime") {
        let ctl = Ctl::new(spec.name);
        let mut entries = Vec::new();
        for (d, t) in T {
            entries.push(Entry::dir(d).mtime(t));
        }
        entries.extend([
            Entry::file("a/b/f", b"f\n".to_vec()),
            Entry::file("a/b/deeper/x", b"x\n".to_vec()),
            Entry::file("a/b/g", b"g\n".to_vec()),
            Entry::hardlink("a/c/g2", "a/b/g"),
        ]);
        // Directories after their files in the tar, so their mtimes stand on import.
        entries.rotate_left(T.len());
        let tar = ctl.write_work("dirs.tar", &Layer::new(entries).tar());
        ctl.import(&tar, "dirs");
        ctl.ok(&["create", "c", "dirs"]);
        let check = |m: &Path, when: &str| {
            for (d, t) in T {
                let got = std::fs::metadata(m.join(d)).unwrap().mtime();
                assert_eq!(got, t as i64, "[{}] {when}: mtime of /{d}", spec.name);
            }
        };
        let m = ctl.mount("c");
        check(&m, "image");
        std::fs::set_permissions(m.join("a/b/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("a/b/deeper/x"))
            .unwrap();
        std::io::Write::write_all(&mut f, b"more").unwrap();
        drop(f);
        std::fs::write(m.join("a/b/g"), b"new g\n").unwrap();
        ctl.ok(&["umount", "c"]);
        let m = ctl.mount("c");
        check(&m, "after copy-ups and a remount");
        if spec.name != "overlay2" {
            // overlay2 (index=off) copies one name of a group up alone (README).
            assert_eq!(std::fs::read(m.join("a/c/g2")).unwrap(), b"new g\n");
        }
        ctl.ok(&["umount", "c"]);
    }
}
