//! userspace aufs: a copy-up killed mid-way leaves its temp (`.wh..wh.cpup.<pid>.<n>`)
//! in the container's rw branch. `layerctl check` reports it, `check --repair` removes
//! it, and the container's files are untouched.

use layerctl_tests::fixtures::sample_image;
use layerctl_tests::harness::{self, Ctl};

/// An aufs store with the sample image and container `c`, mounted, whose
/// `/etc/passwd` was rewritten (copied up) through the mount; None when the test
/// `what` cannot run here (a skip, or a panic when privileged tests are required).
fn container_with_a_change(what: &str) -> Option<(Ctl, std::path::PathBuf)> {
    if !harness::can_run(what, "aufs") {
        return None;
    }
    let ctl = Ctl::new("aufs");
    let img = sample_image("img");
    let tar = ctl.write_work("img.tar", &img.docker_save());
    ctl.import(&tar, "img");
    ctl.ok(&["create", "c", "img"]);
    let mnt = ctl.mount("c");
    std::fs::write(mnt.join("etc/passwd"), b"changed\n").unwrap();
    Some((ctl, mnt))
}

#[test]
fn check_reports_and_repair_removes_a_dead_copy_up_temp() {
    let Some((ctl, _mnt)) = container_with_a_change("aufs_copyup_temps") else {
        return;
    };
    ctl.ok(&["umount", "c"]);
    // The container's rw branch: the layer directory holding the copied-up file.
    let diff = ctl.root.join("aufs/diff");
    let rw = std::fs::read_dir(&diff)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p.join("etc/passwd")).is_ok_and(|c| c == b"changed\n"))
        .expect("the rw branch holds the copied-up file");
    // A temp as a server killed mid copy-up leaves it (its pid is gone).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let temp = rw.join(format!("etc/.wh..wh.cpup.{dead}.0"));
    std::fs::write(&temp, b"partial copy").unwrap();

    let r = ctl.run(&["check"]);
    assert_ne!(r.code, 0, "check must report the temp: {r:?}");
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(
        out.contains(&temp.display().to_string()),
        "check names the temp: {r:?}"
    );
    let r = ctl.repair();
    assert_eq!(r.code, 9, "repaired: {r:?}");
    assert!(!temp.exists(), "repair removed the temp");
    ctl.ok(&["check"]);
    let mnt = ctl.mount("c");
    assert_eq!(std::fs::read(mnt.join("etc/passwd")).unwrap(), b"changed\n");
    ctl.ok(&["umount", "c"]);
}

/// A container's userspace aufs server killed (SIGKILL): its mount is dead ("Transport
/// endpoint is not connected"). `layerctl check` names it a dead mount (not "leftover of
/// interrupted driver work"), `check --repair` detaches it, and the container mounts again.
#[test]
fn check_reports_a_killed_server_as_a_dead_mount() {
    let Some((ctl, mnt)) = container_with_a_change("aufs_dead_mount_check") else {
        return;
    };
    let id = mnt.file_name().unwrap().to_str().unwrap().to_owned();
    let pid: i32 = std::fs::read_to_string(ctl.root.join(format!("aufs/run/{id}.pid")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut dead = false;
    for _ in 0..1000 {
        if matches!(
            nix::sys::statfs::statfs(&mnt),
            Err(nix::errno::Errno::ENOTCONN)
        ) {
            dead = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(dead, "the killed server's mount answers ENOTCONN");

    let r = ctl.run(&["check"]);
    assert_ne!(r.code, 0, "check must report the dead mount: {r:?}");
    let out = format!("{}{}", r.stdout, r.stderr);
    let line = format!(
        "dead mount (its filesystem server is gone): {}",
        mnt.display()
    );
    assert!(out.contains(&line), "check names the dead mount: {r:?}");
    assert!(
        !out.contains("leftover of interrupted driver work"),
        "a dead mount is not called a leftover: {r:?}"
    );
    let r = ctl.repair();
    assert_eq!(r.code, 9, "repaired: {r:?}");
    ctl.ok(&["check"]);
    let mnt = ctl.mount("c");
    assert_eq!(std::fs::read(mnt.join("etc/passwd")).unwrap(), b"changed\n");
    ctl.ok(&["umount", "c"]);
}
