//! `commit` on every driver (vfs always; overlay2 with real mounts when it can run):
//! the committed layer holds exactly the container's changes (no init files), a second
//! container sees them, identical changes dedupe, history and names are right, and the
//! container stays mounted and usable.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::commit::CommitOptions;
use crate::ids::ContainerName;

fn commit_round_trip(driver: &str) {
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = t.path().join("root");
    let Some(s) = open_with(&root, driver) else {
        return;
    };
    let l = vec![
        tar_of(&[("etc/a", b"1"), ("etc/gone", b"x"), ("old/x", b"o")]),
        tar_of(&[("usr/b", b"2")]),
    ];
    let diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();
    let f = write(t.path(), "save.tar", &docker_save(&l, &diffs, &["base:1"]));
    let base = import_file(&s, &f, None).unwrap();
    let layers_before = s.layers().unwrap().len();
    s.create_container("c1", "base:1").unwrap();
    let m = s.mount_container("c1").unwrap();
    let guard = MountGuard {
        store: &s,
        name: "c1",
        refs: 1,
    };
    fs::write(m.join("new"), b"n").unwrap();
    fs::write(m.join("etc/a"), b"changed").unwrap();
    fs::set_permissions(m.join("usr/b"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(m.join("etc/gone")).unwrap();
    fs::remove_dir_all(m.join("old")).unwrap();

    let opts = CommitOptions {
        name: Some("committed:1".into()),
        message: Some("first".into()),
    };
    let r = s.commit("c1", &opts).unwrap();
    assert!(r.new_layer);
    assert!(r.layer.size >= 8, "new + etc/a content: {}", r.layer.size);
    assert_eq!(s.layers().unwrap().len(), layers_before + 1);
    let img = s.image(&r.image).unwrap();
    assert_eq!(img.names, vec!["committed:1".to_owned()]);
    assert_eq!(img.diff_ids.len(), 3);
    assert_eq!(img.diff_ids[..2], s.image(&base).unwrap().diff_ids[..]);
    assert_eq!(img.diff_ids[2], r.layer.diff_id);
    assert_eq!(img.top_layer(), Some(&r.layer.chain_id));
    let cfg: serde_json::Value =
        serde_json::from_slice(&s.image_config(&r.image).unwrap()).unwrap();
    let hist = cfg["history"].as_array().unwrap();
    assert_eq!(hist.len(), 3, "two padded + one: {hist:?}");
    assert_eq!(hist[2]["comment"], "first");
    assert_eq!(hist[2]["created_by"], "layerctl commit c1");
    assert_eq!(cfg["architecture"], "amd64", "other fields kept");
    let h = s.image_history("committed:1").unwrap();
    assert_eq!(h.layers.len(), 3);
    assert_eq!(h.layers[2], r.layer);
    assert_eq!(h.entries.len(), 3);
    assert_eq!(h.entries[2].layer, Some(2));
    assert_eq!(h.entries[2].comment.as_deref(), Some("first"));
    assert_eq!(h.entries[0].created_by, None);

    // The committed layer holds exactly the changes; init files never enter it.
    let parent_cache = s.layer(&img.chain[1]).unwrap().cache_id;
    let got: Vec<String> = s
        .driver()
        .changes(&r.layer.cache_id, Some(&parent_cache))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        got,
        [
            "C /etc",
            "C /etc/a",
            "D /etc/gone",
            "A /new",
            "D /old",
            "C /usr",
            "C /usr/b"
        ],
    );

    // The container stays mounted and usable.
    fs::write(m.join("after"), b"still").unwrap();
    assert_eq!(fs::read(m.join("after")).unwrap(), b"still");
    fs::remove_file(m.join("after")).unwrap();

    // Identical changes again: same DiffID, same layer, no new layer stored.
    let r2 = s.commit("c1", &CommitOptions::default()).unwrap();
    assert!(!r2.new_layer);
    assert_eq!(r2.layer, r.layer);
    assert_eq!(s.layers().unwrap().len(), layers_before + 1);

    // A second container from the committed image sees the changes.
    s.create_container("c2", "committed:1").unwrap();
    let m2 = s.mount_container("c2").unwrap();
    let _g2 = MountGuard {
        store: &s,
        name: "c2",
        refs: 1,
    };
    assert_eq!(fs::read(m2.join("new")).unwrap(), b"n");
    assert_eq!(fs::read(m2.join("etc/a")).unwrap(), b"changed");
    assert_eq!(
        fs::metadata(m2.join("usr/b")).unwrap().mode() & 0o7777,
        0o600
    );
    assert!(!m2.join("etc/gone").exists());
    assert!(!m2.join("old").exists());
    assert_eq!(fs::read_to_string(m2.join("etc/hostname")).unwrap(), "c2\n");
    drop(_g2);
    drop(guard);
    // Unmounted, the container commits the same layer (the driver diffs its layer
    // directories, not the mount).
    let c1 = s.container(&ContainerName::new("c1").unwrap()).unwrap();
    assert_eq!(s.driver().mount_count(&c1.mount_id).unwrap(), 0);
    let r3 = s.commit("c1", &CommitOptions::default()).unwrap();
    assert_eq!((r3.layer, r3.new_layer), (r.layer, false));
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn commit_round_trip_vfs() {
    commit_round_trip("vfs");
}

#[test]
fn commit_round_trip_overlay2() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: overlay2 commit needs root");
        return;
    }
    commit_round_trip("overlay2");
}

/// Commit of an unknown container and a bad name fail before any work.
#[test]
fn commit_refusals_leave_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = open(t.path());
    let f = write(t.path(), "l.tar", &tar_of(&[("a", b"1")]));
    import_file(&s, &f, Some("img")).unwrap();
    assert!(matches!(
        s.commit("nope", &CommitOptions::default()).unwrap_err(),
        StoreError::ContainerNotFound { .. }
    ));
    s.create_container("c", "img").unwrap();
    let bad = CommitOptions {
        name: Some("Bad Name".into()),
        message: None,
    };
    assert_eq!(
        s.commit("c", &bad).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(s.images().unwrap().len(), 1);
    assert_eq!(s.layers().unwrap().len(), 1);
    // An empty commit is a valid (empty) layer on top.
    let r = s.commit("c", &CommitOptions::default()).unwrap();
    assert_eq!(s.image(&r.image).unwrap().diff_ids.len(), 2);
    assert!(s.check().unwrap().is_clean());
}

/// `export_rootfs`: a container's merged tree (init files included, deleted lower
/// files absent, no whiteouts) and an image's tree, byte-identical on repeat; the
/// image's temporary layer is gone afterwards.
#[test]
fn export_container_and_image() {
    for driver in ["vfs", "overlay2"] {
        if driver == "overlay2" && !nix::unistd::Uid::effective().is_root() {
            continue;
        }
        let t = tempfile::tempdir_in("/var/tmp").unwrap();
        let root = t.path().join("root");
        let Some(s) = open_with(&root, driver) else {
            continue;
        };
        let l = vec![
            tar_of(&[("etc/a", b"1"), ("etc/gone", b"x")]),
            tar_of(&[("etc/.wh.gone", b""), ("usr/b", b"2")]),
        ];
        let diffs: Vec<String> = l.iter().map(|x| format!("sha256:{}", sha_hex(x))).collect();
        let f = write(t.path(), "save.tar", &docker_save(&l, &diffs, &["img"]));
        import_file(&s, &f, None).unwrap();
        s.create_container("c", "img").unwrap();
        let m = s.mount_container("c").unwrap();
        let _g = MountGuard {
            store: &s,
            name: "c",
            refs: 1,
        };
        fs::write(m.join("usr/new"), b"n").unwrap();
        let names = |tar: &[u8]| -> Vec<String> {
            tar::Archive::new(tar)
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let (target, c1) = s.export_rootfs("c", Vec::new()).unwrap();
        assert_eq!(target, crate::ExportTarget::Container("c".into()));
        let (_, c2) = s.export_rootfs("c", Vec::new()).unwrap();
        assert!(c1 == c2, "[{driver}] deterministic");
        let got = names(&c1);
        for want in [
            "etc/",
            "etc/a",
            "etc/hostname",
            "usr/b",
            "usr/new",
            "dev/console",
        ] {
            assert!(
                got.iter().any(|n| n == want),
                "[{driver}] {want} in {got:?}"
            );
        }
        assert!(
            !got.iter().any(|n| n.contains(".wh.") || n.contains("gone")),
            "{got:?}"
        );
        assert_eq!(
            s.driver()
                .mount_count(
                    &s.container(&ContainerName::new("c").unwrap())
                        .unwrap()
                        .mount_id
                )
                .unwrap(),
            1,
            "reference dropped"
        );
        let (target, i) = s.export_rootfs("img", Vec::new()).unwrap();
        assert!(matches!(target, crate::ExportTarget::Image(_)));
        assert_eq!(names(&i), ["etc/", "etc/a", "usr/", "usr/b"], "[{driver}]");
        assert!(
            s.check().unwrap().is_clean(),
            "[{driver}] temporary layer removed"
        );
    }
}
