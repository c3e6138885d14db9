//! busybox end to end: import the project's own busybox.tar (scripts/make-busybox-tar.sh),
//! create, mount, run busybox in a chroot, compare the tree with the tar, tear down.

use std::path::{Path, PathBuf};
use std::process::Command;

use layerctl_tests::fixtures::{layer_from_tar, Expected};
use layerctl_tests::harness::{self, Ctl};
use layerctl_tests::tree::{compare_expected, snapshot, Xattrs};

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds busybox.tar with the project's script; None (skip) when it cannot.
fn make_busybox_tar(out: &Path) -> Option<Vec<u8>> {
    let script = workspace_dir().join("scripts/make-busybox-tar.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(out)
        .output()
        .expect("run make-busybox-tar.sh");
    if !st.status.success() {
        let msg = format!(
            "make-busybox-tar.sh failed: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        if harness::privileged_required() {
            panic!("{msg}");
        }
        eprintln!("SKIP busybox: {msg}");
        return None;
    }
    Some(std::fs::read(out).expect("read busybox.tar"))
}

fn busybox_on(driver: &str) {
    let ctl = Ctl::new(driver);
    let tar_path = ctl.work.join("busybox.tar");
    let Some(bytes) = make_busybox_tar(&tar_path) else {
        return;
    };
    let mut exp = Expected::default();
    exp.apply(&layer_from_tar(&bytes).expect("parse busybox.tar"))
        .expect("busybox.tar model");

    let id = ctl.import(&tar_path, "busybox");
    let images = ctl.json(&["images"]);
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
    assert_eq!(images[0]["id"], id.as_str());
    assert_eq!(images[0]["names"][0], "busybox");

    ctl.ok(&["create", "bb1", "busybox"]);
    let mnt = ctl.mount("bb1");
    ctl.assert_mounted(&mnt, true);

    // The tree equals the tar, plus the init layer.
    let snap = snapshot(&mnt, Xattrs::User).expect("snapshot mount");
    let diffs = compare_expected(&exp, &snap, &harness::is_init_path, &harness::is_init_path);
    assert!(
        diffs.is_empty(),
        "[{driver}] mount differs from busybox.tar:\n{}",
        diffs.join("\n")
    );
    harness::check_init_layer(&mnt, "bb1").expect("init layer");
    assert!(
        snap["bin/sh"].ino == snap["bin/busybox"].ino,
        "applets are hard links"
    );

    // Run busybox inside.
    let out = Command::new("chroot")
        .arg(&mnt)
        .args([
            "/bin/busybox",
            "sh",
            "-c",
            "echo hi > /tmp/x; cat /etc/hostname",
        ])
        .output()
        .expect("spawn chroot");
    assert!(
        out.status.success(),
        "chroot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bb1\n");
    assert_eq!(std::fs::read_to_string(mnt.join("tmp/x")).unwrap(), "hi\n");

    ctl.ok(&["umount", "bb1"]);
    ctl.assert_mounted(&mnt, false);
    ctl.ok(&["rm", "bb1"]);
    ctl.ok(&["rmi", "busybox"]);
    assert_eq!(ctl.json(&["images"]), serde_json::json!([]));
    assert_eq!(ctl.json(&["layers"]), serde_json::json!([]));
    ctl.ok(&["check"]);
    assert!(harness::mounts_under(ctl.base()).is_empty());
}

#[test]
fn busybox_every_driver() {
    for d in harness::drivers("busybox") {
        busybox_on(d.name);
    }
}
