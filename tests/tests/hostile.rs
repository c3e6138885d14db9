//! Hostile inputs: every one is refused with exit 5 and a message naming the entry,
//! nothing appears outside the store, `layerctl check` passes afterwards and a good
//! import still works.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layerctl_tests::fixtures::{sample_image, Entry, Layer};
use layerctl_tests::harness::{self, Ctl};
use layerctl_tests::hostile::{hostile_cases, Accept, RawEntry};

/// Every file name the hostile tars try to create; none may exist anywhere afterwards.
const PLANTED: &[&str] = &[
    "escape-dotdot",
    "escape-deep",
    "escape-abs",
    "pwned-abs",
    "pwned-rel",
    "pwned-top",
    "hl-out",
    "hl-out-abs",
    "passwd-link",
    "hl-via-symlink",
];

fn find_planted(dir: &Path, found: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if PLANTED.contains(&name.as_str()) {
            found.push(e.path().display().to_string());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_planted(&e.path(), found);
        }
    }
}

fn hostile_on(driver: &str) {
    let ctl = Ctl::new(driver);
    // The directory the escapes aim at: absolute, outside the store and its temp dir.
    let outside = tempfile::Builder::new()
        .prefix("layerctl-e2e-outside-")
        .tempdir_in("/tmp")
        .unwrap();
    let target = outside.path().join("target-file");
    std::fs::write(&target, "precious\n").unwrap();
    let passwd_nlink = std::fs::metadata("/etc/passwd").unwrap().nlink();
    // Sentinels next to the root: the shallow `../x` escapes land here if anywhere.
    let tmp_entries_before: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();

    // A good image first, so escapes through existing layers are also covered.
    let good = ctl.write_work("good.tar", &sample_image("x").layers[0].tar());
    ctl.import(&good, "good");

    let mut failures = Vec::new();
    for case in hostile_cases(outside.path()) {
        let file = ctl.write_work(&format!("hostile-{}.tar", case.name), &case.bytes);
        let r = ctl.run(&[
            "import".as_ref(),
            file.as_os_str(),
            "--name".as_ref(),
            case.name.as_ref(),
        ]);
        eprintln!(
            "[{driver}] {}: exit {}: {}",
            case.name,
            r.code,
            r.stderr.trim()
        );
        // Our apply clamps symlink writes into the layer (Docker's FollowSymlinkInScope)
        // and lets the last duplicate win: those cases must succeed, every other one must
        // be refused with exit 5. One outcome per case, so a change of policy shows.
        let must_succeed = case.accept != Accept::Never;
        let want = if must_succeed { 0 } else { 5 };
        if r.code != want {
            failures.push(format!(
                "{}: exit {} (want {want}), stderr: {}",
                case.name,
                r.code,
                r.stderr.trim()
            ));
        } else if r.code != 0 {
            if !r.stderr.starts_with("layerctl: ") || r.stderr.lines().count() != 1 {
                failures.push(format!(
                    "{}: error is not one `layerctl: ` line: {:?}",
                    case.name, r.stderr
                ));
            }
            if r.stderr
                .trim_end()
                .chars()
                .any(|c| c.is_control() || c == '\u{fffd}')
            {
                failures.push(format!(
                    "{}: message has control or undecodable bytes: {:?}",
                    case.name, r.stderr
                ));
            }
            if !case.tokens.is_empty() && !case.tokens.iter().any(|t| r.stderr.contains(t.as_str()))
            {
                failures.push(format!(
                    "{}: message does not name the entry (any of {:?}): {}",
                    case.name,
                    case.tokens,
                    r.stderr.trim()
                ));
            }
        }
        for p in &case.must_not_exist {
            if p.symlink_metadata().is_ok() {
                failures.push(format!(
                    "{}: created {} OUTSIDE the store",
                    case.name,
                    p.display()
                ));
            }
        }
        let listing: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if listing != [std::ffi::OsString::from("target-file")] {
            failures.push(format!("{}: outside dir changed: {listing:?}", case.name));
        }
        let md = std::fs::metadata(&target).unwrap();
        if md.nlink() != 1 || std::fs::read_to_string(&target).unwrap() != "precious\n" {
            failures.push(format!(
                "{}: outside target-file linked or changed",
                case.name
            ));
        }
        if std::fs::metadata("/etc/passwd").unwrap().nlink() != passwd_nlink {
            failures.push(format!("{}: /etc/passwd got a new hard link", case.name));
        }
        let chk = ctl.run(&["check"]);
        if chk.code != 0 {
            failures.push(format!(
                "{}: check exit {}: {}{}",
                case.name, chk.code, chk.stdout, chk.stderr
            ));
        }
        // A symlink write that was accepted must have been clamped into the layer.
        if let (Accept::ClampedTo(rel), 0) = (&case.accept, r.code) {
            let layers = ctl.json(&["layers", case.name]);
            let cache = layers[0]["cache_id"].as_str().expect("cache_id");
            let inside = ctl.layer_dir(cache).join(rel);
            if std::fs::read(&inside).ok().as_deref() != Some(b"x".as_slice()) {
                failures.push(format!(
                    "{}: accepted, but the write is not clamped to {} in the layer",
                    case.name,
                    inside.display()
                ));
            }
            ctl.ok(&["rmi", case.name]);
        }
        // A duplicate-entry tar that was accepted must hold the last version.
        if case.accept == Accept::LastWins && r.code == 0 {
            ctl.ok(&["create", "dupc", case.name]);
            let m = ctl.mount("dupc");
            assert_eq!(
                std::fs::read(m.join("dup")).unwrap(),
                b"second",
                "last duplicate wins"
            );
            assert_eq!(std::fs::read(m.join("dup2/child")).unwrap(), b"child");
            ctl.ok(&["umount", "dupc"]);
            ctl.ok(&["rm", "dupc"]);
            ctl.ok(&["rmi", case.name]);
        }
    }
    let mut planted = Vec::new();
    find_planted(ctl.base(), &mut planted);
    find_planted(outside.path(), &mut planted);
    for e in std::fs::read_dir("/tmp").unwrap().flatten() {
        if !tmp_entries_before.contains(&e.file_name())
            && PLANTED.contains(&e.file_name().to_string_lossy().as_ref())
        {
            planted.push(e.path().display().to_string());
        }
    }
    for p in planted {
        failures.push(format!("planted file exists: {p}"));
    }

    // Only the good image (and perhaps the duplicate-entry one) was stored.
    let images = ctl.json(&["images"]);
    if images.as_array().unwrap().len() != 1 {
        failures.push(format!("rejected imports left images: {images}"));
    }
    ctl.ok(&["check"]);

    // The store still works.
    let good2 = ctl.write_work(
        "good2.tar",
        &Layer::new(vec![
            Entry::dir("etc"),
            Entry::file("etc/after", b"after\n".to_vec()),
        ])
        .tar(),
    );
    ctl.import(&good2, "after");
    ctl.ok(&["create", "c", "after"]);
    let m = ctl.mount("c");
    assert_eq!(
        std::fs::read_to_string(m.join("etc/after")).unwrap(),
        "after\n"
    );
    ctl.ok(&["umount", "c"]);
    ctl.ok(&["rm", "c"]);
    ctl.ok(&["check"]);
    assert!(
        failures.is_empty(),
        "[{driver}] hostile inputs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn hostile_inputs_every_driver() {
    for d in harness::drivers("hostile") {
        hostile_on(d.name);
    }
}

/// A hostile layer inside a docker-save archive is refused just the same.
#[test]
fn hostile_layer_in_docker_save() {
    if !harness::can_run("hostile", "vfs") {
        return;
    }
    let ctl = Ctl::new("vfs");
    let outside = tempfile::Builder::new()
        .prefix("layerctl-e2e-outside-")
        .tempdir_in("/tmp")
        .unwrap();
    let evil = layerctl_tests::hostile::raw_tar(&[
        RawEntry::symlink("evil", &outside.path().to_string_lossy()),
        RawEntry::file("evil/pwned-abs", b"x"),
    ]);
    let diff_id = layerctl_tests::fixtures::sha256_digest(&evil);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let cfg_name = format!(
        "{}.json",
        layerctl_tests::fixtures::sha256_digest(&config).trim_start_matches("sha256:")
    );
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_name, "RepoTags": ["evil:latest"], "Layers": ["l0/layer.tar"],
    }]))
    .unwrap();
    let archive = layerctl_tests::fixtures::plain_archive(&[
        ("l0/layer.tar".into(), evil),
        (cfg_name, config),
        ("manifest.json".into(), manifest),
    ]);
    let f = ctl.write_work("evil-save.tar", &archive);
    let r = ctl.run(&["import".as_ref(), f.as_os_str()]);
    if r.code == 0 {
        // Accepted with in-root symlink resolution: the file is inside the layer.
        let layers = ctl.json(&["layers"]);
        let cache = layers[0]["cache_id"].as_str().unwrap();
        let rel = outside.path().strip_prefix("/").unwrap().join("pwned-abs");
        assert!(
            ctl.layer_dir(cache).join(rel).is_file(),
            "write through symlink not clamped"
        );
    } else {
        assert_eq!(r.code, 5, "{r:?}");
        assert!(
            r.stderr.contains("pwned-abs") || r.stderr.contains("evil"),
            "{}",
            r.stderr
        );
    }
    assert!(!outside.path().join("pwned-abs").exists());
    ctl.ok(&["check"]);
}
