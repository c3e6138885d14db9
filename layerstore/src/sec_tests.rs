//! Tests of import limits (decompression bombs), store permissions and the check /
//! repair outcomes (clean, repaired, damaged; owner-locked staging entries; overlay2
//! short links; stale mounts).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use driver_core::{CreateOpts, Driver, LayerId};
use driver_vfs::VfsDriver;
use nix::fcntl::{Flock, FlockArg};

use crate::check::{CheckStatus, Problem};
use crate::error::{ErrorKind, StoreError};
use crate::import::{ImportLimits, ImportOptions, ImportSource};
use crate::store::{LayerStore, LockMode};

fn vfs(root: &Path) -> Box<dyn Driver> {
    Box::new(VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap())
}

fn open(root: &Path) -> LayerStore {
    LayerStore::open(root, vfs(root), LockMode::Exclusive).unwrap()
}

/// A tar of `n` empty files, or of one file of `big` zero bytes.
fn tar_with(n: usize, big: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..n {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("f{i}"), std::io::empty())
            .unwrap();
    }
    if big > 0 {
        let mut h = tar::Header::new_gnu();
        h.set_size(big);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), big),
        )
        .unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Everything below `root`'s driver home and tmp/ (what a failed import must not leave).
fn leftovers(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for d in ["vfs/dir", "tmp", "layerdb/sha256", "images/sha256"] {
        if let Ok(rd) = fs::read_dir(root.join(d)) {
            for e in rd {
                v.push(format!("{d}/{}", e.unwrap().file_name().to_string_lossy()));
            }
        }
    }
    v
}

#[test]
fn gzip_bomb_ends_with_a_clear_error_and_nothing_left() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    // 256 MiB of zeros in one file: the gzip is ~250 KiB (a 1000:1 bomb).
    let bomb = gzip(&tar_with(0, 256 << 20));
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    let file = t.path().join("bomb.tar.gz");
    fs::write(&file, &bomb).unwrap();
    let opts = ImportOptions {
        limits: ImportLimits {
            max_layer_size: 16 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = s.import(ImportSource::Path(&file), &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        matches!(
            e,
            StoreError::LimitExceeded {
                key: "max_layer_size",
                limit
            } if limit == 16 << 20
        ) || e.to_string().contains("max_layer_size = 16777216"),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_layer_size"), "{e}");
    assert_eq!(leftovers(&root), Vec::<String>::new());
    assert!(s.check().unwrap().is_clean());
    // The same tar within the limits imports.
    let ok = ImportOptions {
        limits: ImportLimits {
            max_layer_size: 512 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    s.import(ImportSource::Path(&file), &ok).unwrap();
}

#[test]
fn entry_bomb_ends_with_a_clear_error_and_nothing_left() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let file = t.path().join("many.tar.gz");
    fs::write(&file, gzip(&tar_with(3000, 0))).unwrap();
    let opts = |n| ImportOptions {
        limits: ImportLimits {
            max_layer_entries: n,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = s
        .import(ImportSource::Path(&file), &opts(1000))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("max_layer_entries = 1000"), "{e}");
    assert_eq!(leftovers(&root), Vec::<String>::new());
    assert!(s.check().unwrap().is_clean());
    // Exactly at the limit is fine.
    s.import(ImportSource::Path(&file), &opts(3000)).unwrap();
}

#[test]
fn root_and_driver_home_are_private() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir_all(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let s = open(&root);
    for d in [root.clone(), root.join("vfs")] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    drop(s);
}

#[test]
fn check_status_clean_repaired_damaged_and_owned_staging() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    drop(open(&root));

    // A staging entry whose owner holds its lock is work in progress: not reported,
    // not removed. Once the owner is gone it is a leftover.
    let staging = root.join("tmp/import-1234-staging");
    fs::create_dir_all(staging.join("x")).unwrap();
    let removing = root.join("tmp/abc-removing");
    fs::create_dir_all(&removing).unwrap();
    let held = Flock::lock(File::open(&staging).unwrap(), FlockArg::LockShared).unwrap();
    let s = LayerStore::open_for_repair(&root, vfs(&root)).unwrap();
    let r = s.check().unwrap();
    assert_eq!(
        r.problems,
        vec![Problem::TmpLeftover(removing.clone())],
        "only the unowned entry"
    );
    let r = s.repair().unwrap();
    assert_eq!(r.status(), CheckStatus::Repaired, "{r:?}");
    assert_eq!(r.repaired, vec![Problem::TmpLeftover(removing.clone())]);
    assert!(staging.exists(), "repair removed live work");
    assert!(!removing.exists());
    drop(held);
    let r = s.check().unwrap();
    assert_eq!(r.problems, vec![Problem::TmpLeftover(staging.clone())]);
    let r = s.repair().unwrap();
    assert_eq!(r.status(), CheckStatus::Repaired);
    let r = s.repair().unwrap();
    assert_eq!(r.status(), CheckStatus::Clean, "{r:?}");

    // Damaged: problems found and not (yet) repaired.
    fs::create_dir_all(root.join("images/sha256/not-an-id")).unwrap();
    let r = s.check().unwrap();
    assert_eq!(r.status(), CheckStatus::Damaged);
    assert!(matches!(&r.problems[..], [Problem::StrayEntry(_)]), "{r:?}");
}

#[test]
fn repair_open_lists_driver_leftovers_it_removes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    drop(open(&root));
    // A half-removed vfs layer (what a killed rm leaves).
    let half = root
        .join("vfs/dir")
        .join(format!(".{}-removing", "c".repeat(64)));
    fs::create_dir_all(half.join("etc")).unwrap();
    // A normal exclusive open would finish it silently; the repair open lists it.
    let s = LayerStore::open_for_repair(&root, vfs(&root)).unwrap();
    let r = s.repair().unwrap();
    assert_eq!(r.status(), CheckStatus::Repaired, "{r:?}");
    assert_eq!(r.repaired, vec![Problem::DriverLeftover(half.clone())]);
    assert!(!half.exists());
}

/// overlay2: broken short links are reported (check names the path) and repaired; a
/// committed layer survives.
#[test]
fn overlay2_broken_short_links_are_reported_and_repaired() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let mk = || -> Option<Box<dyn Driver>> {
        match driver_overlay2::Overlay2Driver::new(&root.join("overlay2"), &Default::default()) {
            Ok(d) => Some(Box::new(d)),
            Err(e) if !driver_core::privileged_required() => {
                eprintln!("SKIP overlay2: {e}");
                None
            }
            Err(e) => panic!("overlay2 unavailable but LAYERCTL_REQUIRE_PRIVILEGED=1: {e}"),
        }
    };
    let Some(d) = mk() else { return };
    let s = LayerStore::open(&root, d, LockMode::Exclusive).unwrap();
    let file = t.path().join("l.tar");
    fs::write(&file, tar_with(3, 0)).unwrap();
    s.import(ImportSource::Path(&file), &ImportOptions::default())
        .unwrap();
    let layer = s.layers().unwrap().remove(0);
    drop(s);
    let home = root.join("overlay2");
    let short = fs::read_to_string(home.join(layer.cache_id.as_str()).join("link")).unwrap();
    let link = home.join("l").join(short.trim());
    // Swap the layer's short link for a dangling one of another name: the number of
    // links stays the same, so the quick startup pass does not notice.
    fs::remove_file(&link).unwrap();
    let dangling = home.join("l").join("Z".repeat(26));
    std::os::unix::fs::symlink("../nothing/diff", &dangling).unwrap();

    let s = LayerStore::open(&root, mk().unwrap(), LockMode::Shared).unwrap();
    let r = s.check().unwrap();
    let mut want = vec![
        Problem::DriverLeftover(dangling.clone()),
        Problem::DriverLeftover(link.clone()),
    ];
    want.sort_by_key(|p| p.to_string());
    let mut got = r.problems.clone();
    got.sort_by_key(|p| p.to_string());
    assert_eq!(got, want);
    drop(s);
    let s = LayerStore::open_for_repair(&root, mk().unwrap()).unwrap();
    let r = s.repair().unwrap();
    assert_eq!(r.status(), CheckStatus::Repaired, "{r:?}");
    assert_eq!(r.repaired.len(), 2, "{r:?}");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("..").join(layer.cache_id.as_str()).join("diff")
    );
    assert!(fs::symlink_metadata(&dangling).is_err());
    assert!(
        s.has_layer(&layer.chain_id),
        "repair lost a committed layer"
    );
}

/// A mount below the root whose layer nothing refers to (its container is gone) is a
/// stale mount; repair detaches it, then removes the orphan layer.
#[test]
fn stale_mount_of_a_removed_container_is_detached() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let id = LayerId::random();
    s.driver()
        .create(&id, None, &CreateOpts::default())
        .unwrap();
    let dir = s.driver().layer_dir(&id).unwrap();
    drop(s);
    // Stand-in for a container mount left behind: a bind mount of the orphan layer
    // onto itself.
    let m = nix::mount::mount(
        Some(&dir),
        &dir,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    );
    if let Err(e) = m {
        assert!(
            !driver_core::privileged_required(),
            "bind mount failed but LAYERCTL_REQUIRE_PRIVILEGED=1: {e}"
        );
        eprintln!("SKIP stale mount: {e}");
        return;
    }
    let s = LayerStore::open_for_repair(&root, vfs(&root)).unwrap();
    let r = s.check().unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::StaleMount { path, .. } if *path == dir)),
        "{r:?}"
    );
    assert!(
        r.problems.contains(&Problem::OrphanLayer(id.clone())),
        "{r:?}"
    );
    let r = s.repair().unwrap();
    let mounted = driver_core::mountinfo::is_mount_point(&dir).unwrap_or(false);
    if mounted {
        let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    }
    assert!(!mounted, "repair left the mount");
    assert_eq!(r.status(), CheckStatus::Repaired, "{r:?}");
    assert!(!dir.exists());
}
