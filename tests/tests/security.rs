//! Security of the store as other host users see it, import limits from config.toml,
//! and `check` exit codes (0 clean, 9 repaired, 8 damaged).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use layerctl_tests::fixtures::{Entry, Image, Layer};
use layerctl_tests::harness::{self, Ctl};

/// The unprivileged host user the tests act as.
const OTHER_UID: u32 = 1000;

/// Runs `cmd` as [`OTHER_UID`]; Ok(exit code) or the spawn error (exec refused).
fn as_other(program: &Path, args: &[&Path]) -> std::io::Result<i32> {
    let out = Command::new(program)
        .args(args)
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    Ok(out.status.code().unwrap_or(-1))
}

/// Every path below `dir` (mounts included, symlinks not followed) named `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == name {
            out.push(p.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(find_named(&p, name));
        }
    }
    out
}

/// A setuid-root copy of a real program (`/bin/true`) inside a layer, a world-writable
/// directory beside it: another host user can neither run the one nor list the
/// store's directories, on every driver, while the container is mounted. The same
/// binary copied to a directory that user can reach does run (the test can fail).
#[test]
fn other_users_cannot_reach_layers_or_run_their_setuid_files() {
    if !nix::unistd::geteuid().is_root() {
        assert!(!harness::privileged_required(), "needs root");
        eprintln!("SKIP: needs root");
        return;
    }
    let truebin = fs::read("/bin/true").expect("/bin/true");
    let img = Image {
        name: "suid".into(),
        layers: vec![Layer::new(vec![
            Entry::dir("bin"),
            Entry::file("bin/suid-true", truebin.clone()).mode(0o4755),
            Entry::dir("pub").mode(0o1777),
        ])],
    };
    for d in harness::drivers("security") {
        let ctl = Ctl::new(d.name);
        // Reachable by anyone up to the root itself, so only the store's modes protect.
        fs::set_permissions(ctl.base(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&ctl.work, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(&ctl.root).unwrap();
        fs::set_permissions(&ctl.root, fs::Permissions::from_mode(0o755)).unwrap();
        let tar = ctl.write_work("suid.tar", &img.docker_save());
        ctl.import(&tar, "suid");
        ctl.ok(&["create", "c", "suid"]);
        let mnt = ctl.mount("c");
        assert!(mnt.join("bin/suid-true").is_file());

        // The control: the same setuid binary where the other user can reach it runs.
        let control = ctl.work.join("control-true");
        fs::write(&control, &truebin).unwrap();
        fs::set_permissions(&control, fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(
            as_other(&control, &[]).expect("control exec"),
            0,
            "[{}] the other user cannot even run a reachable copy: the test proves nothing",
            d.name
        );

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&ctl.root), 0o700, "[{}] root", d.name);
        assert_eq!(
            mode(&ctl.root.join(d.name)),
            0o700,
            "[{}] driver home",
            d.name
        );

        let copies = find_named(&ctl.root, "suid-true");
        assert!(
            copies.iter().any(|p| p.starts_with(&mnt)) || !d.mounts(),
            "[{}] the walk did not see the mount: {copies:?}",
            d.name
        );
        assert!(!copies.is_empty());
        for p in &copies {
            match as_other(p, &[]) {
                Err(e) => assert_eq!(
                    e.kind(),
                    ErrorKind::PermissionDenied,
                    "[{}] exec {}: {e}",
                    d.name,
                    p.display()
                ),
                Ok(code) => panic!(
                    "[{}] uid {OTHER_UID} ran the setuid file {} (exit {code})",
                    d.name,
                    p.display()
                ),
            }
        }
        let ls = Path::new("/bin/ls");
        for dir in [
            ctl.root.clone(),
            ctl.root.join(d.name),
            mnt.clone(),
            mnt.join("pub"),
        ] {
            let code = as_other(ls, &[&dir]).expect("spawn ls");
            assert_ne!(
                code,
                0,
                "[{}] uid {OTHER_UID} listed {}",
                d.name,
                dir.display()
            );
        }
        // Sanity: ls as the other user does list a reachable directory.
        assert_eq!(as_other(ls, &[&ctl.work]).unwrap(), 0);
        ctl.ok(&["umount", "c"]);
        ctl.ok(&["rm", "c"]);
        ctl.ok(&["check"]);
    }
}

/// A gzip bomb (and a tar of too many entries) imported with `[limits]` set ends with
/// exit 5 naming the limit, and leaves nothing behind.
#[test]
fn import_limits_from_config_stop_bombs() {
    if !harness::can_run("security", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let cfg = ctl.write_work(
        "limits.toml",
        b"[limits]\nmax_layer_size = 8388608\nmax_layer_entries = 500\n",
    );
    let cfg_s = cfg.to_str().unwrap();
    // 128 MiB of zeros in one file, gzip-compressed in the test: ~130 KiB.
    let zeros = vec![0u8; 128 << 20];
    let bomb = Layer::new(vec![Entry::file("zeros", zeros)]).tar();
    let bomb = ctl.write_work("bomb.tar.gz", &layerctl_tests::fixtures::gzip(&bomb));
    assert!(fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let many: Vec<Entry> = (0..600)
        .map(|i| Entry::file(&format!("f{i}"), Vec::new()))
        .collect();
    let many = ctl.write_work("many.tar", &Layer::new(many).tar());
    ctl.ok(&["check"]);
    let du_before = du(&ctl.root);
    for (file, key) in [(&bomb, "max_layer_size"), (&many, "max_layer_entries")] {
        let r = ctl.run(&[
            "--config",
            cfg_s,
            "import",
            file.to_str().unwrap(),
            "--name",
            "bomb",
        ]);
        assert_eq!(r.code, 5, "{r:?}");
        assert!(r.stderr.contains(key), "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "one line: {r:?}");
        ctl.ok(&["check"]);
        assert_eq!(ctl.json(&["images"]).as_array().unwrap().len(), 0);
        let after = du(&ctl.root);
        assert!(
            after <= du_before + 64 * 1024,
            "{key}: the root grew from {du_before} to {after} bytes"
        );
    }
    // Without the limits file both import.
    ctl.import(&many, "many");
    // A zero limit is a configuration error naming the key.
    let bad = ctl.write_work("bad.toml", b"[limits]\nmax_layer_entries = 0\n");
    let r = ctl.run(&["--config", bad.to_str().unwrap(), "images"]);
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.stderr.contains("max_layer_entries"), "{r:?}");
    let bad = ctl.write_work("bad2.toml", b"[limits]\nmax_size = 1\n");
    let r = ctl.run(&["--config", bad.to_str().unwrap(), "images"]);
    assert_eq!(r.code, 7, "{r:?}");
}

fn du(p: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `check` exit codes: 0 clean, 8 problems, `--repair` 9 when it fixed them all (and
/// lists them), 0 when there was nothing to fix; 8 when problems remain (overlay2: a
/// layer's `lower` names a short link that no layer has, which cannot be re-derived).
#[test]
fn check_exit_codes_clean_repaired_damaged() {
    if !harness::can_run("security", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let tar = ctl.write_work(
        "small.tar",
        &Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/motd", b"hi\n".to_vec()),
        ])
        .tar(),
    );
    ctl.import(&tar, "small");
    ctl.ok(&["check"]);
    ctl.ok(&["check", "--repair"]);
    let v = ctl.json(&["check"]);
    assert_eq!(v["status"], "clean", "{v}");
    let left = ctl.root.join("tmp/import-77-staging");
    fs::create_dir_all(left.join("x")).unwrap();
    let r = ctl.run(&["check"]);
    assert_eq!(r.code, 8, "{r:?}");
    assert!(r.stdout.contains("import-77-staging"), "{r:?}");
    let r = ctl.run(&["check", "--repair"]);
    assert_eq!(r.code, 9, "{r:?}");
    assert!(
        r.stdout.contains("repaired: leftover of interrupted work")
            && r.stdout.contains("import-77-staging"),
        "repair lists what it removed: {r:?}"
    );
    assert!(!left.exists());
    ctl.ok(&["check"]);
    // Nothing was lost.
    ctl.ok(&["create", "c", "small"]);
    let m = ctl.mount("c");
    assert_eq!(fs::read(m.join("etc/motd")).unwrap(), b"hi\n");
    ctl.ok(&["umount", "c"]);

    if !harness::can_run("security", "overlay2") {
        return;
    }
    let ctl = Ctl::new("overlay2");
    let img = Image {
        name: "two".into(),
        layers: vec![
            Layer::new(vec![Entry::file("a", b"a".to_vec())]),
            Layer::new(vec![Entry::file("b", b"b".to_vec())]),
        ],
    };
    let tar = ctl.write_work("two.tar", &img.docker_save());
    ctl.import(&tar, "two");
    let dirs = ctl.image_layer_dirs("two");
    let top = dirs[1].parent().unwrap().to_owned();
    fs::write(top.join("lower"), format!("l/{}", "Q".repeat(26))).unwrap();
    let r = ctl.run(&["check", "--repair"]);
    assert_eq!(r.code, 8, "{r:?}");
    assert!(
        r.stdout.contains("problem:") && r.stdout.contains("lower"),
        "{r:?}"
    );
    let r = ctl.run(&["--json", "check"]);
    assert_eq!(r.code, 8, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["status"], "damaged", "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v}");
    // The image's records are untouched: repair never drops a committed layer for a
    // driver problem it cannot fix.
    assert_eq!(ctl.json(&["layers", "two"]).as_array().unwrap().len(), 2);
}
