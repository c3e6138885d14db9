//! Staged imports (no store lock while applying) and staging leases: liveness, gc, rmi,
//! check and startup cleanup.

use std::path::{Path, PathBuf};

use driver_core::{CreateOpts, LayerId};
use driver_vfs::VfsDriver;

use super::{driver_layer_count, import_file, open, tar_of, write};
use crate::check::Problem;
use crate::error::StoreError;
use crate::staging::Lease;
use crate::store::{LayerStore, LockMode};

fn open_mode(root: &Path, mode: LockMode) -> LayerStore {
    let driver = VfsDriver::new(&root.join("vfs"), &Default::default()).unwrap();
    LayerStore::open(root, Box::new(driver), mode).unwrap()
}

fn staging_entries(root: &Path) -> usize {
    std::fs::read_dir(root.join("staging")).unwrap().count()
}

/// Eight Staged imports at once (three distinct contents, so several import the same
/// layer) while another thread runs gc and check in a loop: each content is stored
/// once, no staging copy or lease is left, and the store checks clean.
#[test]
fn staged_imports_run_side_by_side_and_dedupe() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    drop(open(&root));
    let files: Vec<PathBuf> = (0..8)
        .map(|i| {
            let big: Vec<u8> = (0..200_000u32)
                .map(|b| (b % 251) as u8 ^ (i % 3) as u8)
                .collect();
            write(
                t.path(),
                &format!("{i}.tar"),
                &tar_of(&[("a/big", &big), ("b", format!("{}", i % 3).as_bytes())]),
            )
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let s = open_mode(&root, LockMode::Exclusive);
                s.gc(false).unwrap();
                let r = s.check().unwrap();
                assert!(r.is_clean(), "{:?}", r.problems);
                rounds += 1;
            }
            rounds
        })
    };
    let handles: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = open_mode(&root, LockMode::Staged);
                import_file(&s, &f, Some(&format!("img{i}"))).unwrap()
            })
        })
        .collect();
    let ids: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = gc.join().unwrap();
    assert!(rounds > 0);
    assert_eq!(ids[0], ids[3]);
    assert_eq!(ids[1], ids[4]);
    let s = open(&root);
    assert_eq!(s.images().unwrap().len(), 3);
    assert_eq!(s.layers().unwrap().len(), 3);
    assert_eq!(
        driver_layer_count(&root),
        3,
        "losers' staging copies are gone"
    );
    assert_eq!(staging_entries(&root), 0, "no lease left");
    assert!(s.check().unwrap().is_clean());
}

/// A Staged store imports but refuses the other writers.
#[test]
fn staged_store_refuses_other_writers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open_mode(&root, LockMode::Staged);
    let f = write(t.path(), "a.tar", &tar_of(&[("f", b"x")]));
    import_file(&s, &f, Some("a")).unwrap();
    let e = s.create_container("c", "a").unwrap_err();
    assert!(matches!(e, StoreError::NeedsExclusiveLock { .. }), "{e}");
    let e = s.gc(false).unwrap_err();
    assert!(matches!(e, StoreError::NeedsExclusiveLock { .. }), "{e}");
}

/// A lease whose owner is gone (flock released, directory left, as after SIGKILL):
/// `check` reports it and its unpublished layer; the next exclusive open removes both.
/// While the owner lives, its layer is not an orphan.
#[test]
fn dead_lease_is_reported_then_cleaned_on_open() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open_mode(&root, LockMode::Staged);
    let id = LayerId::random();
    let lease = {
        let _g = s.exclusive("test").unwrap();
        let lease = Lease::create(&s.staging_dir()).unwrap();
        lease.add_layer(&id).unwrap();
        s.driver.create(&id, None, &CreateOpts::default()).unwrap();
        lease
    };
    let dir = lease.dir().to_owned();
    let shared = open_mode(&root, LockMode::Shared);
    let r = shared.check().unwrap();
    assert!(
        r.is_clean(),
        "a live import's staging layer is no problem: {:?}",
        r.problems
    );
    drop(shared);
    drop(lease); // the owner "dies": the flock goes, the directory stays
    let shared = open_mode(&root, LockMode::Shared);
    let r = shared.check().unwrap();
    assert!(
        r.problems.contains(&Problem::TmpLeftover(dir.clone())),
        "{:?}",
        r.problems
    );
    assert!(
        r.problems.contains(&Problem::OrphanLayer(id.clone())),
        "{:?}",
        r.problems
    );
    drop(shared);
    let s = open(&root);
    assert!(!dir.exists());
    assert!(!s.driver.exists(&id));
    assert!(s.check().unwrap().is_clean());
}

/// gc and rmi keep what a live import holds (a published layer with no image yet, or
/// a layer it builds on); once the import is gone, gc frees it.
#[test]
fn gc_and_rmi_keep_leased_chains() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let s = open(&root);
    let f = write(t.path(), "a.tar", &tar_of(&[("f", b"held")]));
    import_file(&s, &f, Some("a")).unwrap();
    let chain = s.layers().unwrap()[0].chain_id.clone();
    let lease = Lease::create(&s.staging_dir()).unwrap();
    lease.add_chain(&chain).unwrap();
    let removed = s.remove_image("a").unwrap();
    assert!(removed.layers.is_empty(), "rmi kept the leased layer");
    let g = s.gc(false).unwrap();
    assert!(g.layers.is_empty(), "gc kept the leased layer: {g:?}");
    assert!(s.has_layer(&chain));
    drop(lease);
    let g = s.gc(false).unwrap();
    assert_eq!(g.layers, vec![chain.clone()]);
    assert!(!s.has_layer(&chain));
    assert_eq!(driver_layer_count(&root), 0);
    assert!(s.check().unwrap().is_clean());
}
