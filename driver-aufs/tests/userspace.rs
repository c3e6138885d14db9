//! The userspace aufs through real FUSE mounts: copy-up, whiteouts, opaque
//! directories, renames, hard links, permissions for other uids, device nodes, file
//! operations, dead servers and reopened drivers. Every mount is released by a guard;
//! each test checks that no mount and no server is left.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use driver_aufs::options::ServerCommand;
use driver_aufs::AufsDriver;
use driver_core::conformance::{lid, TarBuilder};
use driver_core::naive::MountGuard;
use driver_core::{CreateOpts, Driver, LayerId};

struct Fx {
    d: AufsDriver,
    tmp: tempfile::TempDir,
}

fn server() -> ServerCommand {
    ServerCommand {
        program: env!("CARGO_BIN_EXE_layerctl-aufs-server").into(),
        args: Vec::new(),
    }
}

fn open_driver(home: &Path) -> AufsDriver {
    let opts = [("mode".to_owned(), "userspace".to_owned())]
        .into_iter()
        .collect();
    AufsDriver::with_server(home, &opts, Some(server())).expect("open aufs driver")
}

impl Fx {
    /// None when not root (FUSE mounts with allow_other need it), unless required.
    fn new() -> Option<Fx> {
        if !nix::unistd::Uid::effective().is_root() {
            assert!(!driver_core::privileged_required(), "needs root");
            eprintln!("skipping: needs root");
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("aufs-userspace-")
            .tempdir()
            .unwrap();
        let d = open_driver(&tmp.path().join("aufs"));
        Some(Fx { d, tmp })
    }

    /// Image layers from `tars` (bottom first) and a read-write layer on top.
    fn image(&self, tars: &[Vec<u8>]) -> LayerId {
        let mut parent: Option<LayerId> = None;
        for (i, t) in tars.iter().enumerate() {
            let id = lid(&format!("img{i}"));
            self.d
                .create(&id, parent.as_ref(), &CreateOpts::default())
                .unwrap();
            self.d
                .apply_diff(&id, parent.as_ref(), &mut &t[..])
                .unwrap();
            parent = Some(id);
        }
        let top = lid("rw");
        self.d
            .create(&top, parent.as_ref(), &CreateOpts::read_write())
            .unwrap();
        top
    }

    fn mount(&self, id: &LayerId) -> MountGuard<&AufsDriver> {
        MountGuard::mount(&self.d, id).unwrap()
    }

    fn upper(&self, id: &LayerId) -> PathBuf {
        self.d.layer_dir(id).unwrap()
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let home = self.tmp.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&home),
            "a mount under {home} is left behind"
        );
        for e in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(c) = fs::read(e.path().join("cmdline")) {
                let c = String::from_utf8_lossy(&c);
                assert!(
                    !(c.contains("layerctl-aufs-server") && c.contains(&home)),
                    "server left running: {c}"
                );
            }
        }
    }
}

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().expect("an OS error"),
    }
}

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file_owned("etc/conf", b"lower\n", 0o4755, 1234, 5678)
        .file("etc/other", b"o", 0o644)
        .dir("d", 0o755)
        .file("d/a", b"a", 0o644)
        .dir("d/sub", 0o700)
        .file("d/sub/b", b"b", 0o600)
        .dir("empty", 0o755)
        .file("secret", b"s", 0o600)
        .file("public", b"p", 0o644)
        .symlink("link", "etc/conf")
        .finish()
}

#[test]
fn copy_up_keeps_metadata_data_xattrs_and_inode_number() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let lower = fx.d.layer_dir(&lid("img0")).unwrap();
    xattr::set(lower.join("etc/conf"), "user.k", b"v").unwrap();
    // security.capability: cap_net_bind_service=ep (VFS_CAP_REVISION_2).
    let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xattr::set(lower.join("etc/conf"), "security.capability", &cap).unwrap();
    let before = fs::symlink_metadata(lower.join("etc/conf")).unwrap();
    let m = fx.mount(&top);
    let p = m.path().join("etc/conf");
    let st0 = fs::symlink_metadata(&p).unwrap();
    assert_eq!(
        (st0.uid(), st0.gid(), st0.mode() & 0o7777),
        (1234, 5678, 0o4755)
    );
    assert_eq!(
        xattr::get(&p, "security.capability").unwrap().as_deref(),
        Some(&cap[..])
    );
    // Only lowering: unchanged until something changes it.
    assert!(!fx.upper(&top).join("etc/conf").exists());
    xattr::set(&p, "user.added", b"1").unwrap();
    let up = fx.upper(&top).join("etc/conf");
    let st_up = fs::symlink_metadata(&up).unwrap();
    assert_eq!(
        (st_up.uid(), st_up.gid(), st_up.mode() & 0o7777),
        (1234, 5678, 0o4755)
    );
    assert_eq!(st_up.mtime(), before.mtime());
    assert_eq!(
        xattr::get(&up, "user.k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        xattr::get(&up, "security.capability").unwrap().as_deref(),
        Some(&cap[..])
    );
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"more\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"lower\nmore\n");
    assert_eq!(
        fs::read(lower.join("etc/conf")).unwrap(),
        b"lower\n",
        "lower untouched"
    );
    let st1 = fs::symlink_metadata(&p).unwrap();
    assert_eq!(st1.ino(), st0.ino(), "inode number stable across copy-up");
    // The parent was copied up with its mode; its inode number is stable too.
    assert_eq!(
        fs::symlink_metadata(fx.upper(&top).join("etc"))
            .unwrap()
            .mode()
            & 0o7777,
        0o755
    );
    // chmod, chown, utimens, removexattr of other lower entries.
    fs::set_permissions(m.path().join("public"), fs::Permissions::from_mode(0o640)).unwrap();
    nix::unistd::chown(&m.path().join("etc/other"), Some(7.into()), Some(8.into())).unwrap();
    let t = nix::sys::time::TimeSpec::new(1_000_000_000, 5);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &m.path().join("secret"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    xattr::remove(&p, "user.k").unwrap();
    let md = |r: &str| fs::symlink_metadata(m.path().join(r)).unwrap();
    assert_eq!(md("public").mode() & 0o7777, 0o640);
    assert_eq!((md("etc/other").uid(), md("etc/other").gid()), (7, 8));
    assert_eq!(
        (md("secret").mtime(), md("secret").mtime_nsec()),
        (1_000_000_000, 5)
    );
    assert_eq!(xattr::get(&p, "user.k").unwrap(), None);
    assert_eq!(fs::read(m.path().join("secret")).unwrap(), b"s");
    let up_md = |r: &str| fs::symlink_metadata(fx.upper(&top).join(r)).unwrap();
    assert_eq!(up_md("public").mode() & 0o7777, 0o640);
    assert_eq!(up_md("secret").mtime(), 1_000_000_000);
}

#[test]
fn unlink_and_rmdir_leave_whiteouts_and_mkdir_over_one_is_opaque() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let m = fx.mount(&top);
    let r = m.path();
    let up = fx.upper(&top);
    fs::remove_file(r.join("public")).unwrap();
    assert!(up.join(".wh.public").is_file());
    assert!(!r.join("public").exists());
    fs::remove_dir(r.join("empty")).unwrap();
    assert!(up.join(".wh.empty").is_file());
    assert_eq!(errno(fs::remove_dir(r.join("d"))), libc::ENOTEMPTY);
    fs::remove_dir_all(r.join("d")).unwrap();
    assert!(
        up.join(".wh.d").is_file(),
        "whiteout of the removed directory"
    );
    fs::create_dir(r.join("d")).unwrap();
    assert!(
        up.join("d/.wh..wh..opq").is_file(),
        "new dir over a whiteout is opaque"
    );
    assert!(!up.join(".wh.d").exists());
    assert_eq!(
        fs::read_dir(r.join("d")).unwrap().count(),
        0,
        "nothing below shows"
    );
    fs::write(r.join("public"), b"new").unwrap();
    assert!(
        !up.join(".wh.public").exists(),
        "creating a name drops its whiteout"
    );
    assert_eq!(fs::read(r.join("public")).unwrap(), b"new");
    // A new file in the upper layer removed again leaves no whiteout.
    fs::write(r.join("scratch"), b"x").unwrap();
    fs::remove_file(r.join("scratch")).unwrap();
    assert!(!up.join(".wh.scratch").exists());
    let mut names: Vec<String> = fs::read_dir(r)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "etc", "link", "public", "secret"]);
    // The changes say the same.
    drop(m);
    let ch: Vec<String> =
        fx.d.changes(&top, Some(&lid("img0")))
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
    // driver-core's one exporter: the opaque d deletes each name it hid, one by one,
    // as every driver reports it.
    assert_eq!(ch, ["C /d", "D /d/a", "D /d/sub", "D /empty", "C /public"]);
}

#[test]
fn whiteout_names_cannot_be_made_or_seen() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[TarBuilder::new().file("f", b"f", 0o644).finish()]);
    let m = fx.mount(&top);
    let r = m.path();
    assert_eq!(errno(fs::write(r.join(".wh.f"), b"")), libc::EPERM);
    assert_eq!(errno(fs::create_dir(r.join(".wh.d"))), libc::EPERM);
    assert_eq!(errno(fs::create_dir(r.join(".wh..wh..opq"))), libc::EPERM);
    assert_eq!(
        errno(std::os::unix::fs::symlink("f", r.join(".wh.s"))),
        libc::EPERM
    );
    assert_eq!(errno(fs::rename(r.join("f"), r.join(".wh.g"))), libc::EPERM);
    fs::write(fx.upper(&top).join(".wh.ghost"), b"").unwrap();
    assert_eq!(
        errno(fs::symlink_metadata(r.join(".wh.ghost"))),
        libc::ENOENT
    );
    assert_eq!(fs::read(r.join("f")).unwrap(), b"f");
}

/// A name is creatable only if its whiteout `.wh.<name>` fits `NAME_MAX` (255): at 251
/// bytes every create works and the name can be deleted again from a lower branch; at
/// 252-255 bytes creates fail with `ENAMETOOLONG`, as the delete of such a lower name does.
#[test]
fn names_whose_whiteout_would_not_fit_cannot_be_made() {
    let Some(fx) = Fx::new() else { return };
    let ok = "a".repeat(driver_aufs::fs::MAX_NAME_LEN);
    assert_eq!(ok.len(), 251);
    let long: Vec<String> = (252..=255).map(|n| "b".repeat(n)).collect();
    let mut tar = TarBuilder::new()
        .file("f", b"f", 0o644)
        .file(&ok, b"ok", 0o644);
    for n in &long {
        tar = tar.file(n, b"long", 0o644);
    }
    let top = fx.image(&[tar.finish()]);
    let m = fx.mount(&top);
    let r = m.path();
    // Lower names of 252-255 bytes are shown and read, but cannot be deleted.
    for n in &long {
        assert_eq!(fs::read(r.join(n)).unwrap(), b"long");
        assert_eq!(errno(fs::remove_file(r.join(n))), libc::ENAMETOOLONG);
    }
    // 251 bytes: deleting the lower name leaves its 255-byte whiteout; it can be made again.
    fs::remove_file(r.join(&ok)).unwrap();
    assert!(fx.upper(&top).join(format!(".wh.{ok}")).exists());
    fs::write(r.join(&ok), b"again").unwrap();
    fs::create_dir(r.join("d")).unwrap();
    fs::create_dir(r.join("d").join(&ok)).unwrap();
    std::os::unix::fs::symlink("f", r.join("d").join(format!("{}s", &ok[1..]))).unwrap();
    for n in &long {
        let p = r.join("d").join(n);
        assert_eq!(
            errno(fs::write(&p, b"")),
            libc::ENAMETOOLONG,
            "create {}",
            n.len()
        );
        assert_eq!(
            errno(fs::create_dir(&p)),
            libc::ENAMETOOLONG,
            "mkdir {}",
            n.len()
        );
        assert_eq!(
            errno(std::os::unix::fs::symlink("f", &p)),
            libc::ENAMETOOLONG,
            "symlink {}",
            n.len()
        );
        assert_eq!(
            errno(fs::hard_link(r.join("f"), &p)),
            libc::ENAMETOOLONG,
            "link"
        );
        assert_eq!(
            errno(fs::rename(r.join("f"), &p)),
            libc::ENAMETOOLONG,
            "rename"
        );
        assert_eq!(
            errno(
                nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(std::io::Error::from)
            ),
            libc::ENAMETOOLONG,
            "mkfifo"
        );
    }
    // Nothing of the refused names reached the rw branch; the rest is intact.
    let names: Vec<String> = fs::read_dir(fx.upper(&top).join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 251));
    assert_eq!(fs::read(r.join(&ok)).unwrap(), b"again");
    assert_eq!(fs::read(r.join("f")).unwrap(), b"f");
}

/// The mount's read-ahead is raised from the kernel's 128 KiB default (which caps what
/// INIT can ask for) to `READ_AHEAD_KB` through its bdi in sysfs, and large reads through
/// FUSE's page cache still return the file's bytes.
#[test]
fn the_mount_reads_ahead_four_mib() {
    let Some(fx) = Fx::new() else { return };
    let big: Vec<u8> = (0..(3u32 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let top = fx.image(&[TarBuilder::new().file("big", &big, 0o644).finish()]);
    let m = fx.mount(&top);
    let st = nix::sys::stat::stat(m.path()).unwrap();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(st.st_dev),
        libc::minor(st.st_dev)
    );
    assert_eq!(
        fs::read_to_string(&bdi).unwrap().trim(),
        driver_aufs::READ_AHEAD_KB.to_string()
    );
    assert_eq!(driver_aufs::READ_AHEAD_KB, 4096);
    assert!(fs::read(m.path().join("big")).unwrap() == big);
}

#[test]
fn renames_of_files_and_directories() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let m = fx.mount(&top);
    let r = m.path();
    let up = fx.upper(&top);
    let ino = fs::symlink_metadata(r.join("etc/other")).unwrap().ino();
    fs::rename(r.join("etc/other"), r.join("moved")).unwrap();
    assert_eq!(fs::read(r.join("moved")).unwrap(), b"o");
    assert!(!r.join("etc/other").exists());
    assert!(up.join("etc/.wh.other").is_file());
    assert_eq!(fs::symlink_metadata(r.join("moved")).unwrap().ino(), ino);
    // Over an existing lower file.
    fs::rename(r.join("moved"), r.join("public")).unwrap();
    assert_eq!(fs::read(r.join("public")).unwrap(), b"o");
    // A directory merging lower content: EXDEV (mv copies then).
    assert_eq!(errno(fs::rename(r.join("d"), r.join("d2"))), libc::EXDEV);
    // A directory of the upper layer alone moves, over a lower empty directory too.
    fs::create_dir(r.join("mine")).unwrap();
    fs::write(r.join("mine/x"), b"x").unwrap();
    fs::rename(r.join("mine"), r.join("empty")).unwrap();
    assert_eq!(fs::read(r.join("empty/x")).unwrap(), b"x");
    assert!(up.join("empty/.wh..wh..opq").is_file());
    fs::rename(r.join("empty"), r.join("fresh")).unwrap();
    assert!(up.join(".wh.empty").is_file());
    assert_eq!(fs::read(r.join("fresh/x")).unwrap(), b"x");
    let out = std::process::Command::new("mv")
        .arg(r.join("d"))
        .arg(r.join("d2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fs::read(r.join("d2/sub/b")).unwrap(), b"b");
    assert!(!r.join("d").exists());
}

#[test]
fn hard_links_symlinks_devices_and_fifos() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let m = fx.mount(&top);
    let r = m.path();
    fs::hard_link(r.join("public"), r.join("public2")).unwrap();
    let (a, b) = (
        fs::symlink_metadata(r.join("public")).unwrap(),
        fs::symlink_metadata(r.join("public2")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    fs::write(r.join("public2"), b"via link").unwrap();
    assert_eq!(fs::read(r.join("public")).unwrap(), b"via link");
    std::os::unix::fs::symlink("../etc/conf", r.join("d/sl")).unwrap();
    assert_eq!(
        fs::read_link(r.join("d/sl")).unwrap(),
        Path::new("../etc/conf")
    );
    assert_eq!(fs::read(r.join("d/sl")).unwrap(), b"lower\n");
    assert_eq!(
        fs::read_link(r.join("link")).unwrap(),
        Path::new("etc/conf")
    );
    nix::sys::stat::mknod(
        &r.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let md = fs::symlink_metadata(r.join("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), nix::sys::stat::makedev(1, 3));
    // `dev` semantics: the node opens the device (writes vanish, reads are empty).
    fs::write(r.join("null"), b"gone").unwrap();
    assert_eq!(fs::read(r.join("null")).unwrap(), b"");
    nix::unistd::mkfifo(
        &r.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    assert!(fs::symlink_metadata(r.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn a_hard_linked_lower_file_keeps_its_group_when_copied_up() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[TarBuilder::new()
        .dir("bin", 0o755)
        .file("bin/a", b"group", 0o755)
        .hardlink("bin/b", "bin/a")
        .hardlink("c", "bin/a")
        .finish()]);
    let m = fx.mount(&top);
    let r = m.path();
    let ino = fs::symlink_metadata(r.join("bin/a")).unwrap().ino();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(r.join("bin/b"))
        .unwrap();
    f.write_all(b"+more").unwrap();
    drop(f);
    for n in ["bin/a", "bin/b", "c"] {
        assert_eq!(fs::read(r.join(n)).unwrap(), b"group+more", "{n}");
        let md = fs::symlink_metadata(r.join(n)).unwrap();
        assert_eq!((md.ino(), md.nlink()), (ino, 3), "{n}");
    }
    let up = fx.upper(&top);
    let upi = |n: &str| fs::symlink_metadata(up.join(n)).unwrap().ino();
    assert_eq!(upi("bin/a"), upi("c"), "one inode in the rw branch too");
    drop(m);
    let m = fx.mount(&top);
    assert_eq!(
        fs::read(m.path().join("c")).unwrap(),
        b"group+more",
        "after remount"
    );
}

#[test]
fn other_uids_get_exactly_what_the_modes_allow() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    // Let other uids reach the mount point (a container chroots into it instead).
    for p in [
        fx.tmp.path().to_path_buf(),
        fx.d.home().to_path_buf(),
        fx.d.home().join("mnt"),
    ] {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = fx.mount(&top);
    let r = m.path().to_path_buf();
    fs::create_dir(r.join("tmp")).unwrap();
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let as_user = |script: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .uid(1000)
            .gid(1000)
            .output()
            .unwrap()
    };
    let ok = as_user(&format!("cat {}/public", r.display()));
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(ok.stdout, b"p");
    let denied = as_user(&format!("cat {}/secret", r.display()));
    assert!(!denied.status.success(), "uid 1000 read a 0600 root file");
    let denied = as_user(&format!("echo x >> {}/public", r.display()));
    assert!(!denied.status.success(), "uid 1000 wrote a 0644 root file");
    let denied = as_user(&format!("ls {}/d/sub", r.display()));
    assert!(!denied.status.success(), "uid 1000 listed a 0700 root dir");
    let made = as_user(&format!(
        "echo mine > {}/tmp/u && cat {}/tmp/u",
        r.display(),
        r.display()
    ));
    assert!(made.status.success(), "{made:?}");
    let md = fs::symlink_metadata(r.join("tmp/u")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (1000, 1000),
        "new files belong to the caller"
    );
    assert_eq!(
        fs::read(r.join("secret")).unwrap(),
        b"s",
        "root still reads it"
    );
}

#[test]
fn file_operations_behave_as_on_a_local_filesystem() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let m = fx.mount(&top);
    let r = m.path();
    // O_TRUNC on a lower file.
    fs::write(r.join("etc/conf"), b"short").unwrap();
    assert_eq!(fs::read(r.join("etc/conf")).unwrap(), b"short");
    // Sparse file, large offsets, lseek(SEEK_DATA), fallocate, truncate.
    let p = r.join("sparse");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .mode(0o644)
        .open(&p)
        .unwrap();
    f.seek(SeekFrom::Start(64 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.metadata().unwrap().len(), (64 << 20) + 3);
    let mut buf = vec![1u8; 4096];
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0), "holes read as zeros");
    let data = nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekData).unwrap();
    assert!(data >= 4096, "SEEK_DATA skips the hole (got {data})");
    nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, 8192).unwrap();
    f.set_len(10).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 10);
    drop(f);
    // A large file's content round trips.
    let big: Vec<u8> = (0..(24u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(r.join("big"), &big).unwrap();
    assert!(
        fs::read(r.join("big")).unwrap() == big,
        "large file content"
    );
    // statfs answers for the rw branch's filesystem.
    let s = nix::sys::statvfs::statvfs(r).unwrap();
    assert!(s.blocks() > 0);
}

#[test]
fn a_dead_server_is_detached_and_fsynced_data_survives() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    let mut f = fs::File::create(mnt.join("kept")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    drop(f);
    kill_server(&fx, &top, &mnt);
    assert_eq!(
        nix::sys::statfs::statfs(&mnt).err(),
        Some(nix::errno::Errno::ENOTCONN),
        "a killed server leaves a dead mount"
    );
    assert_eq!(
        fx.d.mount_count(&top).unwrap(),
        0,
        "a dead mount counts as unmounted"
    );
    let m = fx.mount(&top);
    assert_eq!(fs::read(m.path().join("kept")).unwrap(), b"durable");
    assert_eq!(fs::read(m.path().join("etc/conf")).unwrap(), b"lower\n");
    drop(m);
    // cleanup detaches one too.
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    kill_server(&fx, &top, &mnt);
    assert_eq!(
        fx.d.leftovers().unwrap(),
        vec![mnt.clone()],
        "check finds it"
    );
    fx.d.cleanup().unwrap();
    assert!(!driver_core::mountinfo::is_mount_point(&mnt).unwrap());
    assert!(fx.d.leftovers().unwrap().is_empty());
    assert!(mnt.is_dir(), "the layer's mount point stays");
    // remove detaches a dead mount too, instead of calling the layer busy.
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    kill_server(&fx, &top, &mnt);
    fx.d.remove(&top).unwrap();
    assert!(!driver_core::mountinfo::is_mount_point(&mnt).unwrap());
    assert!(!fx.d.exists(&top));
}

#[test]
fn a_reopened_driver_counts_and_unmounts_the_mount_of_another_instance() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    fs::write(mnt.join("x"), b"x").unwrap();
    let other = open_driver(fx.d.home());
    assert_eq!(other.mount_count(&top).unwrap(), 1);
    assert_eq!(other.mount(&top, &Default::default()).unwrap(), mnt);
    assert_eq!(fx.d.mount_count(&top).unwrap(), 2);
    fx.d.unmount(&top).unwrap();
    assert_eq!(fs::read(mnt.join("x")).unwrap(), b"x");
    other.unmount(&top).unwrap();
    assert!(!driver_core::mountinfo::is_mount_point(&mnt).unwrap());
    assert_eq!(fx.d.mount_count(&top).unwrap(), 0);
    assert!(matches!(fx.d.remove(&top), Ok(())));
}

/// An `Fx` whose driver runs its servers with `passthrough = false` (`no_open`).
fn no_open_fx() -> Option<Fx> {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(!driver_core::privileged_required(), "needs root");
        return None;
    }
    let tmp = tempfile::Builder::new()
        .prefix("aufs-no-open-")
        .tempdir()
        .unwrap();
    let opts = [("mode", "userspace"), ("passthrough", "false")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let d = AufsDriver::with_server(&tmp.path().join("aufs"), &opts, Some(server())).unwrap();
    Some(Fx { d, tmp })
}

#[test]
fn without_opens_a_large_lower_file_open_for_reading_is_copied_up_by_a_write_open() {
    let Some(fx) = no_open_fx() else { return };
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
    let top = fx.image(&[TarBuilder::new().file("big", &big, 0o644).finish()]);
    let m = fx.mount(&top);
    let p = m.path().join("big");
    let ino = fs::metadata(&p).unwrap().ino();
    let mut reader = fs::File::open(&p).unwrap();
    let mut head = vec![0u8; 4096];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head[..], big[..4096]);
    // The write open copies the file up while the reader still has the lower copy
    // open (with FUSE passthrough on the lower file this was EBUSY).
    let mut w = fs::OpenOptions::new().append(true).open(&p).unwrap();
    w.write_all(b"tail").unwrap();
    w.sync_all().unwrap();
    // The reader goes on with the same bytes, and sees the appended tail (one inode).
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), big.len() - 4096 + 4);
    assert_eq!(rest[..rest.len() - 4], big[4096..]);
    assert_eq!(&rest[rest.len() - 4..], b"tail");
    drop((reader, w));
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), big.len() + 4);
    assert_eq!(&got[big.len()..], b"tail");
    assert_eq!(fs::metadata(&p).unwrap().ino(), ino, "inode number kept");
    let upper = fs::read(fx.upper(&top).join("big")).unwrap();
    assert_eq!(upper, got, "copied up into the rw branch");
    let lower = fs::read(fx.d.layer_dir(&lid("img0")).unwrap().join("big")).unwrap();
    assert_eq!(lower, big, "the lower copy is untouched");
    // mmap through the mount sees the same bytes.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import mmap,sys; f=open('{}','rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.write(str(m[1000])+' '+m[-4:].decode())",
            p.display()
        ))
        .output();
    if let Ok(o) = out {
        if o.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                format!("{} tail", big[1000])
            );
        }
    }
}

/// A driver home reached through a symlink (`/var/lib/x -> /data/x`): the kernel lists
/// the mount under the resolved path, so the driver cannot see it as live. The mount
/// may fail, but must leave no FUSE mount and no server behind (before the fix the
/// failed mount left both, and every retry stacked one more; the Fx guard checks).
/// The CLI resolves its root, so through `layerctl` such a mount works.
#[test]
fn a_failed_mount_through_a_symlinked_home_leaves_no_mount_or_server() {
    let Some(fx) = Fx::new() else { return };
    let real = fx.tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, fx.tmp.path().join("link")).unwrap();
    let d = open_driver(&fx.tmp.path().join("link/aufs"));
    let img = lid("img0");
    d.create(&img, None, &CreateOpts::default()).unwrap();
    d.apply_diff(&img, None, &mut &base_tar()[..]).unwrap();
    let top = lid("rw");
    d.create(&top, Some(&img), &CreateOpts::read_write())
        .unwrap();
    for _ in 0..2 {
        match MountGuard::mount(&d, &top) {
            Ok(m) => assert_eq!(fs::read(m.path().join("etc/other")).unwrap(), b"o"),
            Err(e) => assert!(e.to_string().contains("mount"), "{e}"),
        }
    }
    d.remove(&top).unwrap();
}

#[test]
fn open_files_outlive_their_names() {
    for fx in [Fx::new(), no_open_fx()].into_iter().flatten() {
        open_files_outlive_their_names_on(fx);
    }
}

fn open_files_outlive_their_names_on(fx: Fx) {
    let top = fx.image(&[base_tar()]);
    let m = fx.mount(&top);
    // A new file, open read-write, unlinked, then used (tmpfile pattern).
    let p = m.path().join("tmp");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.write_all(b"before").unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    f.write_all(b" after").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 12, "fstat of an unlinked file");
    let mut back = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before after");
    f.set_len(3).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 3);
    drop(f);
    // A lower file open for reading, then whited out: the reader goes on.
    let q = m.path().join("etc/other");
    let mut r = fs::File::open(&q).unwrap();
    fs::remove_file(&q).unwrap();
    assert!(!q.exists());
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "o");
    assert!(fx.upper(&top).join("etc/.wh.other").exists());
    // A name reused at once is a new file.
    fs::write(&p, b"new").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new");
}

#[test]
fn with_passthrough_a_write_open_copies_up_under_an_open_reader() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(!driver_core::privileged_required(), "needs root");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("aufs-passthrough-")
        .tempdir()
        .unwrap();
    let opts = [("mode", "userspace"), ("passthrough", "true")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let d = AufsDriver::with_server(&tmp.path().join("aufs"), &opts, Some(server())).unwrap();
    let fx = Fx { d, tmp };
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let top = fx.image(&[TarBuilder::new().file("big", &big, 0o644).finish()]);
    let m = fx.mount(&top);
    let p = m.path().join("big");
    let mut reader = fs::File::open(&p).unwrap();
    let mut head = vec![0u8; 4096];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head[..], big[..4096]);
    // The kernel holds the lower file as the inode's passthrough backing file while
    // the reader is open; the write open still works (it was EBUSY).
    let mut w = fs::OpenOptions::new().append(true).open(&p).unwrap();
    w.write_all(b"tail").unwrap();
    w.sync_all().unwrap();
    // The reader keeps the lower copy, as on overlayfs.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest[..], big[4096..]);
    drop((reader, w));
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), big.len() + 4);
    assert_eq!(&got[big.len()..], b"tail");
    assert_eq!(fs::read(fx.upper(&top).join("big")).unwrap(), got);
    let lower = fs::read(fx.d.layer_dir(&lid("img0")).unwrap().join("big")).unwrap();
    assert_eq!(lower, big, "the lower copy is untouched");
    // And again, now that the file is in the rw branch.
    let r2 = fs::File::open(&p).unwrap();
    let mut w2 = fs::OpenOptions::new().append(true).open(&p).unwrap();
    w2.write_all(b"!").unwrap();
    drop((r2, w2));
    assert_eq!(fs::read(&p).unwrap().len(), big.len() + 5);
}

/// A copy-up cut short leaves `.wh..wh.cpup.<pid>.<n>` in the branch: hidden by the
/// union, not a leftover while its server runs, listed by `leftovers` (`layerctl
/// check`) once the server is dead, removed by the next mount and by `repair`.
#[test]
fn copy_up_temps_of_dead_servers_are_found_and_removed() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    // A real copy-up puts etc/ into the branch; then a temp as a copy-up killed
    // mid-way leaves it.
    fs::write(mnt.join("etc/other"), b"changed").unwrap();
    let pid: i32 = fs::read_to_string(fx.tmp.path().join("aufs/run/rw.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let temp = fx.upper(&top).join(format!(".wh..wh.cpup.{pid}.0"));
    let deep = fx.upper(&top).join(format!("etc/.wh..wh.cpup.{pid}.7"));
    fs::write(&temp, b"partial").unwrap();
    fs::write(&deep, b"partial").unwrap();
    let names: Vec<_> = fs::read_dir(mnt.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("cpup")), "{names:?}");
    assert!(
        fx.d.leftovers().unwrap().is_empty(),
        "the temp of a live server is a copy-up in progress"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut reported = Vec::new();
    for _ in 0..1000 {
        reported = fx.d.leftovers().unwrap();
        if reported.contains(&temp) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut want = vec![mnt.clone(), temp.clone(), deep.clone()];
    want.sort();
    assert_eq!(
        reported, want,
        "check reports the dead mount and both temps"
    );
    // The next mount detaches the dead one and sweeps the temps of its server.
    let m = fx.mount(&top);
    assert!(!temp.exists() && !deep.exists());
    assert_eq!(fs::read(m.path().join("etc/other")).unwrap(), b"changed");
    assert!(fx.d.leftovers().unwrap().is_empty());
    drop(m);
    // One found by `check` in any layer (a dead process's, made by hand here) goes
    // with `repair`.
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let dead = c.id();
    c.wait().unwrap();
    let lower = fx
        .upper(&lid("img0"))
        .join(format!("d/sub/.wh..wh.cpup.{dead}.3"));
    fs::write(&lower, b"partial").unwrap();
    assert_eq!(fx.d.leftovers().unwrap(), vec![lower.clone()]);
    fx.d.repair().unwrap();
    assert!(!lower.exists());
    assert!(fx.d.leftovers().unwrap().is_empty());
    assert_eq!(
        fs::read(fx.upper(&lid("img0")).join("d/sub/b")).unwrap(),
        b"b"
    );
}

/// Directories are listed without OPENDIR (`no_opendir`): a walk that removes what it
/// reads, page after page, still sees every entry once (each READDIRPLUS page of one
/// walk comes from the listing taken at offset 0), and a new walk sees the change.
#[test]
fn a_walk_that_removes_as_it_reads_sees_every_entry_once() {
    let Some(fx) = Fx::new() else { return };
    let mut t = TarBuilder::new().dir("big", 0o755);
    for i in 0..1500 {
        t = t.file(&format!("big/lower-{i:04}-with-a-long-name"), b"x", 0o644);
    }
    let top = fx.image(&[t.finish()]);
    let m = fx.mount(&top);
    let dir = m.path().join("big");
    for i in 0..500 {
        fs::write(dir.join(format!("upper-{i:04}")), b"u").unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(seen.insert(name.clone()), "{name} listed twice");
        fs::remove_file(e.path()).unwrap();
    }
    assert_eq!(seen.len(), 2000, "every entry once");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "a new walk sees none"
    );
    fs::remove_dir(&dir).unwrap();
    assert!(!dir.exists());
}

/// Reads one page of `getdents64` (one call, at most `buf` bytes) from directory fd
/// `fd`: the names in it, or an empty list at the end.
fn getdents_page(fd: &std::os::fd::OwnedFd, buf: usize) -> Vec<String> {
    let mut b = vec![std::mem::MaybeUninit::<u8>::uninit(); buf];
    let mut dir = rustix::fs::RawDir::new(fd, &mut b);
    let mut out = Vec::new();
    // The first `next` makes the one getdents64 call; the page ends when its buffer is.
    while let Some(e) = dir.next() {
        let e = e.expect("getdents64");
        out.push(e.file_name().to_string_lossy().into_owned());
        if dir.is_buffer_empty() {
            break;
        }
    }
    out
}

/// Two walks of one directory at once, with the directory changed between them (no
/// OPENDIR: the server keeps one listing per directory, and the later walk's fresh
/// listing serves the earlier walk's remaining pages): the earlier walk still lists
/// every name that was there all along exactly once (POSIX readdir), because offsets
/// are per-name cookies, not positions.
#[test]
fn two_walks_of_a_changing_directory_see_every_unchanged_name_once() {
    let Some(fx) = Fx::new() else { return };
    let mut t = TarBuilder::new().dir("d", 0o755);
    for i in 0..600 {
        t = t.file(&format!("d/lower-{i:04}"), b"x", 0o644);
    }
    let top = fx.image(&[t.finish()]);
    let m = fx.mount(&top);
    let dir = m.path().join("d");
    let open = || {
        nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap()
    };
    let a = open();
    let mut seen_a: Vec<String> = getdents_page(&a, 1024);
    assert!(
        !seen_a.is_empty() && seen_a.len() < 600,
        "a first page only"
    );
    // Change the directory: drop 100 names (whiteouts), add 100; then a second walk
    // starts (a fresh listing) and reads a page.
    for i in (0..600).step_by(6) {
        fs::remove_file(dir.join(format!("lower-{i:04}"))).unwrap();
    }
    for i in 0..100 {
        fs::write(dir.join(format!("new-{i:04}")), b"n").unwrap();
    }
    let b = open();
    assert!(!getdents_page(&b, 1024).is_empty());
    loop {
        let page = getdents_page(&a, 1024);
        if page.is_empty() {
            break;
        }
        seen_a.extend(page);
    }
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for n in &seen_a {
        *count.entry(n.as_str()).or_default() += 1;
    }
    for i in 0..600 {
        let name = format!("lower-{i:04}");
        let c = count.get(name.as_str()).copied().unwrap_or(0);
        if i % 6 == 0 {
            assert!(c <= 1, "{name} (removed during the walk) listed {c} times");
        } else {
            assert_eq!(c, 1, "{name} (unchanged) listed {c} times");
        }
    }
    for (n, c) in &count {
        assert_eq!(*c, 1, "{n} listed {c} times");
    }
}

/// libc's readdir (what `ls -a`, shells' `.*` globs and `opendir` users see) lists "."
/// and ".." in every directory of the mount, with the inode numbers stat gives, as on
/// vfs and overlay2. READDIRPLUS sent them with d_ino 0, which glibc skips as deleted
/// entries, so they were missing on aufs alone.
#[test]
fn readdir_lists_dot_and_dotdot_with_their_inode_numbers() {
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let m = fx.mount(&top);
    fs::create_dir(m.path().join("d/new")).unwrap();
    for rel in ["", "etc", "d", "d/sub", "d/new"] {
        let dir = m.path().join(rel);
        let mut d = nix::dir::Dir::open(
            &dir,
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let entries: std::collections::HashMap<String, u64> = d
            .iter()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), e.ino())
            })
            .collect();
        assert_eq!(
            entries.get(".").copied(),
            Some(fs::metadata(&dir).unwrap().ino()),
            "'.' of /{rel}: {entries:?}"
        );
        assert!(entries.contains_key(".."), "'..' of /{rel}: {entries:?}");
        if !rel.is_empty() {
            assert_eq!(
                entries[".."],
                fs::metadata(dir.parent().unwrap()).unwrap().ino(),
                "'..' of /{rel}"
            );
        }
    }
}

/// Kills the server of `id` (its pid file) and waits until its mount at `mnt` is dead.
fn kill_server(fx: &Fx, id: &LayerId, mnt: &Path) {
    let pid: i32 = fs::read_to_string(fx.tmp.path().join(format!("aufs/run/{id}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..1000 {
        if nix::sys::statfs::statfs(mnt).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the killed server's mount still answers");
}

/// mount, unmount, counts, create, remove, cleanup and leftovers ask "mounted? dead?"
/// of the mount point itself (statx, statfs), never of the whole mount table: on a
/// host with thousands of mounts each table read parses all of them (BENCHMARKS.md,
/// "mount-table reads"). Before, a mount read it 3 times, an unmount 1, a remove 4, and
/// cleanup and leftovers once per layer each. Dead servers are still told apart.
#[test]
fn mount_paths_read_no_mount_table_and_still_see_dead_servers() {
    use driver_core::mountinfo::{is_mount_point, reads_by_this_thread};
    let Some(fx) = Fx::new() else { return };
    let top = fx.image(&[base_tar()]);
    let before = reads_by_this_thread();
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    assert_eq!(fx.d.mount(&top, &Default::default()).unwrap(), mnt);
    assert_eq!(fx.d.mount_count(&top).unwrap(), 2);
    assert_eq!(fs::read(mnt.join("etc/other")).unwrap(), b"o");
    assert!(fx.d.leftovers().unwrap().is_empty());
    fx.d.cleanup().unwrap();
    assert!(matches!(
        fx.d.remove(&top),
        Err(driver_core::DriverError::Busy { .. })
    ));
    fx.d.unmount(&top).unwrap();
    assert_eq!(fx.d.mount_count(&top).unwrap(), 1);
    fx.d.unmount(&top).unwrap();
    assert_eq!(fx.d.mount_count(&top).unwrap(), 0);
    let other = lid("other");
    fx.d.create(&other, Some(&lid("img0")), &CreateOpts::read_write())
        .unwrap();
    fx.d.remove(&other).unwrap();
    assert_eq!(
        reads_by_this_thread() - before,
        0,
        "the mount paths read /proc/self/mountinfo"
    );
    assert!(!is_mount_point(&mnt).unwrap());

    // A dead server: counted 0, listed as a leftover, detached by cleanup; and by
    // mount (which then mounts afresh) and remove. Still no table read.
    let before = reads_by_this_thread();
    let mnt = fx.d.mount(&top, &Default::default()).unwrap();
    kill_server(&fx, &top, &mnt);
    // statx of a dead mount point: ENOTCONN (Disconnected), or the cached attributes
    // (Mounted, and statfs then says dead); never "not mounted".
    let st = driver_core::mountinfo::mount_root_state(&mnt).unwrap();
    assert_ne!(st, driver_core::mountinfo::MountRootState::NotMounted);
    assert_eq!(fx.d.mount_count(&top).unwrap(), 0, "dead counts 0");
    assert_eq!(fx.d.leftovers().unwrap(), vec![mnt.clone()]);
    fx.d.cleanup().unwrap();
    assert!(fx.d.leftovers().unwrap().is_empty());
    let after_cleanup = reads_by_this_thread();
    assert!(!is_mount_point(&mnt).unwrap(), "cleanup detached it");
    let before2 = reads_by_this_thread();
    fx.d.mount(&top, &Default::default()).unwrap();
    kill_server(&fx, &top, &mnt);
    let again = fx.d.mount(&top, &Default::default()).unwrap();
    assert_eq!(fs::read(again.join("etc/other")).unwrap(), b"o");
    assert_eq!(fx.d.mount_count(&top).unwrap(), 1, "mounted afresh");
    kill_server(&fx, &top, &mnt);
    fx.d.remove(&top).unwrap();
    assert!(!fx.d.exists(&top));
    assert_eq!(
        (after_cleanup - before) + (reads_by_this_thread() - before2),
        0,
        "dead-server paths read /proc/self/mountinfo"
    );
    assert!(!is_mount_point(&mnt).unwrap(), "remove detached it");
}
