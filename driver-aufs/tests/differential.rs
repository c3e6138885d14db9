//! Differential test: random sequences of filesystem operations run on the same image
//! under overlay2 (kernel overlayfs) and under aufs (userspace) must leave identical
//! merged trees, give the same success or errno for each operation, and export
//! identical layer diffs (OCI whiteout form).
//!
//! The image has no hard-linked lower files: there the two differ by design (overlay
//! without `index=on` breaks the link on copy-up; aufs keeps the group, see the
//! userspace tests).
//!
//! CI runs a fixed list of seeds; for long runs set `AUFS_DIFF_SEEDS=<count>` and
//! `AUFS_DIFF_OPS=<ops per sequence>` (seeds then start at `AUFS_DIFF_FIRST_SEED`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use driver_aufs::options::ServerCommand;
use driver_aufs::AufsDriver;
use driver_core::conformance::{assert_trees_equal, lid, MtimeCheck, TarBuilder};
use driver_core::naive::MountGuard;
use driver_core::{CreateOpts, Driver, LayerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
const OPS: usize = 60;

fn image_tars() -> Vec<Vec<u8>> {
    vec![
        TarBuilder::new()
            .dir("a", 0o755)
            .file("a/f1", b"one", 0o644)
            .file_owned("a/f2", b"two two", 0o640, 12, 34)
            .dir("a/sub", 0o750)
            .file("a/sub/deep", b"deep", 0o600)
            .dir("b", 0o755)
            .file("b/g", b"gee", 0o755)
            .symlink("b/sym", "../a/f1")
            .dir("c", 0o700)
            .file("top", b"top level", 0o644)
            .finish(),
        TarBuilder::new()
            .dir("a", 0o755)
            .whiteout("a/f1")
            .file("a/new_in_2", b"second layer", 0o644)
            .dir("d", 0o755)
            .opaque("d")
            .file("d/x", b"x", 0o644)
            .finish(),
    ]
}

struct Side {
    root: PathBuf,
}

/// The outcome of one operation: Ok or the errno.
fn outcome<T>(r: std::io::Result<T>) -> Result<(), i32> {
    r.map(|_| ()).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<u8>),
    WriteAt(String, u64, Vec<u8>),
    Truncate(String, u64),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Utimens(String, i64),
    Rename(String, String),
    Link(String, String),
    Symlink(String, String),
    Unlink(String),
    Rmdir(String),
    RemoveTree(String),
    Mkdir(String, u32),
    SetXattr(String, String, Vec<u8>),
    RemoveXattr(String, String),
}

impl Side {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn apply(&self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Create(p, data) => outcome(fs::write(self.p(p), data)),
            Op::WriteAt(p, off, data) => outcome((|| {
                let mut f = fs::OpenOptions::new().write(true).open(self.p(p))?;
                f.seek(SeekFrom::Start(*off))?;
                f.write_all(data)
            })()),
            Op::Truncate(p, len) => outcome((|| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(self.p(p))?
                    .set_len(*len)
            })()),
            Op::Chmod(p, m) => outcome(fs::set_permissions(
                self.p(p),
                fs::Permissions::from_mode(*m),
            )),
            Op::Chown(p, u, g) => outcome(
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &self.p(p),
                    Some((*u).into()),
                    Some((*g).into()),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(std::io::Error::from),
            ),
            Op::Utimens(p, t) => {
                let ts = nix::sys::time::TimeSpec::new(*t, 123);
                outcome(
                    nix::sys::stat::utimensat(
                        nix::fcntl::AT_FDCWD,
                        &self.p(p),
                        &ts,
                        &ts,
                        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                    )
                    .map_err(std::io::Error::from),
                )
            }
            Op::Rename(a, b) => outcome(fs::rename(self.p(a), self.p(b))),
            Op::Link(a, b) => outcome(fs::hard_link(self.p(a), self.p(b))),
            Op::Symlink(t, p) => outcome(std::os::unix::fs::symlink(t, self.p(p))),
            Op::Unlink(p) => outcome(fs::remove_file(self.p(p))),
            Op::Rmdir(p) => outcome(fs::remove_dir(self.p(p))),
            Op::RemoveTree(p) => outcome(fs::remove_dir_all(self.p(p))),
            Op::Mkdir(p, m) => outcome((|| {
                fs::create_dir(self.p(p))?;
                fs::set_permissions(self.p(p), fs::Permissions::from_mode(*m))
            })()),
            Op::SetXattr(p, n, v) => outcome(xattr::set(self.p(p), n, v)),
            Op::RemoveXattr(p, n) => outcome(xattr::remove(self.p(p), n)),
        }
    }
}

/// Relative paths below `root`, sorted, and which are directories.
fn entries(root: &Path) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                e.file_type().is_dir(),
            )
        })
        .collect();
    v.sort();
    v
}

fn gen_op(rng: &mut StdRng, tree: &[(String, bool)], n: usize) -> Op {
    let files: Vec<&String> = tree.iter().filter(|(_, d)| !d).map(|(p, _)| p).collect();
    let dirs: Vec<&String> = tree.iter().filter(|(_, d)| *d).map(|(p, _)| p).collect();
    let any = |rng: &mut StdRng| -> String {
        if tree.is_empty() {
            "missing".into()
        } else {
            tree[rng.gen_range(0..tree.len())].0.clone()
        }
    };
    let file = |rng: &mut StdRng| -> String {
        if files.is_empty() {
            "missing".into()
        } else {
            files[rng.gen_range(0..files.len())].clone()
        }
    };
    let dir = |rng: &mut StdRng| -> String {
        if dirs.is_empty() || rng.gen_bool(0.2) {
            String::new()
        } else {
            dirs[rng.gen_range(0..dirs.len())].clone()
        }
    };
    let new_name = |rng: &mut StdRng| -> String {
        let d = dir(rng);
        // Reuse names of deleted lower entries now and then.
        let names = ["f1", "f2", "g", "sub", "x", "top", "c", "new"];
        let base = if rng.gen_bool(0.5) {
            names[rng.gen_range(0..names.len())].to_owned()
        } else {
            format!("n{n}")
        };
        if d.is_empty() {
            base
        } else {
            format!("{d}/{base}")
        }
    };
    match rng.gen_range(0..15) {
        0 => Op::Create(new_name(rng), vec![b'c'; rng.gen_range(0..300)]),
        1 => Op::WriteAt(
            file(rng),
            rng.gen_range(0..64),
            vec![b'w'; rng.gen_range(1..100)],
        ),
        2 => Op::Truncate(file(rng), rng.gen_range(0..20)),
        3 => Op::Chmod(
            any(rng),
            [0o600, 0o644, 0o755, 0o700, 0o4755][rng.gen_range(0..5)],
        ),
        4 => Op::Chown(
            any(rng),
            rng.gen_range(0..3) * 1000,
            rng.gen_range(0..3) * 1000,
        ),
        5 => Op::Utimens(any(rng), 1_500_000_000 + rng.gen_range(0..1000)),
        6 => Op::Rename(file(rng), new_name(rng)),
        7 => Op::Rename(dir(rng), new_name(rng)),
        8 => Op::Link(file(rng), new_name(rng)),
        9 => Op::Symlink("../a/f2".into(), new_name(rng)),
        10 => Op::Unlink(file(rng)),
        11 => {
            if rng.gen_bool(0.5) {
                Op::Rmdir(dir(rng))
            } else {
                Op::RemoveTree(dir(rng))
            }
        }
        12 => Op::Mkdir(new_name(rng), [0o755, 0o700, 0o2775][rng.gen_range(0..3)]),
        13 => Op::SetXattr(
            any(rng),
            format!("user.k{}", rng.gen_range(0..3)),
            vec![b'v'; rng.gen_range(0..10)],
        ),
        _ => Op::RemoveXattr(any(rng), format!("user.k{}", rng.gen_range(0..3))),
    }
}

/// A diff tar as comparable data: path -> (type, mode, uid, gid, content/link). An
/// opaque marker in a directory where the parent image has no directory changes
/// nothing (overlay sets one on every directory it renames): such markers are left out.
fn diff_entries(d: &dyn Driver, id: &LayerId, parent: &LayerId) -> BTreeMap<String, String> {
    let below = d.stack(parent).unwrap();
    let mut tar = Vec::new();
    d.diff(id, Some(parent))
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let h = e.header().clone();
        let kind = h.entry_type();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut xattrs: Vec<String> = e
            .pax_extensions()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|x| x.unwrap())
            .filter(|x| x.key().unwrap_or("").starts_with("SCHILY.xattr.user."))
            .map(|x| format!("{}={:?}", x.key().unwrap(), x.value_bytes()))
            .collect();
        xattrs.sort();
        if let Some(dir) = path.strip_suffix("/.wh..wh..opq") {
            if !below
                .lookup(Path::new(dir))
                .unwrap()
                .is_some_and(|f| f.is_dir())
            {
                continue;
            }
        }
        // Whiteout files: only their name matters.
        let is_wh = path.rsplit('/').next().unwrap_or("").starts_with(".wh.");
        let v = if is_wh {
            "whiteout".to_owned()
        } else {
            format!(
                "{kind:?} {:o} {}:{} {:?} {link} {xattrs:?}",
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
                String::from_utf8_lossy(&body)
            )
        };
        out.insert(path, v);
    }
    out
}

fn run_seed(seed: u64, ops: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("aufs-diff-")
        .tempdir()
        .unwrap();
    let ov =
        driver_overlay2::Overlay2Driver::new(&tmp.path().join("overlay2"), &Default::default())
            .expect("overlay2 (the reference) must work here");
    let au = AufsDriver::with_server(
        &tmp.path().join("aufs"),
        &[("mode".to_owned(), "userspace".to_owned())]
            .into_iter()
            .collect(),
        Some(ServerCommand {
            program: env!("CARGO_BIN_EXE_layerctl-aufs-server").into(),
            args: Vec::new(),
        }),
    )
    .unwrap();
    let drivers: [&dyn Driver; 2] = [&ov, &au];
    let (img0, img1, rw) = (lid("img0"), lid("img1"), lid("rw"));
    for d in drivers {
        let tars = image_tars();
        d.create(&img0, None, &CreateOpts::default()).unwrap();
        d.apply_diff(&img0, None, &mut &tars[0][..]).unwrap();
        d.create(&img1, Some(&img0), &CreateOpts::default())
            .unwrap();
        d.apply_diff(&img1, Some(&img0), &mut &tars[1][..]).unwrap();
        d.create(&rw, Some(&img1), &CreateOpts::read_write())
            .unwrap();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    {
        let (mo, ma) = (
            MountGuard::mount(&ov, &rw).unwrap(),
            MountGuard::mount(&au, &rw).unwrap(),
        );
        let (so, sa) = (
            Side {
                root: mo.path().to_path_buf(),
            },
            Side {
                root: ma.path().to_path_buf(),
            },
        );
        assert_trees_equal(&so.root, &sa.root, MtimeCheck::Exact);
        for i in 0..ops {
            let op = gen_op(&mut rng, &entries(&so.root), i);
            let (ro, ra) = (so.apply(&op), sa.apply(&op));
            log.push(format!("{op:?} -> overlay {ro:?}, aufs {ra:?}"));
            assert_eq!(
                ro,
                ra,
                "seed {seed} op {i} {op:?} differs; ops so far:\n{}",
                log.join("\n")
            );
            if i % 10 == 9 || i + 1 == ops {
                let tree_check = std::panic::catch_unwind(|| {
                    assert_trees_equal(&so.root, &sa.root, MtimeCheck::Ignore)
                });
                if let Err(e) = tree_check {
                    eprintln!("seed {seed}: ops so far:\n{}", log.join("\n"));
                    std::panic::resume_unwind(e);
                }
            }
        }
    }
    let (do_, da) = (diff_entries(&ov, &rw, &img1), diff_entries(&au, &rw, &img1));
    if do_ != da {
        let mut lines = Vec::new();
        for k in do_
            .keys()
            .chain(da.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if do_.get(k) != da.get(k) {
                lines.push(format!(
                    "{k}: overlay {:?} / aufs {:?}",
                    do_.get(k),
                    da.get(k)
                ));
            }
        }
        panic!(
            "seed {seed}: layer diffs differ:\n{}\nops:\n{}",
            lines.join("\n"),
            log.join("\n")
        );
    }
    // The diffs also carry the files' sizes and modes through the rw layer: a
    // re-applied diff gives the same tree (checked by the conformance suite).
    let _ = fs::metadata(tmp.path()).map(|m| m.ino());
}

#[test]
fn random_operation_sequences_match_overlay2() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(!driver_core::privileged_required(), "needs root");
        eprintln!("skipping: needs root");
        return;
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let ops = env("AUFS_DIFF_OPS").map(|n| n as usize).unwrap_or(OPS);
    match env("AUFS_DIFF_SEEDS") {
        Some(n) => {
            let first = env("AUFS_DIFF_FIRST_SEED").unwrap_or(1000);
            for s in first..first + n {
                run_seed(s, ops);
            }
        }
        None => {
            for &s in SEEDS {
                run_seed(s, ops);
            }
        }
    }
}
