//! `layerctl save` (issue 8) with the real binary on every driver of
//! `harness::DRIVERS`, and the archives checked by tools no one here wrote:
//!
//! - round trip: import, create, mutate (every change of `mutations::mutate`), commit,
//!   commit again on top, save, import into a fresh store: same image id, a container
//!   shows the same tree entry by entry, history shows both commits, `check
//!   --verify-content` passes; with `--compress gzip|zstd` the manifests name the
//!   compressed blobs and the image id stays; the archive is the same bytes on every
//!   driver;
//! - every layer of multi-layer fixtures (gzip, zstd with skippable frames, GNU tar
//!   gnu/posix with long names, hard links, xattrs, all four sparse forms, no
//!   end-of-archive blocks, base-256 numbers, usrmerge, same-layer whiteouts) comes
//!   back byte for byte;
//! - a layer changed on disk: `save` refuses (exit 5, layer and entry named, no output
//!   file), `check --verify-content` names it (exit 8);
//! - real clients: `skopeo inspect oci-archive:F`, `skopeo copy oci-archive:F
//!   docker-archive:G` then `layerctl import G` (same id), `umoci unpack` (same tree as
//!   the mount), `containers-storage import-layer` of each blob (same DiffIDs).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use layerctl_tests::fidelity_inputs::{self as fi, SparseFormat};
use layerctl_tests::fixtures::{oci_archive_of, sample_image, sha256_digest, LayerBlob};
use layerctl_tests::harness::{self, is_digest, Ctl};
use layerctl_tests::mutations::{mutate, set_mtime_nofollow, tree, write_file, EXPECTED_DIFF};
use layerctl_tests::tree::{compare_trees, snapshot, Node, Xattrs};

/// The members of a tar file, by normalised name.
fn members(file: &Path) -> BTreeMap<String, Vec<u8>> {
    let f = fs::File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    let mut ar = tar::Archive::new(f);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name, data);
    }
    out
}

fn json_of(m: &BTreeMap<String, Vec<u8>>, name: &str) -> serde_json::Value {
    serde_json::from_slice(m.get(name).unwrap_or_else(|| panic!("{name} in archive")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `save ARGS -o FILE`; checks it prints nothing and that `-o -` gives the same bytes.
fn save(ctl: &Ctl, file: &str, args: &[&str]) -> PathBuf {
    let out = ctl.work.join(file);
    let mut full: Vec<&str> = vec!["save"];
    full.extend(args);
    let mut with_o = full.clone();
    with_o.extend(["-o", out.to_str().unwrap()]);
    assert_eq!(ctl.ok(&with_o), "", "save -o FILE prints nothing");
    let mut stdout = full;
    stdout.extend(["-o", "-"]);
    let o = ctl.cmd().args(&stdout).output().unwrap();
    assert!(o.status.success(), "save -o -: {o:?}");
    assert!(
        o.stdout == fs::read(&out).unwrap(),
        "[{}] save {args:?} is not deterministic",
        ctl.driver
    );
    out
}

/// The image's layers as `layers --json` lists them: (diff id, chain id).
fn diff_ids(ctl: &Ctl, image: &str) -> Vec<String> {
    ctl.json(&["layers", image])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap().to_owned())
        .collect()
}

fn commit(ctl: &Ctl, container: &str, name: &str, message: &str) -> String {
    let out = ctl.ok(&["commit", container, "--name", name, "--message", message]);
    let id = out.trim().to_owned();
    assert!(is_digest(&id), "commit prints the image id: {out:?}");
    id
}

/// Checks the archive's two views agree: index.json -> manifest -> config and layers,
/// manifest.json -> the same blobs; every blob hashes to its name. Returns the OCI
/// manifest of the first image.
fn check_archive(m: &BTreeMap<String, Vec<u8>>, image_id: &str) -> serde_json::Value {
    for (name, data) in m {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(sha256_digest(data), format!("sha256:{hex}"), "blob {name}");
        }
    }
    assert_eq!(json_of(m, "oci-layout")["imageLayoutVersion"], "1.0.0");
    let index = json_of(m, "index.json");
    assert_eq!(index["schemaVersion"], 2);
    let desc = &index["manifests"][0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let mhex = desc["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest = json_of(m, &format!("blobs/sha256/{mhex}"));
    assert_eq!(
        manifest["config"]["digest"], image_id,
        "config blob = the image id"
    );
    let docker = json_of(m, "manifest.json");
    assert_eq!(
        docker[0]["Config"],
        format!("blobs/sha256/{}", image_id.trim_start_matches("sha256:"))
    );
    let oci_layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "blobs/sha256/{}",
                l["digest"].as_str().unwrap().trim_start_matches("sha256:")
            )
        })
        .collect();
    let docker_layers: Vec<String> = docker[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        oci_layers, docker_layers,
        "both views name the same layer blobs"
    );
    manifest
}

fn decompress(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(data).unwrap()
    } else {
        data.to_vec()
    }
}

/// Round trip on one driver; returns the saved layer blobs (name, sha256 of content).
fn round_trip(ctl: &Ctl) -> Vec<(String, String)> {
    let d = &ctl.driver;
    let img = sample_image("sample");
    ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
    ctl.ok(&["create", "c1", "sample"]);
    let m1 = ctl.mount("c1");
    mutate(&m1);
    assert_eq!(ctl.ok(&["diff", "c1"]), EXPECTED_DIFF, "[{d}] diff");
    commit(ctl, "c1", "one:1", "first commit");
    ctl.ok(&["create", "c2", "one:1"]);
    let m2 = ctl.mount("c2");
    write_file(&m2.join("second"), b"2\n");
    fs::remove_file(m2.join("etc/passwd")).unwrap();
    set_mtime_nofollow(&m2.join("etc"));
    assert_eq!(
        ctl.ok(&["diff", "c2"]),
        "C /etc\nD /etc/passwd\nA /second\n"
    );
    let two = commit(ctl, "c2", "two:2", "second commit");
    ctl.ok(&["create", "c3", "two:2"]);
    let m3 = ctl.mount("c3");
    let want = tree(&m3);
    let want_diffs = diff_ids(ctl, "two:2");
    assert_eq!(want_diffs.len(), 5);

    let plain = save(ctl, "two.tar", &["two:2"]);
    let m = members(&plain);
    let manifest = check_archive(&m, &two);
    // Docker's own `docker save` (v25+) and containerd spell the index's name in full.
    let ann = &json_of(&m, "index.json")["manifests"][0]["annotations"];
    assert_eq!(
        ann["io.containerd.image.name"], "docker.io/library/two:2",
        "[{d}]"
    );
    assert_eq!(ann["org.opencontainers.image.ref.name"], "2", "[{d}]");
    assert_eq!(
        json_of(&m, "manifest.json")[0]["RepoTags"][0],
        "two:2",
        "[{d}]"
    );
    let layer_digests: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layer_digests, want_diffs,
        "[{d}] plain blobs are the DiffIDs"
    );
    assert_eq!(
        json_of(&m, "manifest.json")[0]["RepoTags"],
        serde_json::json!(["two:2"])
    );
    assert_eq!(
        json_of(&m, "index.json")["manifests"][0]["annotations"]
            ["org.opencontainers.image.ref.name"],
        "2"
    );
    ctl.ok(&["check", "--verify-content"]);

    // A fresh store: same id, same tree, both commits in the history.
    let fresh = Ctl::new(d);
    let out = fresh.ok(&["import", plain.to_str().unwrap()]);
    assert_eq!(out.lines().last().unwrap(), two, "[{d}] same image id");
    assert_eq!(diff_ids(&fresh, "two:2"), want_diffs);
    fresh.ok(&["create", "x", "two:2"]);
    let mx = fresh.mount("x");
    let diffs = compare_trees(&want, &tree(&mx));
    assert!(
        diffs.is_empty(),
        "[{d}] saved and imported vs original:\n{}",
        diffs.join("\n")
    );
    let h = fresh.json(&["history", "two:2"]);
    let comments: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["comment"].as_str())
        .collect();
    assert_eq!(comments, ["first commit", "second commit"], "[{d}] {h}");
    fresh.ok(&["check", "--verify-content"]);
    // The re-imported layers save to the same archive.
    let again = save(&fresh, "again.tar", &["two:2"]);
    assert!(
        fs::read(&again).unwrap() == fs::read(&plain).unwrap(),
        "[{d}] save of the re-import differs"
    );
    fresh.ok(&["umount", "x"]);

    // Several images: shared layers are written once; each image has its entries.
    let all = save(ctl, "all.tar", &["two:2", "one:1", "sample", "two:2"]);
    let m_all = members(&all);
    let blobs = m_all
        .keys()
        .filter(|k| k.starts_with("blobs/sha256/"))
        .count();
    assert_eq!(
        blobs,
        5 + 3 + 3,
        "[{d}] 5 layers, 3 configs, 3 manifests once each"
    );
    let docker = json_of(&m_all, "manifest.json");
    let tags: Vec<&serde_json::Value> = docker
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["RepoTags"])
        .collect();
    assert_eq!(
        tags,
        [
            &serde_json::json!(["two:2"]),
            &serde_json::json!(["one:1"]),
            &serde_json::json!(["sample"])
        ]
    );
    assert_eq!(
        json_of(&m_all, "index.json")["manifests"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let multi = Ctl::new(d);
    multi.ok(&["import", all.to_str().unwrap()]);
    assert_eq!(
        multi.json(&["images"]).as_array().unwrap().len(),
        3,
        "[{d}] three images back"
    );

    // Compressed: manifests name the compressed blobs, DiffIDs and the id stay.
    for (c, mt) in [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip"),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
    ] {
        let f = save(ctl, &format!("two-{c}.tar"), &["two:2", "--compress", c]);
        let m = members(&f);
        let manifest = check_archive(&m, &two);
        for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
            assert_eq!(l["mediaType"], mt, "[{d}] {c}");
            assert_ne!(
                l["digest"],
                want_diffs[i].as_str(),
                "[{d}] {c}: compressed digest"
            );
            let blob = &m[&format!(
                "blobs/sha256/{}",
                l["digest"].as_str().unwrap().trim_start_matches("sha256:")
            )];
            assert_eq!(
                sha256_digest(&decompress(blob)),
                want_diffs[i],
                "[{d}] {c} layer {i}"
            );
        }
        let other = Ctl::new(d);
        let out = other.ok(&["import", f.to_str().unwrap()]);
        assert_eq!(out.lines().last().unwrap(), two, "[{d}] {c}: same image id");
        other.ok(&["check", "--verify-content"]);
    }
    for c in ["c1", "c2", "c3"] {
        ctl.ok(&["umount", c]);
    }
    let layers: Vec<(String, String)> = json_of(&m, "manifest.json")[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let n = l.as_str().unwrap().to_owned();
            let digest = sha256_digest(&m[&n]);
            (n, digest)
        })
        .collect();
    layers
}

#[test]
fn save_round_trip_every_driver() {
    let mut archives = Vec::new();
    for d in harness::drivers("save") {
        let ctl = Ctl::new(d.name);
        archives.push((d.name, round_trip(&ctl)));
    }
    // Configs differ (commit times); the layer blobs must not.
    for w in archives.windows(2) {
        assert_eq!(
            w[0].1, w[1].1,
            "{} and {} save different layers",
            w[0].0, w[1].0
        );
    }
}

/// A tree for GNU tar: PAX/GNU long names, a hard link, a symlink, an xattr, an empty
/// file, fixed mtimes.
fn gnu_tree(dir: &Path) {
    let deep = dir.join("long").join("n".repeat(80)).join("m".repeat(80));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(110)), b"deep\n").unwrap();
    fs::write(dir.join("file"), layerctl_tests::fixtures::noise(70_000, 3)).unwrap();
    fs::hard_link(dir.join("file"), dir.join("hard")).unwrap();
    std::os::unix::fs::symlink("file", dir.join("sym")).unwrap();
    fs::write(dir.join("empty"), b"").unwrap();
    xattr::set(dir.join("file"), "user.origin", b"gnu tar").unwrap();
}

fn gnu_tar(src: &Path, args: &[&str]) -> Vec<u8> {
    let o = Command::new("tar")
        .args(args)
        .args(["--numeric-owner", "--mtime=@1700000000", "-cf", "-", "-C"])
        .arg(src)
        .arg(".")
        .output()
        .expect("GNU tar");
    assert!(
        o.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Import then save of multi-layer fixtures reproduces every layer byte for byte.
#[test]
fn save_reproduces_every_diff_id() {
    let scratch = tempfile::Builder::new()
        .prefix("layerctl-save-fixtures-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let src = scratch.path().join("gnu-src");
    fs::create_dir(&src).unwrap();
    gnu_tree(&src);
    let sample = sample_image("sample").layer_blobs();
    let mut fixtures: Vec<(&str, Vec<LayerBlob>)> = vec![
        ("sample (plain, gzip, zstd)", sample),
        (
            "gnu tar",
            vec![
                LayerBlob::plain(gnu_tar(&src, &["--format=gnu"])),
                LayerBlob::plain(gnu_tar(
                    &src,
                    &[
                        "--format=posix",
                        "--xattrs",
                        "--pax-option=delete=atime,delete=ctime",
                    ],
                )),
                LayerBlob::plain(gnu_tar(&src, &["--format=ustar", "--exclude=./long/n*"])),
            ],
        ),
        (
            "sparse",
            [
                SparseFormat::Pax00,
                SparseFormat::Pax01,
                SparseFormat::Pax10,
                SparseFormat::OldGnu,
            ]
            .into_iter()
            .map(|f| LayerBlob::plain(fi::gnu_sparse_tar(scratch.path(), f).unwrap()))
            .collect(),
        ),
        (
            "odd tars",
            vec![
                LayerBlob::plain(fi::without_eof_blocks(scratch.path()).unwrap()),
                LayerBlob::plain(fi::base256_tar(scratch.path()).unwrap()),
            ],
        ),
        (
            "usrmerge",
            fi::usrmerge().into_iter().map(LayerBlob::plain).collect(),
        ),
        (
            "same-layer whiteouts",
            fi::same_layer_whiteouts()
                .into_iter()
                .map(LayerBlob::plain)
                .collect(),
        ),
        (
            "symlink hard links",
            fi::symlink_hard_links()
                .into_iter()
                .map(LayerBlob::plain)
                .collect(),
        ),
    ];
    let tars = fi::zstd_layers();
    let blobs = fi::zstd_with_skippable_frames(&tars).unwrap();
    fixtures.push((
        "zstd skippable frames",
        tars.into_iter()
            .zip(blobs)
            .map(|(tar, blob)| LayerBlob {
                tar,
                blob,
                media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            })
            .collect(),
    ));
    for d in harness::drivers("save-fixtures") {
        let ctl = Ctl::new(d.name);
        for (i, (what, layers)) in fixtures.iter().enumerate() {
            let name = format!("fx{i}");
            let f = ctl.write_work(&format!("{name}.oci.tar"), &oci_archive_of(layers));
            let id = ctl.import(&f, &name);
            let saved = save(&ctl, &format!("{name}.saved.tar"), &[&name]);
            let m = members(&saved);
            let manifest = check_archive(&m, &id);
            let got = manifest["layers"].as_array().unwrap();
            assert_eq!(got.len(), layers.len(), "[{}] {what}", d.name);
            for (j, (l, want)) in got.iter().zip(layers).enumerate() {
                let blob = &m[&format!(
                    "blobs/sha256/{}",
                    l["digest"].as_str().unwrap().trim_start_matches("sha256:")
                )];
                assert!(
                    blob == &want.tar,
                    "[{}] {what}: layer {j} is not the original tar",
                    d.name
                );
            }
        }
        ctl.ok(&["check", "--verify-content"]);
    }
}

/// A layer changed on disk: save refuses and leaves no file; check names the layer.
#[test]
fn save_refuses_a_changed_layer() {
    for d in harness::drivers("save-changed") {
        let ctl = Ctl::new(d.name);
        let img = sample_image("sample");
        ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
        let chain0 = ctl.json(&["layers", "sample"])[0]["chain_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let dir0 = ctl.image_layer_dirs("sample")[0].clone();
        // Same size, other bytes: the recorded CRC-32 names the file.
        let passwd = dir0.join("etc/passwd");
        let mut data = fs::read(&passwd).unwrap();
        data[0] = b'R';
        fs::write(&passwd, &data).unwrap();
        let out = ctl.work.join("refused.tar");
        let r = ctl.fails(&["save", "sample", "-o", out.to_str().unwrap()], 5);
        assert!(
            r.stderr.contains(&chain0)
                && r.stderr.contains("changed on disk")
                && r.stderr.contains("etc/passwd"),
            "[{}] {r:?}",
            d.name
        );
        assert!(!out.exists(), "[{}] no partial output", d.name);
        let left: Vec<_> = fs::read_dir(&ctl.work)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !left.iter().any(|n| n.to_string_lossy().contains("refused")),
            "[{}] temp file left: {left:?}",
            d.name
        );
        let r = ctl.fails(&["check", "--verify-content"], 8);
        assert!(r.stdout.contains(&chain0), "[{}] {r:?}", d.name);
        assert_eq!(
            r.stdout.matches("changed on disk").count(),
            1,
            "[{}] one layer changed: {r:?}",
            d.name
        );
        ctl.ok(&["check"]);
        // Another size: the entry is named.
        fs::write(dir0.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        let r = ctl.fails(&["save", "sample", "-o", out.to_str().unwrap()], 5);
        assert!(
            r.stderr.contains("bin/tool") && r.stderr.contains("size"),
            "[{}] {r:?}",
            d.name
        );
        assert!(!out.exists());
        ctl.fails(&["save", "no-such-image", "-o", out.to_str().unwrap()], 3);
    }
}

/// Tools no one here wrote accept the archive.
#[test]
fn real_clients_accept_saved_archives() {
    for tool in ["skopeo", "umoci", "containers-storage"] {
        if Command::new(tool).arg("--version").output().is_err() {
            let msg =
                format!("save real clients: {tool} is not installed (scripts/test.sh installs it)");
            if harness::privileged_required() {
                panic!("{msg}");
            }
            eprintln!("SKIP {msg}");
            return;
        }
    }
    let Some(d) = harness::drivers("save-clients").into_iter().next() else {
        return;
    };
    let ctl = Ctl::new(d.name);
    let img = sample_image("sample");
    let id = ctl.import(&ctl.write_work("sample.tar", &img.docker_save()), "sample");
    let diffs = diff_ids(&ctl, "sample");
    let f = save(&ctl, "sample-save.tar", &["sample"]);
    let m = members(&f);
    let manifest = check_archive(&m, &id);

    // skopeo inspect
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", f.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["Layers"],
        serde_json::json!(diffs),
        "skopeo sees the layers: {v}"
    );
    assert_eq!(v["Os"], "linux");

    // skopeo copy to docker-archive, then import: the same image id.
    let g = ctl.work.join("via-skopeo.tar");
    let o = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", f.display()))
        .arg(format!("docker-archive:{}:sample:latest", g.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let other = Ctl::new(d.name);
    let out = other.ok(&["import", g.to_str().unwrap()]);
    assert_eq!(
        out.lines().last().unwrap(),
        id,
        "skopeo's docker-archive imports as the same image"
    );

    // umoci unpack: the same tree as the mount (without what only the init layer adds).
    let layout = ctl.work.join("layout");
    fs::create_dir(&layout).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&f)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let bundle = ctl.work.join("bundle");
    let o = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    ctl.ok(&["create", "c", "sample"]);
    let mnt = ctl.mount("c");
    let mut want: BTreeMap<String, Node> = snapshot(&mnt, Xattrs::User).unwrap();
    want.retain(|p, _| !harness::is_init_path(p) || p == "etc" || p == "dev");
    let got = snapshot(&bundle.join("rootfs"), Xattrs::User).unwrap();
    let diffs_t = compare_trees(&want, &got);
    assert!(
        diffs_t.is_empty(),
        "mount vs umoci unpack:\n{}",
        diffs_t.join("\n")
    );
    ctl.ok(&["umount", "c"]);

    // containers-storage import-layer of each blob, on its parent: same DiffIDs.
    let cs = ctl.work.join("cs");
    let cs_cmd = || {
        let mut c = Command::new("containers-storage");
        c.arg("-g")
            .arg(cs.join("graph"))
            .arg("-R")
            .arg(cs.join("run"))
            .args(["-s", "vfs"]);
        c
    };
    let mut parent: Option<String> = None;
    for l in manifest["layers"].as_array().unwrap() {
        let blob = layout
            .join("blobs/sha256")
            .join(l["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let mut c = cs_cmd();
        c.arg("import-layer").arg("-f").arg(&blob);
        if let Some(p) = &parent {
            c.arg(p);
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "containers-storage import-layer: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        parent = Some(String::from_utf8_lossy(&o.stdout).trim().to_owned());
    }
    let o = cs_cmd().args(["layers", "-j"]).output().unwrap();
    assert!(
        o.status.success(),
        "containers-storage layers: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut got: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff-digest"].as_str().unwrap().to_owned())
        .collect();
    let mut want_d = diffs.clone();
    got.sort();
    want_d.sort();
    assert_eq!(
        got, want_d,
        "containers-storage computed the same DiffIDs: {v}"
    );
    // containers-storage keeps its own mounts and state below cs/: nothing is mounted.
    let _ = Command::new("containers-storage")
        .arg("-g")
        .arg(cs.join("graph"))
        .arg("-R")
        .arg(cs.join("run"))
        .args(["-s", "vfs", "shutdown"])
        .output();
}
