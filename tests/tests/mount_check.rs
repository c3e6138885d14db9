//! `scripts/no-mount-leaks.sh`, the leftover-mount check of `scripts/test.sh`: a mount the
//! checked command leaves fails it; a mount made elsewhere while it runs (another test
//! run, a benchmark) does not. Before: test.sh diffed the whole machine's mount table, so
//! two runs on one machine failed each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use layerctl_tests::harness::{mount_fstype, privileged_required};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/no-mount-leaks.sh")
}

/// Root is needed to mount; without it the test skips (fails under
/// `LAYERCTL_REQUIRE_PRIVILEGED=1`).
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !privileged_required(),
        "{test}: needs root (LAYERCTL_REQUIRE_PRIVILEGED=1)"
    );
    eprintln!("SKIP {test}: needs root");
    false
}

/// Unmounts its path on drop (the test's own mount, made outside the checked command).
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn tmpfs(at: &Path, source: &str) -> Unmount {
    std::fs::create_dir_all(at).unwrap();
    nix::mount::mount(
        Some(source),
        at,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap_or_else(|e| panic!("mount tmpfs at {}: {e}", at.display()));
    Unmount(at.to_owned())
}

fn check(args: &[&str]) -> std::process::Output {
    Command::new(script())
        .args(args)
        .output()
        .expect("run no-mount-leaks.sh")
}

#[test]
fn a_mount_the_command_leaves_fails_it_and_does_not_escape() {
    if !root_or_skip("a_mount_the_command_leaves_fails_it") {
        return;
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let leak = t.path().join("leak");
    std::fs::create_dir(&leak).unwrap();
    let cmd = format!("mount -t tmpfs leftover-by-test {}", leak.display());
    let out = check(&["sh", "-c", &cmd]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("{} tmpfs leftover-by-test", leak.display())),
        "the leftover is named: {stderr}"
    );
    // It was made in the command's own mount namespace: the machine never had it.
    assert_eq!(mount_fstype(&leak), None);

    // A mount made and removed again is fine; the command's own status is kept.
    let cmd = format!("mount -t tmpfs tidy {0} && umount {0}", leak.display());
    let out = check(&["sh", "-c", &cmd]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = check(&["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn a_mount_made_elsewhere_during_the_run_does_not_fail_it() {
    if !root_or_skip("a_mount_made_elsewhere_during_the_run_does_not_fail_it") {
        return;
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let (ready, go) = (t.path().join("ready"), t.path().join("go"));
    let cmd = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.02; done",
        ready.display(),
        go.display()
    );
    let child = Command::new(script())
        .args(["sh", "-c", &cmd])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "command never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Someone else's mount (another run's test store, a benchmark) while it runs, in the
    // directory tree the tests use.
    let other = tmpfs(&t.path().join("other"), "someone-else");
    std::fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mount_fstype(&other.0).as_deref(), Some("tmpfs"));
}
