//! Deep stacks (more lowers than one overlay takes): real mounts of 500- and
//! 2,000-layer images through shared internal mounts, with whiteouts and opaque
//! directories that cross the internal mounts' boundaries.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{can_mount, id, Env};
use driver_core::{CreateOpts, Driver, DriverError, LayerId, MountOpts};
use driver_overlay2::Overlay2Driver;

/// Layers per internal mount (the bottom group's top layer is `l{CHUNK - 1}`).
const CHUNK: usize = driver_overlay2::CHUNK_LAYERS;

fn whiteout(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// An image of `n` read-only layers, written in overlay format as apply would:
/// - layer k: `layer<k>` = k; `doomed<k>`, deleted by layer k+1 (a whiteout);
///   `o/<k / 7>` = k (each file overridden six times: the topmost of 7 layers wins);
/// - layer 0: `opq/old`; layer 7n/10 makes `opq` opaque and adds `opq/new`;
/// - layer 3: `dir3/a`, `dir3/sub/b`; layer 6n/10 deletes `dir3` (whiteout) and layer
///   6n/10 + 1 makes a new `dir3/c`.
///
/// With n = 2,000 the whiteouts of layers 500, 1000, 1500, the opaque directory (1400)
/// and the deleted directory (1200) cross internal-mount boundaries.
fn image(d: &Overlay2Driver, tag: &str, n: usize) -> Vec<LayerId> {
    let mut ids: Vec<LayerId> = Vec::with_capacity(n);
    for k in 0..n {
        let l = id(&format!("{tag}{k}"));
        d.create(&l, ids.last(), &CreateOpts::default()).unwrap();
        let dir = d.layer_dir(&l).unwrap();
        write(&dir.join(format!("layer{k}")), &k.to_string());
        write(&dir.join(format!("doomed{k}")), "doomed");
        write(&dir.join(format!("o/{}", k / 7)), &k.to_string());
        if k > 0 {
            whiteout(&dir.join(format!("doomed{}", k - 1)));
        }
        if k == 0 {
            write(&dir.join("opq/old"), "old");
            write(&dir.join("ghost/x"), "x");
            write(&dir.join("ghost/y"), "y");
        }
        if k == n * 8 / 10 {
            // The only layer of its group with `ghost/`: its whiteout must not be
            // listed (overlayfs passes a one-layer directory through unmerged).
            whiteout(&dir.join("ghost/x"));
        }
        if k == 3 {
            write(&dir.join("dir3/a"), "a");
            write(&dir.join("dir3/sub/b"), "b");
        }
        if k == n * 7 / 10 {
            write(&dir.join("opq/new"), "new");
            rustix::fs::lsetxattr(
                dir.join("opq"),
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
        if k == n * 6 / 10 {
            whiteout(&dir.join("dir3"));
        }
        if k == n * 6 / 10 + 1 {
            write(&dir.join("dir3/c"), "c");
        }
        ids.push(l);
    }
    ids
}

fn names(p: &Path) -> BTreeSet<String> {
    fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Checks the merged tree of an `n`-layer [`image`] at `m`, reading every layer's file;
/// `extra` names the other entries expected at the root.
fn check_image(m: &Path, n: usize, extra: &[&str]) {
    for k in 0..n {
        assert_eq!(
            fs::read_to_string(m.join(format!("layer{k}"))).unwrap(),
            k.to_string(),
            "file of layer {k}"
        );
    }
    for k in 0..n - 1 {
        assert!(
            fs::symlink_metadata(m.join(format!("doomed{k}"))).is_err(),
            "doomed{k} deleted by layer {}",
            k + 1
        );
    }
    assert_eq!(
        fs::read_to_string(m.join(format!("doomed{}", n - 1))).unwrap(),
        "doomed"
    );
    for g in 0..n.div_ceil(7) {
        let want = (7 * g + 6).min(n - 1);
        assert_eq!(
            fs::read_to_string(m.join(format!("o/{g}"))).unwrap(),
            want.to_string(),
            "o/{g}: the topmost layer writing it"
        );
    }
    assert_eq!(names(&m.join("o")).len(), n.div_ceil(7));
    assert_eq!(
        names(&m.join("opq")),
        BTreeSet::from(["new".to_owned()]),
        "opaque directory of layer {} hides layer 0's",
        n * 7 / 10
    );
    assert_eq!(
        names(&m.join("dir3")),
        BTreeSet::from(["c".to_owned()]),
        "dir3 deleted by layer {} and made anew",
        n * 6 / 10
    );
    assert_eq!(
        names(&m.join("ghost")),
        BTreeSet::from(["y".to_owned()]),
        "ghost/x deleted by layer {}: neither listed nor there",
        n * 8 / 10
    );
    assert!(fs::symlink_metadata(m.join("ghost/x")).is_err());
    let mut want: BTreeSet<String> = (0..n).map(|k| format!("layer{k}")).collect();
    want.extend([
        "ghost".into(),
        format!("doomed{}", n - 1),
        "o".into(),
        "opq".into(),
        "dir3".into(),
    ]);
    want.extend(extra.iter().map(|s| s.to_string()));
    let got = names(m);
    assert_eq!(
        (
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ),
        (vec![], vec![]),
        "root listing: (unexpected, missing)"
    );
}

/// A container on `top`: an init layer (read-write, like the store's) and the
/// container's read-write layer on it.
fn container(d: &Overlay2Driver, top: &LayerId, name: &str) -> LayerId {
    let init = id(&format!("{name}-init"));
    d.create(&init, Some(top), &CreateOpts::read_write())
        .unwrap();
    fs::write(d.layer_dir(&init).unwrap().join("init-file"), name).unwrap();
    let c = id(name);
    d.create(&c, Some(&init), &CreateOpts::read_write())
        .unwrap();
    c
}

fn count_file(env: &Env, key: &str) -> Option<u32> {
    fs::read_to_string(env.home().join("refs").join(key))
        .ok()
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
}

/// Mount points in the kernel's table below the env, as a set.
fn mounts(env: &Env) -> BTreeSet<PathBuf> {
    env.mounts().into_iter().collect()
}

fn deep_stack(n: usize) {
    let env = Env::new();
    let d = env.driver();
    let ids = image(&d, "l", n);
    let top = ids.last().unwrap();
    let c1 = container(&d, top, "c1");
    let c2 = container(&d, top, "c2");

    let m1 = d.mount(&c1, &MountOpts::default()).unwrap();
    check_image(&m1, n, &["init-file"]);
    assert_eq!(fs::read_to_string(m1.join("init-file")).unwrap(), "c1");
    // Groups of CHUNK from the bottom (the init layer makes n + 1 lowers).
    let groups = (n + 1) / CHUNK;
    let internal: BTreeSet<PathBuf> = (1..=groups)
        .map(|g| env.home().join(format!("l{}/lower-merged", CHUNK * g - 1)))
        .collect();
    let mut want = internal.clone();
    want.insert(m1.clone());
    assert_eq!(mounts(&env), want, "outer mount and internal mounts");
    // The outer mount stacks each group over its whiteout summary (the bottom one has none).
    let info = driver_core::mountinfo::mount_at(&m1).unwrap().unwrap();
    for g in 1..=groups {
        let p = env.home().join(format!("l{}/lower-merged", CHUNK * g - 1));
        assert!(
            info.super_options.contains(p.to_str().unwrap()),
            "{}",
            info.super_options
        );
    }
    assert!(
        !env.home().join(format!("l{}/lower-wh", CHUNK - 1)).exists(),
        "the bottom group needs no summary"
    );
    for g in 2..=groups {
        assert!(
            env.home()
                .join(format!("l{}/lower-wh", CHUNK * g - 1))
                .is_dir(),
            "summary of group {g}"
        );
    }

    // Writes go to the container's upper only.
    fs::write(m1.join("layer0"), "rw").unwrap();
    fs::write(m1.join("new"), "new").unwrap();
    fs::remove_file(m1.join("layer5")).unwrap();
    let upper = d.layer_dir(&c1).unwrap();
    assert_eq!(fs::read_to_string(upper.join("layer0")).unwrap(), "rw");
    assert_eq!(fs::read_to_string(upper.join("new")).unwrap(), "new");
    let wh = fs::symlink_metadata(upper.join("layer5")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        fs::read_to_string(d.layer_dir(&ids[0]).unwrap().join("layer0")).unwrap(),
        "0"
    );
    assert!(d.layer_dir(&ids[5]).unwrap().join("layer5").exists());

    // A second container of the same image shares every internal mount.
    let m2 = d.mount(&c2, &MountOpts::default()).unwrap();
    want.insert(m2.clone());
    assert_eq!(mounts(&env), want, "no new internal mounts");
    for g in 1..=groups {
        assert_eq!(
            count_file(&env, &format!("l{}.lower", CHUNK * g - 1)),
            Some(2)
        );
    }
    check_image(&m2, n, &["init-file"]);
    assert_eq!(fs::read_to_string(m2.join("init-file")).unwrap(), "c2");
    // A read-only view of the image's top layer shares them too.
    let v = d.mount(top, &MountOpts::default()).unwrap();
    check_image(&v, n, &[]);
    want.insert(v.clone());
    assert_eq!(mounts(&env), want);
    d.unmount(top).unwrap();
    want.remove(&v);

    // Unmounting one container leaves the other whole.
    d.unmount(&c1).unwrap();
    want.remove(&m1);
    assert_eq!(mounts(&env), want);
    for g in 1..=groups {
        assert_eq!(
            count_file(&env, &format!("l{}.lower", CHUNK * g - 1)),
            Some(1)
        );
    }
    check_image(&m2, n, &["init-file"]);
    assert_eq!(fs::read_to_string(m2.join("layer0")).unwrap(), "0");
    // An image layer below a mounted group is busy.
    assert!(matches!(
        d.remove(&ids[CHUNK - 1]),
        Err(DriverError::Busy { .. })
    ));
    d.unmount(&c2).unwrap();
    assert!(mounts(&env).is_empty(), "nothing left mounted");
    assert!(
        !fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(env.dir.path().to_str().unwrap()),
        "mountinfo names nothing below the test root"
    );
    for g in 1..=groups {
        assert_eq!(count_file(&env, &format!("l{}.lower", CHUNK * g - 1)), None);
    }
    // Mounting again after everything was unmounted (summaries are reused).
    let m1 = d.mount(&c1, &MountOpts::default()).unwrap();
    assert_eq!(fs::read_to_string(m1.join("layer0")).unwrap(), "rw");
    assert!(fs::symlink_metadata(m1.join("layer5")).is_err());
    d.unmount(&c1).unwrap();
    assert!(mounts(&env).is_empty());
}

#[test]
fn image_of_500_layers_with_a_container() {
    if !can_mount() {
        return;
    }
    deep_stack(500);
}

#[test]
fn image_of_2000_layers_with_two_containers() {
    if !can_mount() {
        return;
    }
    deep_stack(2000);
}

#[test]
fn internal_mounts_left_unused_are_swept_by_cleanup() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let ids = image(&d, "l", 501);
    let c = container(&d, ids.last().unwrap(), "c");
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    let internal = env.home().join(format!("l{}/lower-merged", CHUNK - 1));
    // In use: no leftover, cleanup keeps it.
    assert!(d.leftovers().unwrap().is_empty());
    d.cleanup().unwrap();
    assert_eq!(mounts(&env), BTreeSet::from([internal.clone(), m.clone()]));
    // The outer mount is unmounted behind the driver's back: the internal one is left,
    // and the driver's own unmount (count 0 now) gives it back.
    nix::mount::umount2(&m, nix::mount::MntFlags::empty()).unwrap();
    assert_eq!(d.mount_count(&c).unwrap(), 0);
    assert_eq!(mounts(&env), BTreeSet::from([internal.clone()]));
    assert_eq!(count_file(&env, &format!("l{}.lower", CHUNK - 1)), Some(1));
    d.unmount(&c).unwrap();
    assert!(mounts(&env).is_empty(), "given back by unmount");
    assert_eq!(count_file(&env, &format!("l{}.lower", CHUNK - 1)), None);
    // Same, but mounting again first: the stale reference is given back before a new
    // one is taken (one reference per outer mount).
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    nix::mount::umount2(&m, nix::mount::MntFlags::empty()).unwrap();
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    assert_eq!(count_file(&env, &format!("l{}.lower", CHUNK - 1)), Some(1));
    assert_eq!(mounts(&env), BTreeSet::from([internal.clone(), m]));
    d.unmount(&c).unwrap();
    assert!(mounts(&env).is_empty());
    // A lost count file: nothing names the internal mount any more; cleanup sweeps it.
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    nix::mount::umount2(&m, nix::mount::MntFlags::empty()).unwrap();
    fs::remove_file(env.home().join("refs/c")).unwrap();
    d.unmount(&c).unwrap();
    assert_eq!(mounts(&env), BTreeSet::from([internal.clone()]));
    // `layerctl check` sees it as a leftover of the driver; cleanup sweeps it.
    assert_eq!(d.leftovers().unwrap(), vec![internal.clone()]);
    d.cleanup().unwrap();
    assert!(mounts(&env).is_empty(), "swept");
    assert!(d.leftovers().unwrap().is_empty());
    assert_eq!(count_file(&env, &format!("l{}.lower", CHUNK - 1)), None);
    // And everything mounts again from scratch.
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    check_image(&m, 501, &["init-file"]);
    d.unmount(&c).unwrap();
    assert!(mounts(&env).is_empty());
    // Removing the image top-down works once nothing is mounted.
    d.remove(&c).unwrap();
    d.remove(&id("c-init")).unwrap();
    for l in ids.iter().rev() {
        d.remove(l).unwrap();
    }
}

#[test]
fn the_depth_error_names_the_image_layer_count_and_the_limit() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    // A fake image top whose `lower` names 124,750 ancestors (never mounted): an image
    // of 124,751 layers, the deepest that mounts.
    let top = id("top");
    d.create(&top, None, &CreateOpts::default()).unwrap();
    let fake: Vec<String> = (0..driver_overlay2::MAX_STACK_LAYERS - 1)
        .map(|i| format!("{:0>26}", i))
        .collect();
    fs::write(
        env.home().join("top/lower"),
        fake.iter()
            .map(|s| format!("l/{s}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
    .unwrap();
    let init = id("c-init");
    d.create(&init, Some(&top), &CreateOpts::read_write())
        .unwrap();
    // The container's layer would stack 124,752 lowers; the error counts image layers.
    let err = d
        .create(&id("c"), Some(&init), &CreateOpts::read_write())
        .unwrap_err();
    match &err {
        DriverError::TooDeep { depth, limit, .. } => {
            assert_eq!((*depth, *limit), (124_751, 124_750))
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("an image of 124751 layers") && msg.contains("limit of 124750"),
        "{msg}"
    );
    assert!(!env.home().join("c").exists(), "nothing created");
    // One more read-only layer on the image: 124,752 image layers.
    match d.create(&id("more"), Some(&top), &CreateOpts::default()) {
        Err(DriverError::TooDeep { depth, limit, .. }) => {
            assert_eq!((depth, limit), (124_752, 124_751))
        }
        other => panic!("{other:?}"),
    }
}

/// Table reads by this thread while `f` runs.
fn table_reads<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = driver_core::mountinfo::reads_by_this_thread();
    let r = f();
    (r, driver_core::mountinfo::reads_by_this_thread() - before)
}

/// `cleanup` runs on every exclusive store open (every `layerctl` command that
/// changes something) and `leftovers` on every `check`: they find internal mounts from
/// the driver's counts in `refs/` and statx, not from the whole mount table (thousands
/// of lines on a busy host, ~40 KB per 500-layer overlay line). The table is read only
/// to confirm a suspect (an internal mount no counted outer mount uses), and what a
/// killed `layerctl mount` leaves is still found. Before: one table read per cleanup
/// and per leftovers call, always.
#[test]
fn sweeping_reads_no_mount_table_unless_something_is_stale() {
    if !can_mount() {
        return;
    }
    let env = Env::new();
    let d = env.driver();
    let ids = image(&d, "l", 501);
    let c = container(&d, ids.last().unwrap(), "c");
    let internal = env.home().join(format!("l{}/lower-merged", CHUNK - 1));
    let key = format!("l{}.lower", CHUNK - 1);

    // Nothing mounted: no table read.
    let (r, n) = table_reads(|| (d.cleanup(), d.leftovers()));
    assert!(r.0.is_ok());
    assert!(r.1.unwrap().is_empty());
    assert_eq!(n, 0, "cleanup + leftovers with nothing mounted");

    // Deep stacks mounted and in use (a container and a read-only view): none either,
    // and nothing is swept.
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    let v = d.mount(ids.last().unwrap(), &MountOpts::default()).unwrap();
    let (r, n) = table_reads(|| (d.cleanup(), d.leftovers()));
    r.0.unwrap();
    assert!(r.1.unwrap().is_empty());
    assert_eq!(n, 0, "cleanup + leftovers with deep stacks in use");
    assert_eq!(
        mounts(&env),
        BTreeSet::from([internal.clone(), m.clone(), v.clone()])
    );
    assert_eq!(count_file(&env, &key), Some(2));
    d.unmount(ids.last().unwrap()).unwrap();

    // What a `layerctl mount` killed after its internal mount and before its outer
    // mount leaves: the internal mount, counted, and no outer mount nor outer count.
    nix::mount::umount2(&m, nix::mount::MntFlags::empty()).unwrap();
    fs::remove_file(env.home().join("refs/c")).unwrap();
    assert_eq!(mounts(&env), BTreeSet::from([internal.clone()]));
    let (r, n) = table_reads(|| d.leftovers());
    assert_eq!(r.unwrap(), vec![internal.clone()], "found as a leftover");
    assert_eq!(n, 1, "one table read confirms the suspect");
    d.cleanup().unwrap();
    assert!(mounts(&env).is_empty(), "swept");
    assert_eq!(count_file(&env, &key), None);

    // Killed between writing the internal count and mounting: a count without a
    // mount, dropped without a table read.
    let boot = fs::read_to_string(driver_core::refcount::BOOT_ID_PATH).unwrap();
    fs::write(
        env.home().join("refs").join(&key),
        format!("1 {}", boot.trim()),
    )
    .unwrap();
    let (r, n) = table_reads(|| (d.cleanup(), d.leftovers()));
    r.0.unwrap();
    assert!(r.1.unwrap().is_empty());
    assert_eq!(n, 0);
    assert_eq!(count_file(&env, &key), None, "stale count dropped");

    // An outer mount the driver lost the count of keeps its internal mount: the table
    // says an overlay names it.
    let m = d.mount(&c, &MountOpts::default()).unwrap();
    fs::remove_file(env.home().join("refs/c")).unwrap();
    d.cleanup().unwrap();
    assert_eq!(mounts(&env), BTreeSet::from([internal.clone(), m.clone()]));
    check_image(&m, 501, &["init-file"]);
    assert!(d.leftovers().unwrap().is_empty());
    d.unmount(&c).unwrap();
    assert!(mounts(&env).is_empty());
}
