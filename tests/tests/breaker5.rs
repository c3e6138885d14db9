//! Breaking layerctl as a new user would (breaker 5): real image shapes, life-cycle
//! round trips, a full disk. Each test is the smallest reproduction of one failure
//! found by hand; the commit that adds it says what was wrong.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use layerctl_tests::fixtures::{busybox_tar, docker_save_of, Entry, Layer};
use layerctl_tests::harness::{self, drivers, Ctl};
use layerctl_tests::small_disk::SmallDisk;

/// `mount_count` of container `name` in `ps --json`.
fn mount_count(ctl: &Ctl, name: &str) -> u64 {
    let ps = ctl.json(&["ps"]);
    ps.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} in ps: {ps}"))["mount_count"]
        .as_u64()
        .unwrap()
}

/// On a full disk a failed `export` of a mounted container leaves its mount count as it
/// was, and `umount` still works: the count files were replaced through a temp file,
/// which a full disk refuses, so the export's own unmount failed silently (its write
/// error was reported) and left one reference behind (overlay2: `rm` then said
/// "mounted (1 reference(s))" after the user's last `umount`), and `umount` itself
/// failed with ENOSPC. Counts are now rewritten in place when the disk is full.
#[test]
fn a_full_disk_leaves_mount_counts_as_they_were() {
    for spec in drivers("a_full_disk_leaves_mount_counts_as_they_were") {
        let mut ctl = Ctl::new(spec.name);
        let disk = SmallDisk::mount(16 << 20);
        ctl.root = disk.dir.join("root");
        let tar = Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/os-release", b"ID=small\n".to_vec()),
        ])
        .tar();
        let img = ctl.write_work("small.tar", &tar);
        ctl.import(&img, "small");
        ctl.ok(&["create", "c", "small"]);
        let mnt = ctl.mount("c");
        assert_eq!(ctl.mount("c"), mnt);
        assert_eq!(mount_count(&ctl, "c"), 2, "[{}] two mounts", spec.name);
        let filled = SmallDisk::fill(&mnt);
        assert!(filled > 0, "[{}] the container filled the disk", spec.name);

        let out = disk.dir.join("export.tar");
        let r = ctl.run(&[
            "export".as_ref(),
            "c".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        assert_ne!(r.code, 0, "[{}] export onto a full disk: {r:?}", spec.name);
        assert_eq!(
            r.stderr.lines().count(),
            1,
            "[{}] one error line: {r:?}",
            spec.name
        );
        assert!(
            r.stderr.contains("No space left on device"),
            "[{}] names the cause: {r:?}",
            spec.name
        );
        assert!(!out.exists(), "[{}] no partial export file", spec.name);
        assert_eq!(
            mount_count(&ctl, "c"),
            2,
            "[{}] the failed export left the count as it was",
            spec.name
        );
        ctl.ok(&["umount", "c"]);
        assert_eq!(
            mount_count(&ctl, "c"),
            1,
            "[{}] umount on a full disk",
            spec.name
        );
        ctl.ok(&["umount", "c"]);
        assert_eq!(mount_count(&ctl, "c"), 0, "[{}] last umount", spec.name);
        ctl.assert_mounted(&mnt, false);
        ctl.ok(&["rm", "c"]);
        ctl.ok(&["check"]);
        drop(ctl); // unmounts what it mounted on the disk first
        drop(disk);
    }
}

/// A container file named `.wh.<x>` (vfs and overlay2 let a container make one; the
/// userspace aufs refuses with EPERM) is a whiteout in a layer tar. `commit` wrote it
/// as a file anyway: the committed layer lost it (a whiteout of `x`), and `save` of the
/// new image then failed ("changed on disk: entry tmp/.wh.x: missing"). Now `commit`
/// and `export` refuse it with exit 5 naming the entry, and store nothing.
#[test]
fn a_container_file_named_like_a_whiteout_is_refused_by_commit_and_export() {
    for spec in drivers("a_container_file_named_like_a_whiteout") {
        let ctl = Ctl::new(spec.name);
        let tar = Layer::new(vec![Entry::dir("tmp"), Entry::file("tmp/x", b"x".to_vec())]).tar();
        let img = ctl.write_work("small.tar", &tar);
        ctl.import(&img, "small");
        ctl.ok(&["create", "c", "small"]);
        let mnt = ctl.mount("c");
        let made = std::fs::write(mnt.join("tmp/.wh.x"), b"hidden");
        if spec.name == "aufs" {
            let e = made.expect_err("aufs refuses .wh. names");
            assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::EPERM as i32));
            continue;
        }
        made.unwrap();
        let before = ctl.json(&["images"]);
        let r = ctl.fails(&["commit", "c", "--name", "bad"], 5);
        assert!(r.stderr.contains("tmp/.wh.x"), "[{}] {r:?}", spec.name);
        assert_eq!(r.stderr.lines().count(), 1, "[{}] {r:?}", spec.name);
        assert_eq!(
            ctl.json(&["images"]),
            before,
            "[{}] no image stored",
            spec.name
        );
        let out = ctl.work.join("c.tar");
        let r = ctl.fails(
            &[
                "export".as_ref(),
                "c".as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            5,
        );
        assert!(r.stderr.contains("tmp/.wh.x"), "[{}] {r:?}", spec.name);
        assert!(!out.exists(), "[{}] no export file", spec.name);
        ctl.ok(&["check"]);
        ctl.ok(&["gc"]);
        // Renamed, the same change commits and saves.
        std::fs::rename(mnt.join("tmp/.wh.x"), mnt.join("tmp/wh.x")).unwrap();
        ctl.ok(&["commit", "c", "--name", "good"]);
        let saved = ctl.work.join("good.tar");
        ctl.ok(&[
            "save".as_ref(),
            "good".as_ref(),
            "-o".as_ref(),
            saved.as_os_str(),
        ]);
        ctl.ok(&["check", "--verify-content"]);
    }
}

/// `rm --force` of a container that `layerctl run` (another process) is running: it
/// dropped the run's mount reference and removed the layers under the live process
/// (vfs: the process's whole root vanished, `ls /bin: No such file or directory`;
/// overlay2/aufs: its writes went to a deleted layer), and the run then ended with
/// "container busy not found" and exit 3 instead of the process's status. `rm` now
/// refuses a container a live run runs, even with `--force` (exit 4, naming the run's
/// pid), and the run ends normally; after it, `rm` works.
#[test]
fn rm_refuses_a_container_that_a_run_is_running() {
    for spec in drivers("rm_refuses_a_container_that_a_run_is_running") {
        let ctl = Ctl::new(spec.name);
        let tar = ctl.work.join("busybox.tar");
        if let Err(e) = busybox_tar(&tar) {
            assert!(!harness::privileged_required(), "{e:#}");
            eprintln!("SKIP rm_refuses_a_container_that_a_run_is_running: {e:#}");
            return;
        }
        ctl.import(&tar, "busybox");
        for rt in ["libcontainer", "runc"] {
            if rt == "runc" && Command::new("runc").arg("--version").output().is_err() {
                assert!(!harness::privileged_required(), "runc not on PATH");
                continue;
            }
            let mut child = ctl
                .cmd()
                .args(["run", "--runtime", rt, "--name", "busy", "busybox", "--"])
                .args([
                    "sh",
                    "-c",
                    "echo ready; read x; ls /bin/sh && echo written > /w",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn layerctl run");
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line, "ready\n", "[{} {rt}]", spec.name);
            for args in [&["rm", "busy"][..], &["rm", "--force", "busy"]] {
                let r = ctl.fails(args, 4);
                assert!(
                    r.stderr.contains("is running (layerctl run, pid"),
                    "[{} {rt}] {args:?}: {r:?}",
                    spec.name
                );
            }
            // The process still has its root, and the run its container.
            drop(child.stdin.take()); // `read` ends
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
            let st = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert_eq!(st.code(), Some(0), "[{} {rt}] {rest} {err}", spec.name);
            assert_eq!(rest, "/bin/sh\n", "[{} {rt}] {err}", spec.name);
            assert_eq!(err, "", "[{} {rt}]", spec.name);
            let diff = ctl.ok(&["diff", "busy"]);
            assert!(diff.contains("/w"), "[{} {rt}] {diff}", spec.name);
            ctl.ok(&["rm", "busy"]);
            ctl.ok(&["check"]);
        }
    }
}

/// `check --repair` of a store whose image of 12 layers lost its bottom layer's content
/// (the driver's directory deleted): each repair round uncovers one more level (the
/// child's record loses its parent, then its driver layer becomes an orphan...), and
/// repair stopped after 8 rounds with exit 8 ("damaged", problems remain) although it
/// can fix all of them; a second run went on. It now goes on while a round makes
/// progress: exit 9, then `check` is clean, and a fresh import of the image works.
#[test]
fn repair_of_a_deep_image_broken_at_the_bottom_finishes_in_one_run() {
    for spec in drivers("repair_of_a_deep_image_broken_at_the_bottom") {
        let ctl = Ctl::new(spec.name);
        let tars: Vec<Vec<u8>> = (0..12)
            .map(|i| Layer::new(vec![Entry::file(&format!("f{i}"), vec![b'x'; i + 1])]).tar())
            .collect();
        let archive = ctl.write_work("deep.tar", &docker_save_of("deep", &tars));
        ctl.import(&archive, "deep");
        ctl.ok(&["create", "c", "deep"]);
        let bottom = ctl.image_layer_dirs("deep")[0].clone();
        std::fs::remove_dir_all(&bottom).unwrap();
        ctl.fails(&["check"], 8);
        let r = ctl.run(&["check", "--repair"]);
        assert_eq!(r.code, 9, "[{}] all repaired in one run: {r:?}", spec.name);
        ctl.ok(&["check"]);
        assert_eq!(
            ctl.json(&["images"]),
            serde_json::json!([]),
            "[{}]",
            spec.name
        );
        assert_eq!(ctl.json(&["ps"]), serde_json::json!([]), "[{}]", spec.name);
        ctl.import(&archive, "deep");
        ctl.ok(&["create", "c2", "deep"]);
        let m = ctl.mount("c2");
        assert_eq!(std::fs::read(m.join("f11")).unwrap(), vec![b'x'; 12]);
        ctl.ok(&["umount", "c2"]);
        ctl.ok(&["check"]);
    }
}

/// A layer that deletes a lower file whose name is 253 bytes long carries the whiteout
/// `.wh.<253 bytes>`, a 257-byte name no Linux filesystem holds (GNU tar fails it with
/// ENAMETOOLONG). vfs and overlay2 applied it, aufs failed with exit 1 ("create file
/// ...: File name too long"): three answers for one image. Every driver now refuses
/// the layer as invalid input (exit 5, one line naming the entry), and the store keeps
/// no part of the image.
#[test]
fn a_whiteout_longer_than_name_max_is_refused_on_every_driver() {
    let name = "L".repeat(253);
    let lower = Layer::new(vec![
        Entry::dir("d"),
        Entry::file(&format!("d/{name}"), b"lower".to_vec()),
    ])
    .tar();
    let upper = Layer::new(vec![Entry::whiteout(&format!("d/{name}"))]).tar();
    for spec in drivers("a_whiteout_longer_than_name_max_is_refused_on_every_driver") {
        let ctl = Ctl::new(spec.name);
        let archive = ctl.write_work(
            "long-wh.tar",
            &docker_save_of("longwh", &[lower.clone(), upper.clone()]),
        );
        let r = ctl.fails(&["import".as_ref(), archive.as_os_str()], 5);
        assert_eq!(r.stderr.lines().count(), 1, "[{}] {r:?}", spec.name);
        assert!(
            r.stderr.contains("NAME_MAX") && r.stderr.contains(".wh.LLL"),
            "[{}] names the entry and the rule: {r:?}",
            spec.name
        );
        assert_eq!(
            ctl.json(&["images"]).as_array().map(Vec::len),
            Some(0),
            "[{}] no image kept",
            spec.name
        );
        ctl.ok(&["check"]);
    }
}

/// A docker-save archive of two images whose second one is corrupt (a layer whose
/// bytes are not its DiffID): the first image stays stored, as `docker load` keeps the
/// images it loaded before an error, and the one error line now says so, naming it.
/// Before, the import exited 5 with only the corrupt layer's error, and a user had no
/// way to know that `a` had been stored.
#[test]
fn a_multi_image_import_that_fails_names_the_images_it_kept() {
    use layerctl_tests::fixtures::{config_json_for, plain_archive, sha256_digest};
    let good = Layer::new(vec![Entry::file("a.txt", b"a".to_vec())]).tar();
    let bad = Layer::new(vec![Entry::file("b.txt", b"b".to_vec())]).tar();
    let mut files = Vec::new();
    let mut manifest = Vec::new();
    for (name, tar, claimed) in [
        ("a", &good, sha256_digest(&good)),
        ("b", &bad, sha256_digest(b"other bytes")),
    ] {
        let config = config_json_for(&[claimed]);
        let config_name = format!("{}.json", &sha256_digest(&config)["sha256:".len()..]);
        files.push((format!("{name}/layer.tar"), tar.clone()));
        files.push((config_name.clone(), config));
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": [format!("{name}:latest")],
            "Layers": [format!("{name}/layer.tar")],
        }));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let archive = plain_archive(&files);
    for spec in drivers("a_multi_image_import_that_fails_names_the_images_it_kept") {
        let ctl = Ctl::new(spec.name);
        let file = ctl.write_work("two.tar", &archive);
        let r = ctl.fails(&["import".as_ref(), file.as_os_str()], 5);
        assert_eq!(r.stderr.lines().count(), 1, "[{}] {r:?}", spec.name);
        assert!(
            r.stderr
                .contains("images stored before the failure are kept")
                && r.stderr.contains("(a:latest)"),
            "[{}] names the kept image: {r:?}",
            spec.name
        );
        let images = ctl.json(&["images"]);
        let names: Vec<String> = images
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names.len(), 1, "[{}] only a: {images}", spec.name);
        assert!(names[0].contains('a'), "[{}] {images}", spec.name);
        ctl.ok(&["check"]);
    }
}

/// overlay2: a layer whose short link in `l/` is missing (what another process's
/// `create` looks like between its rename into place and its link) gets the link back
/// on the next open without a WARN line on that command's stderr; before, every
/// command run during a concurrent import could print "recreating missing short link".
#[test]
fn overlay2_makes_a_missing_short_link_quietly() {
    let ctl = Ctl::new("overlay2");
    let tar = Layer::new(vec![Entry::file("f", b"x".to_vec())]).tar();
    let img = ctl.write_work("one.tar", &tar);
    ctl.import(&img, "one");
    let links = ctl.root.join("overlay2/l");
    let names = |d: &std::path::Path| -> Vec<std::ffi::OsString> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = names(&links);
    assert_eq!(before.len(), 1, "{before:?}");
    std::fs::remove_file(links.join(&before[0])).unwrap();
    let r = ctl.run(&["images"]);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    assert_eq!(names(&links), before, "the same link is back");
    ctl.ok(&["check"]);
}
