//! Breaking layerctl as a new user would (breaker 4): real-world image shapes and CLI
//! habits the other suites do not try. Each test is the smallest reproduction of one
//! failure found by hand; the commit that adds it says what was wrong.

use std::path::PathBuf;

use layerctl_tests::fixtures::{oci_files_of, Entry, Layer, LayerBlob};
use layerctl_tests::harness::Ctl;
use serde_json::{json, Value};

fn one_file_layer(name: &str) -> LayerBlob {
    LayerBlob::plain(Layer::new(vec![Entry::file(name, name.as_bytes().to_vec())]).tar())
}

/// `images --json` as a sorted list of (names sorted, id).
fn image_names(ctl: &Ctl) -> Vec<(Vec<String>, String)> {
    let mut v: Vec<(Vec<String>, String)> = ctl
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut n: Vec<String> = i["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            n.sort();
            (n, i["id"].as_str().unwrap().to_owned())
        })
        .collect();
    v.sort();
    v
}

/// An OCI layout as `skopeo copy ... oci:DIR:1` then `oci:DIR:2` and `:latest` build it:
/// image A tagged `1` (bare-tag ref.name), image B tagged `2` and `latest`; B's entries
/// also carry containerd's full name. Returns the dir.
fn multi_tag_layout(ctl: &Ctl) -> PathBuf {
    let dir = ctl.work.join("multi-tag");
    let mut files = Vec::new();
    let mut manifests = Vec::new();
    for (layer, tags) in [("a", &["1"][..]), ("b", &["2", "latest"][..])] {
        let f = oci_files_of(&[one_file_layer(layer)]);
        let index: Value =
            serde_json::from_slice(&f.iter().find(|(p, _)| p == "index.json").unwrap().1).unwrap();
        let desc = index["manifests"][0].clone();
        for tag in tags {
            let mut d = desc.clone();
            let mut ann = json!({"org.opencontainers.image.ref.name": tag});
            if layer == "b" {
                ann["io.containerd.image.name"] = json!(format!("docker.io/library/real:{tag}"));
            }
            d["annotations"] = ann;
            manifests.push(d);
        }
        files.extend(f.into_iter().filter(|(p, _)| p != "index.json"));
    }
    files.push((
        "index.json".into(),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap(),
    ));
    for (p, data) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

/// `import LAYOUT --name myimg` of a multi-tag layout names every image `myimg:TAG` (as
/// `ctr import --base-name`); without `--name` containerd's full name wins over a
/// bare-tag ref.name. Before: only the last image got `myimg` and image A was left
/// without a name; without `--name`, B was named `2` and `latest`.
#[test]
fn multi_tag_layout_keeps_every_tag() {
    let ctl = Ctl::new("vfs");
    let dir = multi_tag_layout(&ctl);
    let out = ctl.ok(&["import".as_ref(), dir.as_os_str()]);
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 3, "{out}");
    let (a, b) = (ids[0].to_owned(), ids[2].to_owned());
    assert_eq!(image_names(&ctl), {
        let mut v = vec![
            // A's only name is the bare tag `1`: a tag, no name, so A is unnamed.
            (Vec::new(), a.clone()),
            (
                vec![
                    "docker.io/library/real:2".to_owned(),
                    "docker.io/library/real:latest".to_owned(),
                ],
                b.clone(),
            ),
        ];
        v.sort();
        v
    });
    let ctl = Ctl::new("vfs");
    let dir = multi_tag_layout(&ctl);
    ctl.ok(&[
        "import".as_ref(),
        dir.as_os_str(),
        "--name".as_ref(),
        "myimg".as_ref(),
    ]);
    let mut want = vec![
        (vec!["myimg:1".to_owned()], a),
        (
            vec!["myimg:2".to_owned(), "myimg:latest".to_owned()],
            b.clone(),
        ),
    ];
    want.sort();
    assert_eq!(image_names(&ctl), want);
    // `myimg` is `myimg:latest`.
    assert_eq!(ctl.ok(&["tag", "myimg", "other"]).trim(), b);
}

/// `foo` and `foo:latest` are one name: tagging B `foo:latest` takes `foo` from A, and
/// both spellings reach B. Before: A kept `foo`, B got `foo:latest`, `create c foo`
/// used A.
#[test]
fn a_name_is_its_latest_tag() {
    let ctl = Ctl::new("vfs");
    let a = ctl.import(&ctl.write_work("a.tar", &one_file_layer("a").tar), "foo");
    let b = ctl.import(&ctl.write_work("b.tar", &one_file_layer("b").tar), "bar");
    assert_ne!(a, b);
    ctl.ok(&["tag", &b, "foo:latest"]);
    let mut want = vec![
        (Vec::new(), a.clone()),
        (vec!["bar".to_owned(), "foo:latest".to_owned()], b.clone()),
    ];
    want.sort();
    assert_eq!(image_names(&ctl), want);
    ctl.ok(&["create", "c", "foo"]);
    let ps = ctl.json(&["ps"]);
    assert_eq!(ps[0]["image"].as_str().unwrap(), b, "{ps}");
}

/// `untag <id>` says that an id is not a name (exit 3, one line naming the image and
/// its names), and leaves the names. Before: `image "<id>" not found` for an image
/// `images` lists.
#[test]
fn untag_of_an_id_says_ids_are_not_names() {
    let ctl = Ctl::new("vfs");
    let id = ctl.import(&ctl.write_work("a.tar", &one_file_layer("a").tar), "foo:1");
    let short = &id["sha256:".len()..][..12];
    let r = ctl.fails(&["untag", short], 3);
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr.contains("not a name") && r.stderr.contains(&id) && r.stderr.contains("foo:1"),
        "{r:?}"
    );
    assert_eq!(image_names(&ctl), vec![(vec!["foo:1".to_owned()], id)]);
    ctl.fails(&["untag", "nosuchname"], 3);
}

/// `--root` naming a file (or a path below one) is a configuration error: exit 7, one
/// line naming the root, for a command that only reads and one that writes. Before:
/// exit 1, "read /etc/passwd/driver: Not a directory".
#[test]
fn root_that_is_a_file_is_a_config_error() {
    let ctl = Ctl::new("vfs");
    let file = ctl.write_work("not-a-dir", b"x");
    for root in [file.clone(), file.join("below")] {
        for args in [&["images"][..], &["import", "-"][..]] {
            let out = std::process::Command::new(&ctl.bin)
                .arg("--root")
                .arg(&root)
                .args(args)
                .env("LAYERCTL_CONFIG", ctl.write_work("empty.toml", b""))
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(7), "{root:?} {args:?}: {err}");
            assert_eq!(
                err.trim(),
                format!("layerctl: store root {} is not a directory", root.display()),
            );
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// `export`/`save -o -` into a pipe its reader closed, and `-o /dev/full`: one line
/// naming the output (`write standard output: Broken pipe`, `write /dev/full: No space
/// left on device`), exit 1, the store still clean. Before: `write tar
/// <root>/vfs/dir/<id>/big: Broken pipe`, naming the layer file being copied.
#[test]
fn output_errors_name_the_output() {
    use std::io::Read;
    use std::process::Stdio;
    let ctl = Ctl::new("vfs");
    let big = layerctl_tests::fixtures::noise(4 << 20, 7);
    let tar = Layer::new(vec![Entry::file("big", big)]).tar();
    ctl.import(&ctl.write_work("big.tar", &tar), "big");
    for cmd in ["export", "save"] {
        let mut child = ctl
            .cmd()
            .args([cmd, "big", "-o", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 512];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        // The read end is dropped here: the next writes get EPIPE.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert_eq!(
            err.trim(),
            "layerctl: write standard output: Broken pipe (os error 32)",
            "{cmd}"
        );
        let r = ctl.fails(&[cmd, "big", "-o", "/dev/full"], 1);
        assert_eq!(
            r.stderr.trim(),
            "layerctl: write /dev/full: No space left on device (os error 28)",
            "{cmd}"
        );
        // A FILE in a missing directory is named as given, not by its temp name.
        let r = ctl.fails(&[cmd, "big", "-o", "/nonexistent-dir/x.tar"], 1);
        assert_eq!(
            r.stderr.trim(),
            "layerctl: create /nonexistent-dir/x.tar: No such file or directory (os error 2)",
            "{cmd}"
        );
    }
    ctl.ok(&["check"]);
}

/// An image whose entry nearly fills its xattr space (ext4: the inode's spare bytes
/// plus one 4 KiB block) gets one answer on every driver: refused at import (exit 5,
/// naming the entry) or imported, and then a container can write the file and rename
/// in the directory on every driver. Before: vfs and aufs imported a file with
/// 3990 + 30 bytes of `user.*` xattrs and a directory with a 4030-byte one and let a
/// container change them, while overlay2 imported them too but failed the write (copy-up)
/// and the rename (`trusted.overlay.impure`) with ENOSPC. Filesystems with more xattr
/// space (xfs, btrfs) import and change all of them everywhere.
#[test]
fn nearly_full_xattr_space_gives_one_answer() {
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "file-4000",
            vec![Entry::file("f", b"x".to_vec()).xattr("user.big", &[b'b'; 4000])],
        ),
        (
            "file-3990-30",
            vec![Entry::file("f", b"x".to_vec())
                .xattr("user.big", &[b'b'; 3990])
                .xattr("user.s", &[b's'; 30])],
        ),
        (
            "dir-4000",
            vec![
                Entry::dir("d").xattr("user.big", &[b'b'; 4000]),
                Entry::file("d/f", b"x".to_vec()),
            ],
        ),
        (
            "dir-4030",
            vec![
                Entry::dir("d").xattr("user.big", &[b'b'; 4030]),
                Entry::file("d/f", b"x".to_vec()),
            ],
        ),
    ];
    let drivers = layerctl_tests::harness::drivers("breaker4 nearly_full_xattr_space");
    for (case, entries) in cases {
        let tar = Layer::new(entries.clone()).tar();
        let mut outcomes = Vec::new();
        for spec in &drivers {
            let ctl = Ctl::new(spec.name);
            let r = ctl.run(&[
                "import".as_ref(),
                ctl.write_work("l.tar", &tar).as_os_str(),
                "--name".as_ref(),
                "x".as_ref(),
            ]);
            let outcome = if r.code != 0 {
                assert_eq!(r.code, 5, "[{}] {case}: {r:?}", spec.name);
                assert!(
                    r.stderr.contains("xattr space") && r.stderr.lines().count() == 1,
                    "[{}] {case}: {r:?}",
                    spec.name
                );
                ctl.ok(&["check"]);
                "refused".to_owned()
            } else {
                ctl.ok(&["create", "c", "x"]);
                let mnt = ctl.mount("c");
                let changed = if mnt.join("d").is_dir() {
                    std::fs::rename(mnt.join("d/f"), mnt.join("d/g"))
                } else {
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(mnt.join("f"))
                        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
                };
                ctl.ok(&["umount", "c"]);
                match changed {
                    Ok(()) => "imported, changed".to_owned(),
                    Err(e) => format!("imported, change failed: {e}"),
                }
            };
            outcomes.push((spec.name, outcome));
        }
        for (driver, outcome) in &outcomes {
            assert!(
                outcome == "refused" || outcome == "imported, changed",
                "{case}: {outcomes:?}"
            );
            assert_eq!(outcome, &outcomes[0].1, "{case} on {driver}: {outcomes:?}");
        }
    }
}

/// The container root's times are the image's `./` entry's on every driver when upper
/// layers (and the init layer) add entries at or below the root without listing `./`
/// ("a directory a layer changes without listing it keeps its times"). Before: vfs
/// kept them, overlay2 and aufs showed the time the layer was imported or the
/// container created (their layer roots were changed by the apply and never restored).
#[test]
fn root_times_survive_layers_without_a_root_entry() {
    const T: u64 = 1_000_000_000;
    let base = Layer::new(vec![
        Entry::dir(".").mtime(T),
        Entry::dir("etc").mtime(T),
        Entry::dir("sub").mtime(T),
    ]);
    let images: Vec<(&str, Vec<Layer>)> = vec![
        // A file in the root and one in a lower directory; the init layer adds
        // dev/, proc/, sys/ in the root and files in etc/.
        (
            "adds",
            vec![
                base.clone(),
                Layer::new(vec![
                    Entry::file("newfile", b"n".to_vec()).mtime(T),
                    Entry::file("sub/new", b"n".to_vec()).mtime(T),
                ]),
            ],
        ),
        // A whiteout in the root.
        (
            "deletes",
            vec![
                base.clone(),
                Layer::new(vec![Entry::file("gone", b"g".to_vec()).mtime(T)]),
                Layer::new(vec![Entry::whiteout("gone")]),
            ],
        ),
    ];
    for spec in layerctl_tests::harness::drivers("breaker4 root_times") {
        let ctl = Ctl::new(spec.name);
        for (name, layers) in &images {
            let tars: Vec<Vec<u8>> = layers.iter().map(Layer::tar).collect();
            let archive = layerctl_tests::fixtures::docker_save_of(name, &tars);
            ctl.import(&ctl.write_work(&format!("{name}.tar"), &archive), name);
            let c = format!("c-{name}");
            ctl.ok(&["create", &c, name]);
            let mnt = ctl.mount(&c);
            use std::os::unix::fs::MetadataExt;
            for rel in [".", "sub", "etc"] {
                let md = std::fs::metadata(mnt.join(rel)).unwrap();
                assert_eq!(md.mtime() as u64, T, "[{}] {name}: {rel} mtime", spec.name);
            }
            ctl.ok(&["umount", &c]);
        }
    }
}

/// `--json diff` prints `[{"kind","path"}]` like every other listing command; a name
/// with a newline stays one element. Before: `--json` was ignored and the text lines
/// came out (a newline in a name split its line).
#[test]
fn diff_json() {
    let ctl = Ctl::new("vfs");
    ctl.import(&ctl.write_work("a.tar", &one_file_layer("a").tar), "a");
    ctl.ok(&["create", "c", "a"]);
    let mnt = ctl.mount("c");
    std::fs::write(mnt.join("two\nlines"), b"x").unwrap();
    std::fs::remove_file(mnt.join("a")).unwrap();
    let mut v: Vec<(String, String)> = ctl
        .json(&["diff", "c"])
        .as_array()
        .unwrap_or_else(|| panic!("diff --json is not an array"))
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_owned(),
                c["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    assert_eq!(
        v,
        [
            ("A".to_owned(), "/two\nlines".to_owned()),
            ("D".to_owned(), "/a".to_owned())
        ]
    );
    ctl.ok(&["umount", "c"]);
}

/// skopeo's docker-archive and containerd name images `docker.io/library/bb:1`; Docker
/// reaches them as `bb:1`, and so does layerctl now (and `me/app` is
/// `docker.io/me/app`). Before: `create c bb` said image "bb" not found for an image
/// `images` listed as `docker.io/library/bb:latest`.
#[test]
fn docker_hub_names_are_normalized() {
    let ctl = Ctl::new("vfs");
    let tar = one_file_layer("a").tar;
    let archive = layerctl_tests::fixtures::docker_save_of("docker.io/library/bb", &[tar]);
    let out = ctl.ok(&[
        "import".as_ref(),
        ctl.write_work("bb.tar", &archive).as_os_str(),
    ]);
    let id = out.lines().last().unwrap().to_owned();
    for reference in [
        "bb",
        "bb:latest",
        "docker.io/library/bb",
        "index.docker.io/library/bb:latest",
    ] {
        assert_eq!(
            ctl.ok(&["tag", reference, "other:1"]).trim(),
            id,
            "{reference}"
        );
    }
    ctl.ok(&["create", "c", "bb"]);
    // Tagging another image `bb` takes the Hub name away from this one.
    let other = ctl.import(&ctl.write_work("o.tar", &one_file_layer("o").tar), "o");
    ctl.ok(&["tag", &other, "bb"]);
    assert_eq!(
        image_names(&ctl)
            .into_iter()
            .find(|(_, i)| *i == id)
            .unwrap()
            .0,
        vec!["other:1".to_owned()]
    );
    ctl.fails(&["create", "d", "quay.io/bb"], 3);
}

/// `import -` of an empty or unreadable stream names standard input, not the spool file
/// the stream was copied to (`<root>/staging/<id>/stdin-<hex>: empty file` before).
#[test]
fn import_from_stdin_names_standard_input() {
    let ctl = Ctl::new("vfs");
    for (input, reason) in [
        (&b""[..], "empty file"),
        (&[0u8; 100][..], "unknown format"),
    ] {
        let mut child = ctl
            .cmd()
            .args(["import", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(
            err.starts_with(&format!("layerctl: standard input: {reason}")),
            "{err}"
        );
        assert!(!err.contains("stdin-"), "{err}");
    }
    assert_eq!(ctl.json(&["images"]).as_array().map(Vec::len), Some(0));
}
