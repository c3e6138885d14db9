//! The layer life cycle (issue 8) with the real binary on every driver of
//! `harness::DRIVERS`: import the sample image, create, mutate through the mount (add,
//! modify, chmod, chown, delete a lower file, delete a lower dir, recreate a deleted dir
//! with new content, hard link, symlink, xattr), `diff`, `commit`, a second container
//! from the committed image shows the same tree entry by entry, commits stack and
//! `history` shows them, identical changes give the same DiffID and one layer, and a
//! commit killed with SIGKILL leaves a store `check --repair` brings back.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use layerctl_tests::fixtures::{noise, sample_image};
use layerctl_tests::harness::{self, is_digest, Ctl};
use layerctl_tests::mutations::{mutate, tree, write_file, EXPECTED_DIFF};
use layerctl_tests::tree::{compare_trees, snapshot, Node, Xattrs};

/// `layerctl export TARGET -o FILE` twice (to a file and to stdout): the bytes must
/// be equal (deterministic), hold no whiteout, and extract (GNU tar, as root) into a
/// tree that is returned.
fn export(ctl: &Ctl, target: &str) -> BTreeMap<String, Node> {
    let file = ctl.work.join(format!("{target}.export.tar"));
    let out = ctl.ok(&["export", target, "-o", file.to_str().unwrap()]);
    assert_eq!(out, "", "export -o FILE prints nothing");
    let bytes = fs::read(&file).unwrap();
    let o = ctl
        .cmd()
        .args(["export", target, "-o", "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "export -o -: {o:?}");
    assert!(
        o.stdout == bytes,
        "[{}] export of {target} is not deterministic",
        ctl.driver
    );
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(list.status.success());
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(!list.contains(".wh."), "whiteout in a flat export:\n{list}");
    let dir = ctl.work.join(format!("{target}.extracted"));
    fs::create_dir(&dir).unwrap();
    let st = std::process::Command::new("tar")
        .args([
            "-x",
            "--xattrs",
            "--xattrs-include=user.*",
            "--numeric-owner",
            "-p",
            "-f",
        ])
        .arg(&file)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "GNU tar extracts the export");
    snapshot(&dir, Xattrs::User).unwrap()
}

fn commit(ctl: &Ctl, container: &str, name: &str, message: &str) -> String {
    let out = ctl.ok(&["commit", container, "--name", name, "--message", message]);
    let id = out.trim().to_owned();
    assert!(is_digest(&id), "commit prints the image id: {out:?}");
    id
}

/// Returns the DiffID of the committed layer and the sha256 of image "one"'s export.
fn round_trip(ctl: &Ctl) -> (String, String) {
    let d = &ctl.driver;
    let img = sample_image("sample");
    let base = ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
    ctl.ok(&["create", "c1", "sample"]);
    let m1 = ctl.mount("c1");
    mutate(&m1);
    assert_eq!(ctl.ok(&["diff", "c1"]), EXPECTED_DIFF, "[{d}] diff");
    // export of the container: its whole merged tree, init files included.
    let exported = export(ctl, "c1");
    let diffs = compare_trees(&snapshot(&m1, Xattrs::User).unwrap(), &exported);
    assert!(
        diffs.is_empty(),
        "[{d}] c1 vs its export:\n{}",
        diffs.join("\n")
    );

    let layers_before = ctl.json(&["layers"]).as_array().unwrap().len();
    let id1 = commit(ctl, "c1", "one", "first commit");
    assert_ne!(id1, base);
    let layers = ctl.json(&["layers", "one"]);
    let layers = layers.as_array().unwrap();
    assert_eq!(layers.len(), 4, "[{d}] three image layers + the commit");
    let top_diff = layers[3]["diff_id"].as_str().unwrap().to_owned();
    assert!(
        layers[3]["size"].as_u64().unwrap() >= 300_000,
        "[{d}] size recorded (home/big)"
    );
    assert_eq!(
        ctl.json(&["layers"]).as_array().unwrap().len(),
        layers_before + 1
    );

    // The container stays mounted and usable; its diff is unchanged.
    ctl.assert_mounted(&m1, true);
    write_file(&m1.join("scratch"), b"x");
    fs::remove_file(m1.join("scratch")).unwrap();
    assert_eq!(
        ctl.ok(&["diff", "c1"]),
        EXPECTED_DIFF,
        "[{d}] diff after commit"
    );

    // A container of the committed image shows the same tree, entry by entry.
    ctl.ok(&["create", "c2", "one"]);
    let m2 = ctl.mount("c2");
    harness::check_init_layer(&m2, "c2").unwrap();
    let diffs = compare_trees(&tree(&m1), &tree(&m2));
    assert!(diffs.is_empty(), "[{d}] c1 vs c2:\n{}", diffs.join("\n"));
    assert_eq!(
        ctl.ok(&["diff", "c2"]),
        "",
        "[{d}] fresh container has no changes"
    );
    // export of the image: c2's tree without what only its init layer adds.
    let mut c2_tree = snapshot(&m2, Xattrs::User).unwrap();
    c2_tree.retain(|p, _| !harness::is_init_path(p) || p == "etc" || p == "dev");
    let diffs = compare_trees(&c2_tree, &export(ctl, "one"));
    assert!(
        diffs.is_empty(),
        "[{d}] image one vs its export:\n{}",
        diffs.join("\n")
    );
    let one_export = layerctl_tests::fixtures::sha256_digest(
        &fs::read(ctl.work.join("one.export.tar")).unwrap(),
    );
    ctl.ok(&["check"]);

    // Identical changes again: same DiffID, one stored layer.
    let id1b = commit(ctl, "c1", "one-again", "same changes");
    let again = ctl.json(&["layers", id1b.as_str()]);
    assert_eq!(
        again.as_array().unwrap()[3]["diff_id"],
        top_diff.as_str(),
        "[{d}]"
    );
    assert_eq!(
        ctl.json(&["layers"]).as_array().unwrap().len(),
        layers_before + 1
    );

    // A second commit on top of the first; history shows both.
    write_file(&m2.join("second"), b"2\n");
    fs::remove_file(m2.join("etc/passwd")).unwrap();
    assert_eq!(
        ctl.ok(&["diff", "c2"]),
        "C /etc\nD /etc/passwd\nA /second\n"
    );
    commit(ctl, "c2", "two", "second commit");
    let h = ctl.json(&["history", "two"]);
    let hist = h["history"].as_array().unwrap();
    assert_eq!(h["layers"].as_array().unwrap().len(), 5, "[{d}] {h}");
    assert_eq!(hist.len(), 5, "[{d}] padded + two commits: {h}");
    assert_eq!(hist[3]["comment"], "first commit");
    assert_eq!(hist[3]["created_by"], "layerctl commit c1");
    assert_eq!(hist[3]["layer"], 3);
    assert_eq!(hist[4]["comment"], "second commit");
    assert_eq!(hist[4]["layer"], 4);
    assert_eq!(h["layers"][3]["diff_id"], top_diff.as_str());
    let text = ctl.ok(&["history", "two"]);
    assert!(
        text.contains("second commit") && text.contains("first commit"),
        "{text}"
    );

    ctl.ok(&["create", "c3", "two"]);
    let m3 = ctl.mount("c3");
    assert_eq!(fs::read(m3.join("second")).unwrap(), b"2\n");
    assert!(!m3.join("etc/passwd").exists());
    assert_eq!(fs::read(m3.join("opaque/fresh")).unwrap(), b"recreated\n");
    // du: recorded sizes, unique vs shared, container changes.
    let du = ctl.json(&["du"]);
    let all = ctl.json(&["layers"]);
    let all = all.as_array().unwrap();
    let sum: u64 = all.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert_eq!(du["totals"]["layers"], all.len(), "[{d}] {du}");
    assert_eq!(du["totals"]["layers_size"], sum, "[{d}] {du}");
    let image = |name: &str| {
        du["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("{name} in {du}"))
            .clone()
    };
    let (sample, two) = (image("sample"), image("two"));
    assert_eq!(
        sample["unique_size"], 0,
        "[{d}] every sample layer is shared"
    );
    assert_eq!(sample["shared_size"], sample["size"]);
    let chain_size: u64 = ctl
        .json(&["layers", "two"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(two["size"], chain_size);
    assert_eq!(two["containers"], 1);
    let c1 = du["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c1")
        .unwrap()
        .clone();
    assert!(
        c1["rw_size"].as_u64().unwrap() >= 300_000,
        "[{d}] c1's changes hold home/big: {c1}"
    );
    assert!(ctl.ok(&["du"]).contains("Total: "));

    for c in ["c1", "c2", "c3"] {
        ctl.ok(&["umount", c]);
    }
    ctl.ok(&["check"]);
    (top_diff, one_export)
}

#[test]
fn commit_round_trip_every_driver() {
    let mut results = Vec::new();
    for d in harness::drivers("lifecycle") {
        let ctl = Ctl::new(d.name);
        results.push((d.name, round_trip(&ctl)));
    }
    // The one exporter: the same changes give the same layer and the same flat tar
    // whatever the driver.
    for w in results.windows(2) {
        assert_eq!(
            w[0].1, w[1].1,
            "{} vs {}: (DiffID, export digest)",
            w[0].0, w[1].0
        );
    }
}

/// A commit killed with SIGKILL at several points: `check --repair` leaves a clean
/// store with the base image and, when the commit got that far, a whole committed
/// image; the container keeps its changes and commits again.
#[test]
fn commit_killed_is_repaired() {
    for d in harness::drivers("lifecycle-crash") {
        let mut interrupted = 0;
        for delay_ms in [50u64, 300, 1000] {
            let ctl = Ctl::new(d.name);
            let img = sample_image("sample");
            ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
            ctl.ok(&["create", "c", "sample"]);
            let m = ctl.mount("c");
            fs::create_dir(m.join("many")).unwrap();
            for i in 0..2000u64 {
                fs::write(m.join(format!("many/f{i:05}")), noise(8 * 1024, i)).unwrap();
            }
            let mut child = ctl
                .cmd()
                .args(["commit", "c", "--name", "big"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn commit");
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let before = ctl.run(&["check"]);
            if before.code == 8 {
                interrupted += 1;
            }
            let r = ctl.repair();
            assert_eq!(
                r.code == 9,
                before.code == 8,
                "[{} {delay_ms} ms] repair reports repaired (9) exactly when check found problems: {r:?}",
                d.name
            );
            ctl.ok(&["check"]);
            let names: Vec<String> = ctl
                .json(&["images"])
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|i| i["names"].as_array().unwrap().clone())
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            if names.iter().any(|n| n == "big") {
                ctl.ok(&["create", "whole", "big"]);
                let w = ctl.mount("whole");
                assert_eq!(
                    fs::read(w.join("many/f01999")).unwrap(),
                    noise(8 * 1024, 1999)
                );
                ctl.ok(&["umount", "whole"]);
            }
            // The container is intact and commits.
            assert_eq!(fs::read(m.join("many/f00007")).unwrap(), noise(8 * 1024, 7));
            commit(&ctl, "c", "big", "after the crash");
            ctl.ok(&["check"]);
            ctl.ok(&["umount", "c"]);
            // No stale mount reference survives the killed commit: rm needs no --force.
            ctl.ok(&["rm", "c"]);
            eprintln!(
                "[{}] commit killed after {delay_ms} ms ({status}): check found {}; published: {}",
                d.name,
                before.stdout.trim(),
                names.iter().any(|n| n == "big")
            );
        }
        assert!(interrupted > 0, "[{}] no kill hit a commit at work", d.name);
    }
}

/// Exit codes and messages of the life-cycle commands (README "Exit codes").
#[test]
fn lifecycle_exit_codes() {
    if !harness::can_run("lifecycle-exit-codes", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let img = sample_image("sample");
    ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
    ctl.ok(&["create", "c", "sample"]);
    let r = ctl.fails(&["commit", "nope"], 3);
    assert!(r.stderr.contains("nope"), "{}", r.stderr);
    ctl.fails(&["commit", "c", "--name", "Bad Name"], 5);
    ctl.fails(&["export", "nope", "-o", "-"], 3);
    ctl.fails(&["history", "nope"], 3);
    ctl.fails(&["tag", "nope", "x"], 3);
    ctl.fails(&["tag", "sample", "Bad Name"], 5);
    ctl.fails(&["untag", "nope"], 3);
    let out = ctl.work.join("never.tar");
    ctl.fails(&["export", "nope", "-o", out.to_str().unwrap()], 3);
    assert!(!out.exists(), "a failed export leaves no file");
    assert_eq!(
        fs::read_dir(&ctl.work)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".layerctl-"))
            .count(),
        0,
        "no temporary export file left"
    );
    // Nothing changed: one image, one container, a clean store.
    assert_eq!(ctl.json(&["images"]).as_array().unwrap().len(), 1);
    ctl.ok(&["check"]);
}

/// `du -sb` of a store root (GNU du: apparent sizes, hard links once).
fn du_sb(root: &Path) -> u64 {
    let o = std::process::Command::new("du")
        .arg("-sb")
        .arg(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "du -sb: {o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `gc` after `rm`/`rmi` and a killed commit returns the store's disk usage (`du -sb`
/// of the root) to what it was before, on every driver; `--dry-run` removes nothing.
#[test]
fn gc_returns_disk_usage() {
    for d in harness::drivers("lifecycle-gc") {
        let ctl = Ctl::new(d.name);
        let img = sample_image("sample");
        ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
        // The driver's own bookkeeping appears with the first mount (overlay2's
        // `refs/` lock dir) and stays: measure after one container's life.
        ctl.ok(&["create", "warm", "sample"]);
        ctl.mount("warm");
        ctl.ok(&["umount", "warm"]);
        ctl.ok(&["rm", "warm"]);
        let before = du_sb(&ctl.root);

        ctl.ok(&["create", "c", "sample"]);
        let m = ctl.mount("c");
        fs::create_dir(m.join("many")).unwrap();
        for i in 0..2000u64 {
            fs::write(m.join(format!("many/f{i:05}")), noise(8 * 1024, i)).unwrap();
        }
        commit(&ctl, "c", "kept", "m");
        ctl.ok(&["create", "c2", "kept"]);
        // A commit killed mid-way leaves an orphan driver layer.
        let mut child = ctl
            .cmd()
            .args(["commit", "c", "--name", "killed"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.kill();
        child.wait().unwrap();
        ctl.ok(&["umount", "c"]);
        // No stale mount reference from the killed commit (vfs counts references in a
        // file; its diff takes none).
        ctl.ok(&["rm", "c"]);
        ctl.ok(&["rm", "c2"]);
        ctl.ok(&["rmi", "kept"]);
        let killed = ctl.json(&["images"]).as_array().unwrap().len() > 1;
        if killed {
            ctl.ok(&["rmi", "killed"]); // the kill came after the image was published
        }

        let dry = ctl.json(&["gc", "--dry-run"]);
        assert_eq!(dry["dry_run"], true);
        let garbage =
            dry["orphans"].as_array().unwrap().len() + dry["layers"].as_array().unwrap().len();
        assert_eq!(
            ctl.json(&["gc", "--dry-run"]),
            dry,
            "[{}] a dry run removes nothing",
            d.name
        );
        let out = ctl.ok(&["gc"]);
        assert!(out.contains("Total reclaimed space: "), "{out}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with("Deleted ")).count(),
            garbage,
            "[{}] gc removed what the dry run listed: {out}",
            d.name
        );
        ctl.ok(&["check"]);
        assert_eq!(
            du_sb(&ctl.root),
            before,
            "[{}] du -sb after gc (garbage: {dry})",
            d.name
        );
        assert_eq!(ctl.json(&["gc"])["bytes"], 0, "[{}] nothing left", d.name);
        // The image is whole.
        ctl.ok(&["create", "again", "sample"]);
        let m = ctl.mount("again");
        assert!(m.join("etc/passwd").is_file());
        ctl.ok(&["umount", "again"]);
    }
}
