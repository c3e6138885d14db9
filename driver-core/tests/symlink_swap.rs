//! A parent directory swapped for a symlink while a tar is being applied must not
//! redirect any later write outside the layer root: every entry is resolved again,
//! fd-relative, below the root (`openat2(RESOLVE_IN_ROOT)`, or the userspace walk).
//!
//! Two tests: a deterministic one (the tar reader itself swaps `a/` for a symlink to a
//! directory outside the root after the entries before the swap were applied, so the
//! swap lands between two entries every time), and a racing one (a thread swaps
//! `a/` <-> symlink as fast as it can while 2,000 entries below `a/` are applied).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use driver_core::{apply_tar, ApplyOptions, WhiteoutFormat};

fn header(name: &str, ty: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_000_000);
    h.set_cksum();
    h
}

/// Every path below `dir` (relative), sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Replaces directory `a` in `root` by a symlink named `a` pointing at `target`.
fn swap_in_symlink(root: &Path, target: &Path) {
    let moved = root.join("a.moved");
    let _ = fs::remove_dir_all(&moved);
    fs::rename(root.join("a"), &moved).unwrap();
    symlink(target, root.join("a")).unwrap();
}

/// A reader over `data` that calls `hook` once, when the reader has handed out
/// `at` bytes (and not before).
struct HookAt<F: FnMut()> {
    data: Vec<u8>,
    pos: usize,
    at: usize,
    hook: Option<F>,
}

impl<F: FnMut()> Read for HookAt<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.at {
            if let Some(mut h) = self.hook.take() {
                h();
            }
        }
        let end = if self.pos < self.at {
            self.at
        } else {
            self.data.len()
        };
        let n = buf.len().min(end - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn symlink_swapped_between_entries_cannot_redirect_a_write() {
    for format in [
        WhiteoutFormat::Delete,
        WhiteoutFormat::Overlay,
        WhiteoutFormat::Aufs,
    ] {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();

        // a/, a/one, then 1 MiB of a/big (more than the apply's read-ahead, so by the
        // time the reader reaches the hook, a/ and a/one are on disk), then a/evil,
        // a/sub/deep (a missing parent below the swapped link) and a hard link a/hl.
        // The reader stops at the swap point until the hook ran, so the swap happens
        // between a/big and a/evil every time.
        let big = vec![b'x'; 1 << 20];
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("a/", tar::EntryType::Directory, 0), &[][..])
            .unwrap();
        b.append(&header("a/one", tar::EntryType::Regular, 3), &b"one"[..])
            .unwrap();
        b.append(
            &header("a/big", tar::EntryType::Regular, big.len() as u64),
            &big[..],
        )
        .unwrap();
        let swap_at = b.get_ref().len();
        b.append(&header("a/evil", tar::EntryType::Regular, 4), &b"evil"[..])
            .unwrap();
        b.append(
            &header("a/sub/deep", tar::EntryType::Regular, 4),
            &b"deep"[..],
        )
        .unwrap();
        let mut hl = header("a/hl", tar::EntryType::Link, 0);
        // Its target is where the swap moved `a/one`; its name goes through the link.
        hl.set_link_name("a.moved/one").unwrap();
        hl.set_cksum();
        b.append(&hl, &[][..]).unwrap();
        let data = b.into_inner().unwrap();

        let swapped = Arc::new(AtomicBool::new(false));
        let (r2, o2, s2) = (root.clone(), outside.clone(), swapped.clone());
        let mut reader = HookAt {
            data,
            pos: 0,
            at: swap_at,
            hook: Some(move || {
                // The entries before the swap point are applied by now.
                assert!(r2.join("a/one").is_file(), "a/one not applied yet");
                swap_in_symlink(&r2, &o2);
                s2.store(true, Ordering::SeqCst);
            }),
        };
        let opts = ApplyOptions::new(format);
        let r = apply_tar(&root, &mut reader, &opts);
        assert!(swapped.load(Ordering::SeqCst), "the hook never ran");
        assert_eq!(
            listing(&outside),
            Vec::<String>::new(),
            "{format:?}: a write went through the swapped symlink ({r:?})"
        );
        r.unwrap_or_else(|e| panic!("{format:?}: apply failed: {e}"));
        let tree = listing(&root);
        // `a/evil` shares its parent with the entry before it, so it is written through
        // the directory fd the apply already holds: the moved directory itself, still
        // inside the root (a path is never looked up again). `a/sub/deep` and `a/hl`
        // need `a/` resolved anew: the symlink's absolute target is clamped to the root.
        let inside = root.join(outside.strip_prefix("/").unwrap());
        assert!(
            fs::read(root.join("a.moved/evil")).ok().as_deref() == Some(&b"evil"[..])
                || fs::read(inside.join("evil")).ok().as_deref() == Some(&b"evil"[..]),
            "{format:?}: a/evil is nowhere inside the root: {tree:?}"
        );
        assert_eq!(
            fs::read(inside.join("sub/deep")).unwrap(),
            b"deep",
            "{tree:?}"
        );
        assert_eq!(fs::read(inside.join("hl")).unwrap(), b"one", "{tree:?}");
        assert!(fs::symlink_metadata(root.join("a")).unwrap().is_symlink());
    }
}

#[test]
fn racing_symlink_swaps_cannot_redirect_a_write() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    const N: usize = 2000;
    let mut b = tar::Builder::new(Vec::new());
    b.append(&header("a/", tar::EntryType::Directory, 0), &[][..])
        .unwrap();
    for i in 0..N {
        b.append(
            &header(&format!("a/d{}/f{i}", i % 7), tar::EntryType::Regular, 2),
            &b"hi"[..],
        )
        .unwrap();
    }
    let data = b.into_inner().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let racer = {
        let (root, outside, stop, swaps): (PathBuf, PathBuf, _, _) =
            (root.clone(), outside.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let a = root.join("a");
            let moved = root.join("a.real");
            while !stop.load(Ordering::Relaxed) {
                // a/ (directory) -> a (symlink to outside) -> back.
                if fs::rename(&a, &moved).is_ok() {
                    let _ = symlink(&outside, &a);
                    std::thread::yield_now();
                    let _ = fs::remove_file(&a);
                    let _ = fs::rename(&moved, &a);
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::yield_now();
            }
        })
    };
    // Refusals are allowed (a parent that is a symlink to a missing in-root path gets
    // created, a rename can make a component vanish); escapes are not.
    let r = apply_tar(
        &root,
        &mut &data[..],
        &ApplyOptions::new(WhiteoutFormat::Delete),
    );
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let n = swaps.load(Ordering::Relaxed);
    assert!(n > 0, "the racer never swapped");
    assert_eq!(
        listing(&outside),
        Vec::<String>::new(),
        "a write escaped through a raced symlink after {n} swaps ({r:?})"
    );
    eprintln!("{n} swaps during the apply: {:?}", r.map(|s| s.entries));
}
