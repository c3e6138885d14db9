//! Real work inside a userspace aufs mount: a busybox shell script in a chroot, a large
//! tar extracted into the mount and compared with the same tar extracted on the host
//! filesystem, and a C program built on the mount with the host compiler and run as a
//! non-root uid. Inputs are built here from host tools (busybox-static, GNU tar, cc);
//! a missing tool skips its test unless LAYERCTL_REQUIRE_PRIVILEGED=1.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use driver_aufs::options::ServerCommand;
use driver_aufs::AufsDriver;
use driver_core::conformance::{assert_trees_equal, lid, MtimeCheck};
use driver_core::naive::MountGuard;
use driver_core::{CreateOpts, Driver};

fn driver(home: &Path) -> AufsDriver {
    AufsDriver::with_server(
        home,
        &[("mode".to_owned(), "userspace".to_owned())]
            .into_iter()
            .collect(),
        Some(ServerCommand {
            program: env!("CARGO_BIN_EXE_layerctl-aufs-server").into(),
            args: Vec::new(),
        }),
    )
    .unwrap()
}

/// Whether the test can run: root and `tools` on PATH.
fn can_run(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    let root = nix::unistd::Uid::effective().is_root();
    if root && missing.is_empty() {
        return true;
    }
    assert!(
        !driver_core::privileged_required(),
        "needs root and {missing:?}"
    );
    eprintln!("skipping: needs root and {missing:?}");
    false
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(o.status.success(), "{cmd}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tmp() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("aufs-real-")
        .tempdir()
        .unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// A busybox root filesystem tar (as the shared fixture builds it).
fn busybox_tar(dir: &Path) -> PathBuf {
    let root = dir.join("bbroot");
    let bb = sh("command -v busybox");
    sh(&format!(
        "set -e; r={r}; mkdir -p $r/bin $r/etc $r/tmp $r/root $r/usr/bin; chmod 1777 $r/tmp; \
         cp {bb} $r/bin/busybox; for a in $($r/bin/busybox --list); do \
         [ $a = busybox ] || ln $r/bin/busybox $r/bin/$a; done; \
         printf 'root:x:0:0:root:/root:/bin/sh\\nuser:x:1000:1000::/tmp:/bin/sh\\n' > $r/etc/passwd; \
         tar --numeric-owner -C $r -cf {t} .",
        r = root.display(),
        bb = bb.trim(),
        t = dir.join("busybox.tar").display()
    ));
    dir.join("busybox.tar")
}

#[test]
fn busybox_shell_script_in_a_chroot() {
    if !can_run(&["busybox", "tar", "chroot"]) {
        return;
    }
    let t = tmp();
    let tar = busybox_tar(t.path());
    let d = driver(&t.path().join("aufs"));
    let (img, rw) = (lid("busybox"), lid("ctr"));
    d.create(&img, None, &CreateOpts::default()).unwrap();
    d.apply_diff(&img, None, &mut fs::File::open(&tar).unwrap())
        .unwrap();
    d.create(&rw, Some(&img), &CreateOpts::read_write())
        .unwrap();
    let m = MountGuard::mount(&d, &rw).unwrap();
    fs::write(
        m.path().join("tmp/script.sh"),
        "set -e\n\
         mkdir -p /work/a/b && cd /work\n\
         for i in 1 2 3 4 5; do echo line$i >> a/b/log; done\n\
         test $(wc -l < a/b/log) -eq 5\n\
         sort -r a/b/log | head -1 > last && grep -q line5 last\n\
         sed -i 's/root/ROOT/' /etc/passwd && grep -q '^ROOT:' /etc/passwd\n\
         cp -a /bin/busybox /work/bb && cmp /bin/busybox /work/bb\n\
         ln -s a/b/log lnk && cat lnk | grep -q line1\n\
         mv a/b/log a/moved && test ! -e a/b/log\n\
         rm -r a && test ! -e a\n\
         tar -cf /tmp/w.tar /work && tar -tf /tmp/w.tar | grep -q work/bb\n\
         find / -xdev -name passwd | grep -q /etc/passwd\n\
         echo done\n",
    )
    .unwrap();
    let out = Command::new("chroot")
        .arg(m.path())
        .args(["/bin/sh", "/tmp/script.sh"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
    drop(m);
    let ch: Vec<String> = d
        .changes(&rw, Some(&img))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    for want in ["C /etc/passwd", "A /work/bb", "A /tmp/w.tar"] {
        assert!(ch.iter().any(|c| c == want), "{want} missing from {ch:?}");
    }
    // The image layer is untouched.
    assert!(
        fs::read_to_string(d.layer_dir(&img).unwrap().join("etc/passwd"))
            .unwrap()
            .starts_with("root:")
    );
}

#[test]
fn a_large_tar_extracted_into_the_mount_equals_the_host_extraction() {
    if !can_run(&["tar"]) {
        return;
    }
    let t = tmp();
    // $LAYERCTL_ROOTFS_TAR (e.g. the Debian rootfs fixture), else a tar of host trees.
    let tar = match std::env::var_os("LAYERCTL_ROOTFS_TAR") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = t.path().join("host.tar");
            sh(&format!(
                "tar --numeric-owner --xattrs -cf {} -C / usr/include 2>/dev/null || test -s {}",
                p.display(),
                p.display()
            ));
            p
        }
    };
    let plain = t.path().join("plain");
    fs::create_dir(&plain).unwrap();
    sh(&format!(
        "tar --numeric-owner --xattrs --xattrs-include='*' -xpf {} -C {}",
        tar.display(),
        plain.display()
    ));
    let d = driver(&t.path().join("aufs"));
    let (base, rw) = (lid("base"), lid("ctr"));
    // A lower layer holding part of the tree, so extraction overwrites lower files.
    d.create(&base, None, &CreateOpts::default()).unwrap();
    d.create(&rw, Some(&base), &CreateOpts::read_write())
        .unwrap();
    let m = MountGuard::mount(&d, &rw).unwrap();
    sh(&format!(
        "tar --numeric-owner --xattrs --xattrs-include='*' -xpf {} -C {}",
        tar.display(),
        m.path().display()
    ));
    assert_trees_equal(&plain, m.path(), MtimeCheck::Exact);
    let n = walkdir::WalkDir::new(m.path()).into_iter().count();
    assert!(
        n > 1000,
        "only {n} entries: the input is too small to mean much"
    );
}

#[test]
fn a_c_program_built_on_the_mount_runs_as_another_uid() {
    if !can_run(&["cc"]) {
        return;
    }
    let t = tmp();
    let d = driver(&t.path().join("aufs"));
    for p in [d.home().to_path_buf(), d.home().join("mnt")] {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rw = lid("ctr");
    d.create(&rw, None, &CreateOpts::read_write()).unwrap();
    let m = MountGuard::mount(&d, &rw).unwrap();
    let src = m.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path().join("secret"), "root only").unwrap();
    fs::set_permissions(m.path().join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(
        src.join("probe.c"),
        "#include <errno.h>\n#include <stdio.h>\n#include <string.h>\n#include <unistd.h>\n\
         int main(int argc, char **argv) {\n\
           FILE *f = fopen(argv[1], \"r\");\n\
           printf(\"uid=%d open=%s\\n\", (int)getuid(), f ? \"ok\" : strerror(errno));\n\
           return f ? 0 : 3;\n}\n",
    )
    .unwrap();
    let out = Command::new("cc")
        .args(["-O2", "-o", "probe", "probe.c"])
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let run = |uid: u32, file: &str| {
        let mut c = Command::new(src.join("probe"));
        c.arg(m.path().join(file)).current_dir("/");
        if uid != 0 {
            c.uid(uid).gid(uid);
        }
        c.output().unwrap()
    };
    let as_root = run(0, "secret");
    assert!(as_root.status.success(), "{as_root:?}");
    let as_user = run(1000, "secret");
    assert_eq!(as_user.status.code(), Some(3), "{as_user:?}");
    assert_eq!(
        String::from_utf8_lossy(&as_user.stdout).trim(),
        "uid=1000 open=Permission denied"
    );
    let readable = run(1000, "src/probe.c");
    assert!(readable.status.success(), "{readable:?}");
}
