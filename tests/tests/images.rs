//! Multi-layer images (docker-save archive, OCI layout dir, OCI archive) on vfs and
//! overlay2: the mounted tree equals the OCI-semantics expectation entry by entry, both
//! drivers give the same tree, writes through the mount never touch image layers, and on
//! overlay2 a deleted lower file is a 0/0 char device in the rw layer.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use std::time::Instant;

use layerctl_tests::fixtures::{sample_image, Entry, Image, Layer};
use layerctl_tests::harness::{self, Ctl, DriverSpec, RwDeletion};
use layerctl_tests::tree::{self, compare_expected, compare_trees, snapshot, Node, Xattrs};

#[derive(Clone, Copy, Debug)]
enum Format {
    DockerSave,
    OciLayout,
    OciArchive,
}

/// Writes the image in `format` into the scratch dir; returns the path to import.
fn write_image(ctl: &Ctl, img: &Image, format: Format) -> PathBuf {
    match format {
        Format::DockerSave => ctl.write_work("image-docker-save.tar", &img.docker_save()),
        Format::OciArchive => ctl.write_work("image-oci.tar", &img.oci_archive()),
        Format::OciLayout => {
            let dir = ctl.work.join("oci-layout");
            img.write_oci_layout(&dir).expect("write OCI layout");
            dir
        }
    }
}

type Snap = BTreeMap<String, Node>;

/// Imports, mounts and checks one image on one driver; returns the pristine mount snapshot.
fn check_image(driver: &str, format: Format) -> Snap {
    let ctl = Ctl::new(driver);
    let img = sample_image("sample");
    let exp = img.expected().expect("model");
    let path = write_image(&ctl, &img, format);
    let id = ctl.import(&path, "sample");

    // Layers are stored with the DiffIDs and ChainIDs the OCI formulas give.
    let layers = ctl.json(&["layers", "sample"]);
    let got_diff: Vec<&str> = layers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap())
        .collect();
    let got_chain: Vec<&str> = layers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["chain_id"].as_str().unwrap())
        .collect();
    assert_eq!(got_diff, img.diff_ids(), "[{driver} {format:?}] diff ids");
    assert_eq!(
        got_chain,
        img.chain_ids(),
        "[{driver} {format:?}] chain ids"
    );

    let layer_dirs = ctl.image_layer_dirs("sample");
    for d in &layer_dirs {
        assert!(d.is_dir(), "layer dir {} missing", d.display());
    }
    let before: Vec<Snap> = layer_dirs
        .iter()
        .map(|d| tree::fingerprint(d).unwrap())
        .collect();

    ctl.ok(&["create", "c1", id.as_str()]);
    let mnt = ctl.mount("c1");
    ctl.assert_mounted(&mnt, true);
    let pristine = snapshot(&mnt, Xattrs::User).expect("snapshot");
    let diffs = compare_expected(
        &exp,
        &pristine,
        &harness::is_init_path,
        &harness::is_init_path,
    );
    assert!(
        diffs.is_empty(),
        "[{driver} {format:?}] mounted tree differs from the expectation:\n{}",
        diffs.join("\n")
    );
    harness::check_init_layer(&mnt, "c1").expect("init layer");

    // Write through the mount: modify, delete a lower file, create, chmod, big copy-up.
    std::fs::write(mnt.join("etc/passwd"), "changed\n").unwrap();
    std::fs::remove_file(mnt.join("bin/tool")).unwrap();
    std::fs::remove_file(mnt.join("etc/xattrs")).unwrap();
    std::fs::write(mnt.join("new-file"), "created\n").unwrap();
    std::fs::create_dir(mnt.join("opaque/newdir")).unwrap();
    std::fs::set_permissions(
        mnt.join("etc/odd-owner"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(mnt.join("home/big"))
            .unwrap();
        f.write_all(b"appended").unwrap();
    }
    std::fs::remove_dir_all(mnt.join("replace-me")).unwrap();

    assert!(!mnt.join("bin/tool").exists());
    assert_eq!(
        std::fs::read(mnt.join("bin/tool-link")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/passwd")).unwrap(),
        "changed\n"
    );

    let after: Vec<Snap> = layer_dirs
        .iter()
        .map(|d| tree::fingerprint(d).unwrap())
        .collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let d = compare_trees(b, a);
        assert!(
            d.is_empty() && b == a,
            "[{driver} {format:?}] image layer {i} ({}) changed by writes through the mount:\n{}",
            layer_dirs[i].display(),
            d.join("\n")
        );
    }

    let ps = ctl.json(&["ps"]);
    let mount_id = ps[0]["mount_id"].as_str().expect("mount_id").to_string();
    // Deletions show in the rw layer dir the driver's way (harness::DriverSpec).
    let diff = ctl.layer_dir(&mount_id);
    for deleted in ["bin/tool", "etc/xattrs"] {
        let at = diff.join(deleted);
        match ctl.spec.rw_deletion {
            RwDeletion::CharDev00 => {
                let md = std::fs::symlink_metadata(&at).unwrap_or_else(|e| {
                    panic!("no whiteout for {deleted} in {}: {e}", diff.display())
                });
                assert!(
                    std::os::unix::fs::FileTypeExt::is_char_device(&md.file_type())
                        && md.rdev() == 0,
                    "[{driver}] {deleted}: rw layer entry is not a 0/0 char device"
                );
            }
            RwDeletion::WhFile => {
                let (dir, name) = deleted.rsplit_once('/').expect("nested path");
                let wh = diff.join(dir).join(format!(".wh.{name}"));
                assert!(wh.is_file(), "[{driver}] no whiteout {}", wh.display());
            }
            RwDeletion::Absent => assert!(
                std::fs::symlink_metadata(&at).is_err(),
                "[{driver}] {deleted} still in the rw layer {}",
                diff.display()
            ),
        }
    }
    assert_eq!(
        std::fs::read_to_string(diff.join("new-file")).unwrap(),
        "created\n"
    );

    // Writes persist across umount/mount (they live in the rw layer).
    ctl.ok(&["umount", "c1"]);
    ctl.assert_mounted(&mnt, false);
    let mnt2 = ctl.mount("c1");
    assert_eq!(
        std::fs::read_to_string(mnt2.join("new-file")).unwrap(),
        "created\n"
    );
    assert!(!mnt2.join("bin/tool").exists());
    assert!(!mnt2.join("replace-me").exists());
    ctl.ok(&["umount", "c1"]);

    // `diff` lists the rw layer's changes (docker diff style), not the init files.
    let changes: Vec<String> = ctl
        .ok(&["diff", "c1"])
        .lines()
        .map(|l| l.replacen(" /", " ", 1))
        .collect();
    for want in [
        "D bin/tool",
        "D etc/xattrs",
        "A new-file",
        "C etc/passwd",
        "D replace-me",
        "A opaque/newdir",
    ] {
        assert!(
            changes.iter().any(|c| c == want),
            "[{driver}] diff lacks {want:?}: {changes:?}"
        );
    }
    for c in &changes {
        let p = c.get(2..).unwrap_or("");
        assert!(
            !harness::is_init_path(p) || p == "etc" || p == "dev",
            "[{driver}] diff shows init file {c}"
        );
    }

    // A second container sees the pristine image.
    ctl.ok(&["create", "c2", "sample"]);
    let m = ctl.mount("c2");
    let fresh = snapshot(&m, Xattrs::User).unwrap();
    let diffs = compare_expected(&exp, &fresh, &harness::is_init_path, &harness::is_init_path);
    assert!(
        diffs.is_empty(),
        "[{driver}] second container differs:\n{}",
        diffs.join("\n")
    );
    ctl.ok(&["umount", "c2"]);

    ctl.ok(&["rm", "c1"]);
    ctl.ok(&["rm", "c2"]);
    ctl.ok(&["rmi", "sample"]);
    for d in &layer_dirs {
        assert!(!d.exists(), "layer dir {} left after rmi", d.display());
    }
    ctl.ok(&["check"]);
    assert!(harness::mounts_under(ctl.base()).is_empty());
    pristine
}

fn check_format(format: Format) {
    let mut snaps = Vec::new();
    for d in harness::drivers(&format!("images {format:?}")) {
        snaps.push((d.name, check_image(d.name, format)));
    }
    // The init files (hostname etc.) must be identical too, except their mtimes
    // (written when each container was created).
    let norm = |s: &Snap| -> Snap {
        let mut s = s.clone();
        for (p, n) in s.iter_mut() {
            if harness::is_init_path(p) {
                (n.mtime, n.mtime_nsec) = (0, 0);
            }
        }
        s
    };
    if let Some(((a, sa), rest)) = snaps.split_first() {
        for (b, sb) in rest {
            let d = compare_trees(&norm(sa), &norm(sb));
            assert!(
                d.is_empty(),
                "{a} and {b} mounts differ ({format:?}):\n{}",
                d.join("\n")
            );
        }
    }
}

#[test]
fn docker_save_archive() {
    check_format(Format::DockerSave);
}

#[test]
fn oci_layout_dir() {
    check_format(Format::OciLayout);
}

#[test]
fn oci_archive() {
    check_format(Format::OciArchive);
}

/// An image of `depth` layers, each adding `layers/NNNN` and a marker file and
/// deleting the previous layer's marker; on each driver of `drivers` it is imported,
/// mounted, compared with the expectation and every layer's file is read back.
/// Prints how long import and create+mount+umount took.
fn deep_image(depth: usize, drivers: &[&DriverSpec]) {
    let layers: Vec<Layer> = (0..depth)
        .map(|i| {
            let mut e = vec![
                Entry::dir("layers"),
                Entry::file(
                    &format!("layers/{i:04}"),
                    format!("layer {i}\n").into_bytes(),
                ),
                Entry::file(&format!("marker-{i:04}"), b"m".to_vec()),
            ];
            if i > 0 {
                e.push(Entry::whiteout(&format!("marker-{:04}", i - 1)));
            }
            Layer::new(e)
        })
        .collect();
    let img = Image {
        name: "deep".into(),
        layers,
    };
    let exp = img.expected().unwrap();
    let archive = img.docker_save();
    for d in drivers {
        let driver = d.name;
        let ctl = Ctl::new(driver);
        let path = ctl.write_work("deep.tar", &archive);
        let t0 = Instant::now();
        ctl.import(&path, "deep");
        let t_import = t0.elapsed();
        assert_eq!(ctl.json(&["images"])[0]["layers"], depth);
        let t1 = Instant::now();
        ctl.ok(&["create", "c", "deep"]);
        let mnt = ctl.mount("c");
        let t_mount = t1.elapsed();
        ctl.assert_mounted(&mnt, true);
        for i in 0..depth {
            let p = mnt.join(format!("layers/{i:04}"));
            let got = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("[{driver}] {depth} layers: read {}: {e}", p.display()));
            assert_eq!(got, format!("layer {i}\n"), "[{driver}] {}", p.display());
        }
        let snap = snapshot(&mnt, Xattrs::User).unwrap();
        let diffs = compare_expected(&exp, &snap, &harness::is_init_path, &harness::is_init_path);
        assert!(
            diffs.is_empty(),
            "[{driver}] {depth}-layer image:\n{}",
            diffs.join("\n")
        );
        assert!(mnt.join(format!("marker-{:04}", depth - 1)).exists());
        let t2 = Instant::now();
        ctl.ok(&["umount", "c"]);
        let t_umount = t2.elapsed();
        ctl.assert_mounted(&mnt, false);
        eprintln!(
            "[{driver}] {depth} layers: import {:.1} s, create+mount {:.1} s, umount {:.1} s",
            t_import.as_secs_f64(),
            t_mount.as_secs_f64(),
            t_umount.as_secs_f64()
        );
        ctl.ok(&["rm", "c"]);
        ctl.ok(&["rmi", "deep"]);
        ctl.ok(&["check"]);
    }
}

/// Deeper than the classic mount(2) one-page option limit (~128 layers).
#[test]
fn deep_image_150_layers() {
    deep_image(150, &harness::drivers("deep image 150"));
}

/// 500 image layers plus the init layer: past the kernel's 500 overlay lowers (issue 6
/// item 10), on every driver.
#[test]
fn deep_image_500_layers() {
    deep_image(500, &harness::drivers("deep image 500"));
}

/// 2,000 layers (issue 6 item 10: "any realistic depth works"), on the drivers that do
/// not copy each layer. Measured on vfs (2 cores, ext4): 500 layers import in ~5 s, but
/// 2,000 did not finish in 5 minutes (941 layers done; every layer is a full copy of its
/// parent, so the cost grows with the square of the depth), so vfs is left out here;
/// 500 layers run on every driver above.
#[test]
fn deep_image_2000_layers() {
    let drivers: Vec<&DriverSpec> = harness::drivers("deep image 2000")
        .into_iter()
        .filter(|d| !d.copies_layers)
        .collect();
    deep_image(2000, &drivers);
}
