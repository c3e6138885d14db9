//! Breaking layerctl as a new user would (breaker 6): the config file, odd `--root`
//! paths, `check` against hand-made damage. Each test is the smallest reproduction of
//! one failure found by hand; the commit that adds it says what was wrong.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use layerctl_tests::fixtures::{Entry, Layer};
use layerctl_tests::harness::{drivers, Ctl};

/// A tiny image for the odd-root tests.
fn tiny_image(ctl: &Ctl) -> PathBuf {
    let tar = Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/hello", b"hi\n".to_vec()),
    ])
    .tar();
    ctl.write_work("img.tar", &tar)
}

/// Any mount on the host whose mount point is not UTF-8 (a user's `/mnt/caf\xe9`) made
/// `check` of every store fail with exit 1 ("read /proc/self/mountinfo: stream did not
/// contain valid UTF-8"), and the drivers' mount-table lookups with it.
#[test]
fn a_non_utf8_mount_elsewhere_does_not_break_check() {
    for spec in drivers("a_non_utf8_mount_elsewhere_does_not_break_check") {
        let ctl = Ctl::new(spec.name);
        ctl.import(&tiny_image(&ctl), "img");
        ctl.ok(&["create", "c", "img"]);
        let elsewhere = ctl
            .base()
            .join(std::ffi::OsString::from_vec(b"mnt-caf\xe9".to_vec()));
        std::fs::create_dir(&elsewhere).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&elsewhere)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs at {elsewhere:?}");
        let r = ctl.run(&["check"]);
        let mnt = ctl.mount("c");
        let r2 = ctl.run(&["check"]);
        ctl.ok(&["umount", "c"]);
        let st = std::process::Command::new("umount")
            .arg(&elsewhere)
            .status()
            .unwrap();
        assert!(st.success(), "umount {elsewhere:?}");
        assert_eq!(r.code, 0, "[{}] check: {r:?}", spec.name);
        assert_eq!(
            r2.code, 0,
            "[{}] check while {mnt:?} is mounted: {r2:?}",
            spec.name
        );
    }
}
