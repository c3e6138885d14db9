//! The CLI contract (docs: /README.md "CLI"): exit codes, `--json` shapes, config file
//! precedence, `info`, reference-counted mounts, a root owned by another driver.

use std::process::Command;

use layerctl_tests::fixtures::{Entry, Layer};
use layerctl_tests::harness::{self, is_digest, Ctl, Run};
use serde_json::Value;

fn small_tar(ctl: &Ctl) -> std::path::PathBuf {
    ctl.write_work(
        "small.tar",
        &Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/motd", b"hello\n".to_vec()),
        ])
        .tar(),
    )
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[test]
fn exit_codes() {
    if !harness::can_run("contract", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let tar = small_tar(&ctl);

    // 3: not found (file, image, container).
    ctl.fails(&["import", "/nonexistent/layerctl-e2e.tar"], 3);
    ctl.fails(&["create", "c1", "no-such-image"], 3);
    ctl.fails(&["mount", "no-such-container"], 3);
    ctl.fails(&["umount", "no-such-container"], 3);
    ctl.fails(&["rm", "no-such-container"], 3);
    ctl.fails(&["rmi", "no-such-image"], 3);
    ctl.fails(&["layers", "no-such-image"], 3);

    // 2: usage.
    let r = ctl.run(&["frobnicate"]);
    assert_eq!(r.code, 2, "unknown subcommand: {r:?}");

    let id = ctl.import(&tar, "small");
    // Image by name, full id with and without sha256:, unique prefix.
    ctl.ok(&["create", "by-name", "small"]);
    ctl.ok(&["create", "by-id", id.as_str()]);
    ctl.ok(&["create", "by-hex", id.trim_start_matches("sha256:")]);
    ctl.ok(&[
        "create",
        "by-prefix",
        &id.trim_start_matches("sha256:")[..12],
    ]);

    // 4: conflicts.
    ctl.fails(&["create", "by-name", "small"], 4);
    ctl.fails(&["rmi", "small"], 4);
    let mnt = ctl.mount("by-name");
    ctl.fails(&["rm", "by-name"], 4);
    assert!(
        mnt.join("etc/motd").exists(),
        "refused rm left the mount alone"
    );
    ctl.ok(&["rm", "--force", "by-name"]);
    assert!(harness::mounts_under(&ctl.root).is_empty() || !ctl.spec.mounts());
    for c in ["by-id", "by-hex", "by-prefix"] {
        ctl.ok(&["rm", c]);
    }
    ctl.ok(&["rmi", "small"]);
    ctl.fails(&["rmi", "small"], 3);

    // Bad container names are refused (usage or invalid input), never create paths.
    ctl.import(&tar, "small");
    let r = ctl.run(&["create", "../evil", "small"]);
    assert_ne!(r.code, 0, "container name ../evil accepted");
    assert!(!ctl.root.join("evil").exists());

    // 5: unknown format.
    let junk = ctl.write_work(
        "junk.bin",
        b"this is not a tar, not gzip, not zstd, not an OCI layout",
    );
    ctl.fails(&["import".as_ref(), junk.as_os_str()], 5);
}

#[test]
fn json_shapes() {
    if !harness::can_run("contract", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    assert_eq!(ctl.json(&["images"]), serde_json::json!([]));
    assert_eq!(ctl.json(&["layers"]), serde_json::json!([]));
    assert_eq!(ctl.json(&["ps"]), serde_json::json!([]));
    let tar = small_tar(&ctl);
    let id = ctl.import(&tar, "small");
    ctl.ok(&["create", "c1", "small"]);

    let images = ctl.json(&["images"]);
    let img = &images[0];
    assert_eq!(keys(img), ["id", "layers", "names", "size", "top_layer"]);
    assert_eq!(img["id"], id.as_str());
    assert_eq!(img["names"], serde_json::json!(["small"]));
    assert_eq!(img["layers"], 1);
    assert!(is_digest(img["top_layer"].as_str().unwrap()));
    assert!(
        img["size"].as_u64().unwrap() >= 6,
        "size counts content bytes"
    );

    let layers = ctl.json(&["layers"]);
    let l = &layers[0];
    assert_eq!(
        keys(l),
        ["cache_id", "chain_id", "diff_id", "parent", "size"]
    );
    assert_eq!(l["parent"], Value::Null);
    assert_eq!(l["chain_id"], img["top_layer"]);

    let ps = ctl.json(&["ps"]);
    let c = &ps[0];
    assert_eq!(
        keys(c),
        [
            "image",
            "init_id",
            "mount_count",
            "mount_id",
            "mountpoint",
            "name"
        ]
    );
    assert_eq!(c["name"], "c1");
    assert_eq!(c["image"], id.as_str());
    assert_eq!(c["mount_count"], 0);
    assert_eq!(c["mountpoint"], Value::Null);
    let mount_id = c["mount_id"].as_str().unwrap();
    assert_eq!(c["init_id"], format!("{mount_id}-init").as_str());
    let mnt = ctl.mount("c1");
    let ps = ctl.json(&["ps"]);
    assert_eq!(ps[0]["mount_count"], 1);
    assert_eq!(ps[0]["mountpoint"], mnt.to_string_lossy().as_ref());
    ctl.ok(&["umount", "c1"]);

    let info = ctl.json(&["info"]);
    assert_eq!(
        keys(&info),
        ["backing_filesystem", "driver", "drivers", "root", "status"]
    );
    assert_eq!(info["driver"], "vfs");
    assert_eq!(info["root"], ctl.root.to_string_lossy().as_ref());
    let drivers = info["drivers"].as_array().unwrap();
    let names: Vec<&str> = drivers
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"vfs") && names.contains(&"overlay2"),
        "{names:?}"
    );
    for d in drivers {
        assert_eq!(keys(d), ["name", "reason", "supported"]);
        if d["supported"] == false {
            assert!(
                d["reason"].is_string(),
                "unsupported driver needs a reason: {d}"
            );
        }
    }
    let vfs = drivers.iter().find(|d| d["name"] == "vfs").unwrap();
    assert_eq!(vfs["supported"], true);
    assert!(info["status"].is_array());

    // Human output of info lists the drivers too.
    let text = ctl.ok(&["info"]);
    assert!(text.contains("vfs") && text.contains("overlay2"), "{text}");
    assert!(text.contains(ctl.root.to_string_lossy().as_ref()));
}

/// A `layerctl` command with only the given environment/config (no --root/--driver).
fn bare(ctl: &Ctl) -> Command {
    let mut c = Command::new(&ctl.bin);
    c.env_remove("LAYERCTL_CONFIG");
    c
}

fn run(mut c: Command) -> Run {
    c.output().expect("spawn").into()
}

#[test]
fn config_precedence_and_errors() {
    if !harness::can_run("contract", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let root_a = ctl.base().join("root-a");
    let root_b = ctl.base().join("root-b");
    let cfg_a = ctl.write_work(
        "a.toml",
        format!("root = {:?}\ndriver = \"vfs\"\n", root_a.to_str().unwrap()).as_bytes(),
    );
    let cfg_b = ctl.write_work(
        "b.toml",
        format!("root = {:?}\ndriver = \"vfs\"\n", root_b.to_str().unwrap()).as_bytes(),
    );

    let info_root = |r: Run| -> String {
        assert_eq!(r.code, 0, "{r:?}");
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        v["root"].as_str().unwrap().to_string()
    };
    // $LAYERCTL_CONFIG alone.
    let mut c = bare(&ctl);
    c.env("LAYERCTL_CONFIG", &cfg_b).args(["--json", "info"]);
    assert_eq!(info_root(run(c)), root_b.to_str().unwrap());
    // --config beats $LAYERCTL_CONFIG.
    let mut c = bare(&ctl);
    c.env("LAYERCTL_CONFIG", &cfg_b)
        .arg("--config")
        .arg(&cfg_a)
        .args(["--json", "info"]);
    assert_eq!(info_root(run(c)), root_a.to_str().unwrap());
    // --root beats both.
    let mut c = bare(&ctl);
    c.env("LAYERCTL_CONFIG", &cfg_b)
        .arg("--config")
        .arg(&cfg_a)
        .arg("--root")
        .arg(&ctl.root);
    c.args(["--json", "info"]);
    assert_eq!(info_root(run(c)), ctl.root.to_str().unwrap());

    // driver_options tables are accepted.
    let cfg_opts = ctl.write_work(
        "opts.toml",
        format!(
            "root = {:?}\n[driver_options.vfs]\n",
            root_a.to_str().unwrap()
        )
        .as_bytes(),
    );
    let mut c = bare(&ctl);
    c.arg("--config")
        .arg(&cfg_opts)
        .args(["--driver", "vfs", "info"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");

    // 7: unknown key, bad value; the message names the key.
    for (name, body, key) in [
        ("bogus.toml", "bogus_key = 1\n", "bogus_key"),
        ("badval.toml", "root = 42\n", "root"),
        ("baddriver.toml", "driver = [1, 2]\n", "driver"),
    ] {
        let f = ctl.write_work(name, body.as_bytes());
        let mut c = bare(&ctl);
        c.arg("--config")
            .arg(&f)
            .arg("--root")
            .arg(&ctl.root)
            .arg("info");
        let r = run(c);
        assert_eq!(r.code, 7, "{name}: {r:?}");
        assert!(
            r.stderr.contains(key),
            "{name}: message must name `{key}`: {}",
            r.stderr
        );
        let mut c = bare(&ctl);
        c.env("LAYERCTL_CONFIG", &f)
            .arg("--root")
            .arg(&ctl.root)
            .arg("info");
        assert_eq!(run(c).code, 7, "{name} via $LAYERCTL_CONFIG");
    }
    // A missing explicitly named config file is an error (not silently ignored).
    let mut c = bare(&ctl);
    c.arg("--config")
        .arg(ctl.work.join("missing.toml"))
        .arg("--root")
        .arg(&ctl.root)
        .arg("info");
    let r = run(c);
    assert!(r.code == 7 || r.code == 3, "missing --config file: {r:?}");
    assert!(r.stderr.contains("missing.toml"), "{}", r.stderr);
}

#[test]
fn root_of_another_driver_is_refused() {
    if !harness::can_run("contract", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let tar = small_tar(&ctl);
    ctl.import(&tar, "small");
    assert_eq!(
        std::fs::read_to_string(ctl.root.join("driver"))
            .unwrap()
            .trim(),
        "vfs"
    );
    let mut other = Command::new(&ctl.bin);
    other
        .arg("--root")
        .arg(&ctl.root)
        .args(["--driver", "overlay2", "images"]);
    other.env("LAYERCTL_CONFIG", ctl.work.join("empty-config.toml"));
    let r = run(other);
    assert_eq!(r.code, 6, "{r:?}");
    assert!(
        r.stderr.contains("vfs"),
        "message names the owning driver: {}",
        r.stderr
    );
    // Without --driver the root's own driver is used.
    let mut c = Command::new(&ctl.bin);
    c.arg("--root").arg(&ctl.root).args(["--json", "images"]);
    c.env("LAYERCTL_CONFIG", ctl.work.join("empty-config.toml"));
    let r = run(c);
    assert_eq!(r.code, 0, "{r:?}");
}

fn refcount_on(driver: &str) {
    let ctl = Ctl::new(driver);
    let tar = small_tar(&ctl);
    ctl.import(&tar, "small");
    ctl.ok(&["create", "c1", "small"]);
    let m1 = ctl.mount("c1");
    let m2 = ctl.mount("c1");
    assert_eq!(m1, m2, "second mount returns the same path");
    assert_eq!(ctl.json(&["ps"])[0]["mount_count"], 2);
    if ctl.spec.mounts() {
        let n = harness::mounts_under(&m1)
            .iter()
            .filter(|p| **p == m1)
            .count();
        assert_eq!(n, 1, "mounted once in the kernel despite two references");
    }
    ctl.ok(&["umount", "c1"]);
    assert_eq!(ctl.json(&["ps"])[0]["mount_count"], 1);
    assert!(
        m1.join("etc/motd").exists(),
        "still readable after the first umount"
    );
    ctl.assert_mounted(&m1, true);
    ctl.ok(&["umount", "c1"]);
    assert_eq!(ctl.json(&["ps"])[0]["mount_count"], 0);
    assert_eq!(
        harness::mount_fstype(&m1),
        None,
        "gone after the last umount"
    );
    assert!(harness::mounts_under(ctl.base()).is_empty());
    // One more umount than mounts is not a crash: either ok (no-op) or a clear error.
    let r = ctl.run(&["umount", "c1"]);
    assert!(r.code == 0 || r.code == 4, "extra umount: {r:?}");
    assert_eq!(ctl.json(&["ps"])[0]["mount_count"], 0);

    // rm --force drops every reference.
    ctl.mount("c1");
    ctl.mount("c1");
    ctl.ok(&["rm", "--force", "c1"]);
    assert!(
        harness::mounts_under(ctl.base()).is_empty(),
        "rm --force left a mount"
    );
    assert_eq!(ctl.json(&["ps"]), serde_json::json!([]));
    ctl.ok(&["rmi", "small"]);
    ctl.ok(&["check"]);
}

#[test]
fn refcounted_mount_every_driver() {
    for d in harness::drivers("refcount") {
        refcount_on(d.name);
    }
}

#[test]
fn check_reports_and_repairs() {
    if !harness::can_run("check", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let tar = small_tar(&ctl);
    ctl.import(&tar, "small");
    ctl.ok(&["check"]);
    // An orphan layer dir (a crash between driver create and metadata commit).
    let orphan = ctl.root.join("vfs/dir").join("ab".repeat(32));
    std::fs::create_dir_all(orphan.join("etc")).unwrap();
    let r = ctl.run(&["check"]);
    assert_eq!(r.code, 8, "orphan layer dir not reported: {r:?}");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains(&"ab".repeat(32)),
        "problem names the dir: {r:?}"
    );
    let r = ctl.run(&["check", "--repair"]);
    assert_eq!(r.code, 9, "repaired: {r:?}");
    assert!(
        r.stdout.contains(&"ab".repeat(32)),
        "lists what it removed: {r:?}"
    );
    ctl.ok(&["check"]);
    assert!(!orphan.exists(), "repair removed the orphan");
    // The image survived the repair.
    ctl.ok(&["create", "c", "small"]);
    let m = ctl.mount("c");
    assert_eq!(
        std::fs::read_to_string(m.join("etc/motd")).unwrap(),
        "hello\n"
    );
    ctl.ok(&["umount", "c"]);
}

#[test]
fn import_from_stdin() {
    if !harness::can_run("stdin", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let tar = small_tar(&ctl);
    let from_file = ctl.import(&tar, "f");
    let out = ctl
        .cmd()
        .args(["import", "-", "--name", "s"])
        .stdin(std::fs::File::open(&tar).unwrap())
        .output()
        .unwrap();
    let r: Run = out.into();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.lines().last().unwrap().trim(), from_file);
}

/// Mounts and umounts from several processes at once count right (the store and
/// refcount locks serialise them): 8 parallel mounts give count 8 and one kernel
/// mount; 8 parallel umounts leave nothing mounted.
fn concurrent_refcount_on(driver: &str) {
    const N: usize = 8;
    let ctl = Ctl::new(driver);
    let tar = small_tar(&ctl);
    ctl.import(&tar, "small");
    ctl.ok(&["create", "c1", "small"]);
    let spawn_all = |verb: &str| {
        let children: Vec<_> = (0..N)
            .map(|_| {
                ctl.cmd()
                    .args([verb, "c1"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn layerctl")
            })
            .collect();
        let outs: Vec<Run> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait").into())
            .collect();
        for r in &outs {
            assert_eq!(r.code, 0, "parallel {verb}: {r:?}");
        }
        outs
    };
    let outs = spawn_all("mount");
    let paths: std::collections::BTreeSet<String> =
        outs.iter().map(|r| r.stdout.trim().to_string()).collect();
    assert_eq!(paths.len(), 1, "all mounts return one path: {paths:?}");
    let mnt = std::path::PathBuf::from(paths.into_iter().next().unwrap());
    assert_eq!(ctl.json(&["ps"])[0]["mount_count"], N);
    if ctl.spec.mounts() {
        let n = harness::mounts_under(ctl.base()).len();
        assert_eq!(n, 1, "one kernel mount for {N} references");
    }
    assert!(mnt.join("etc/motd").exists());
    spawn_all("umount");
    assert_eq!(ctl.json(&["ps"])[0]["mount_count"], 0);
    assert!(
        harness::mounts_under(ctl.base()).is_empty(),
        "mount left after {N} umounts"
    );
    ctl.ok(&["check"]);
}

#[test]
fn concurrent_refcount_every_driver() {
    for d in harness::drivers("concurrent refcount") {
        concurrent_refcount_on(d.name);
    }
}
