//! Snapshots of real directory trees and their comparison with an [`Expected`] tree
//! or with each other, entry by entry (type, mode, owner, content, link target, rdev,
//! xattrs, file mtime, hard-link groups).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::fixtures::{ExpEntry, Expected, NodeKind};

/// xattr name -> value.
pub type XattrMap = BTreeMap<String, Vec<u8>>;

/// Which xattrs a snapshot records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xattrs {
    /// `user.*` only: what a container sees and what image fixtures set.
    User,
    /// Every xattr the caller may read (trusted.overlay.* included): for on-disk layer dirs.
    All,
}

/// One observed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Device and inode number: paths with equal `(dev, ino)` are one hard-link group.
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

/// Walks `root` without following symlinks; keys are relative paths (`etc/passwd`).
/// An entry its directory lists but that cannot be read is a [`NodeKind::Broken`] node.
pub fn snapshot(root: &Path, xattrs: Xattrs) -> Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    walk(root, "", xattrs, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, rel: &str, xa: Xattrs, out: &mut BTreeMap<String, Node>) -> Result<()> {
    let rd = fs::read_dir(dir).with_context(|| format!("read_dir {}", dir.display()))?;
    for ent in rd {
        let ent = ent.with_context(|| format!("read_dir {}", dir.display()))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let path = ent.path();
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // A listed entry that cannot be read is recorded, not fatal: the comparison
        // then names it.
        let node = node_of(&path, xa).unwrap_or_else(|e| broken(format!("{e:#}")));
        let is_dir = node.kind == NodeKind::Dir;
        out.insert(key.clone(), node);
        if is_dir {
            walk(&path, &key, xa, out)?;
        }
    }
    Ok(())
}

/// The node of an entry that is listed but cannot be read.
fn broken(err: String) -> Node {
    Node {
        kind: NodeKind::Broken(err),
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        xattrs: BTreeMap::new(),
        dev: 0,
        ino: 0,
        nlink: 0,
    }
}

/// Major and minor of a Linux dev_t.
pub fn dev_split(rdev: u64) -> (u64, u64) {
    (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

/// The observed state of one path (not following a final symlink).
pub fn node_of(path: &Path, xa: Xattrs) -> Result<Node> {
    let md = fs::symlink_metadata(path).with_context(|| format!("lstat {}", path.display()))?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_file() {
        let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("read {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        NodeKind::File {
            sha256: hex::encode(h.finalize()),
            size: md.len(),
        }
    } else if ft.is_symlink() {
        NodeKind::Symlink(
            fs::read_link(path)
                .with_context(|| format!("readlink {}", path.display()))?
                .to_string_lossy()
                .into_owned(),
        )
    } else if ft.is_char_device() {
        let (a, b) = dev_split(md.rdev());
        NodeKind::CharDev(a, b)
    } else if ft.is_block_device() {
        let (a, b) = dev_split(md.rdev());
        NodeKind::BlockDev(a, b)
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else {
        NodeKind::Socket
    };
    let mut xattrs = BTreeMap::new();
    // Symlinks cannot carry user.* xattrs on Linux; skip them (llistxattr works but is moot).
    if !ft.is_symlink() {
        let names = xattr::list(path).with_context(|| format!("listxattr {}", path.display()))?;
        for n in names {
            let n = n.to_string_lossy().into_owned();
            if xa == Xattrs::User && !n.starts_with("user.") {
                continue;
            }
            let v = xattr::get(path, &n)
                .with_context(|| format!("getxattr {n} {}", path.display()))?
                .unwrap_or_default();
            xattrs.insert(n, v);
        }
    }
    Ok(Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: u64::from(md.uid()),
        gid: u64::from(md.gid()),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
        xattrs,
        dev: md.dev(),
        ino: md.ino(),
        nlink: md.nlink(),
    })
}

fn fmt_kind(k: &NodeKind) -> String {
    match k {
        NodeKind::File { sha256, size } => format!("file({size} bytes, sha256 {})", &sha256[..12]),
        other => format!("{other:?}"),
    }
}

fn compare_common(
    path: &str,
    kind: (&NodeKind, &NodeKind),
    mode: (u32, u32),
    owner: ((u64, u64), (u64, u64)),
    xattrs: (&XattrMap, &XattrMap),
    diffs: &mut Vec<String>,
) {
    if kind.0 != kind.1 {
        diffs.push(format!(
            "{path}: kind expected {} got {}",
            fmt_kind(kind.0),
            fmt_kind(kind.1)
        ));
        return;
    }
    // Symlink permission bits are meaningless on Linux (always 0777).
    if !matches!(kind.0, NodeKind::Symlink(_)) && mode.0 != mode.1 {
        diffs.push(format!(
            "{path}: mode expected {:o} got {:o}",
            mode.0, mode.1
        ));
    }
    if owner.0 != owner.1 {
        diffs.push(format!(
            "{path}: owner expected {:?} got {:?}",
            owner.0, owner.1
        ));
    }
    if xattrs.0 != xattrs.1 {
        diffs.push(format!(
            "{path}: xattrs expected {:?} got {:?}",
            xattrs.0, xattrs.1
        ));
    }
}

/// Compares an observed tree with the expectation. `extra_ok(path)` says whether a path
/// not in the expectation may appear (init-layer files); `skip(path)` excludes a path of
/// the expectation from comparison (an init-layer file overriding an image file).
/// Returns one line per difference (empty when equal).
pub fn compare_expected(
    exp: &Expected,
    actual: &BTreeMap<String, Node>,
    extra_ok: &dyn Fn(&str) -> bool,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut groups: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (path, e) in &exp.entries {
        if skip(path) {
            continue;
        }
        let Some(a) = actual.get(path) else {
            diffs.push(format!("{path}: missing"));
            continue;
        };
        compare_one(path, e, a, &mut diffs);
        if let Some(g) = &e.link_group {
            groups.entry(g.as_str()).or_default().push((path, a.ino));
        }
    }
    for (g, members) in groups {
        let inos: std::collections::BTreeSet<u64> = members.iter().map(|m| m.1).collect();
        if inos.len() != 1 {
            diffs.push(format!(
                "hard link group {g}: paths do not share one inode: {members:?}"
            ));
        }
    }
    // And paths the image does not hard-link must not share an inode.
    for group in link_groups(actual) {
        let members: Vec<&String> = group
            .iter()
            .filter(|p| exp.entries.contains_key(*p) && !skip(p))
            .collect();
        let keys: std::collections::BTreeSet<Option<&str>> = members
            .iter()
            .map(|p| exp.entries[*p].link_group.as_deref())
            .collect();
        if members.len() > 1 && (keys.len() != 1 || keys.contains(&None)) {
            diffs.push(format!(
                "{}: share one inode, but the image links them as {keys:?}",
                members
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for path in actual.keys() {
        if !exp.entries.contains_key(path) && !extra_ok(path) {
            diffs.push(format!(
                "{path}: unexpected entry {}",
                fmt_kind(&actual[path].kind)
            ));
        }
    }
    diffs
}

fn compare_one(path: &str, e: &ExpEntry, a: &Node, diffs: &mut Vec<String>) {
    compare_common(
        path,
        (&e.kind, &a.kind),
        (e.mode, a.mode),
        ((e.uid, e.gid), (a.uid, a.gid)),
        (&e.xattrs, &a.xattrs),
        diffs,
    );
    if matches!(e.kind, NodeKind::File { .. }) && a.mtime != e.mtime {
        diffs.push(format!(
            "{path}: mtime expected {} got {}",
            e.mtime, a.mtime
        ));
    }
}

/// Compares two observed trees (e.g. the vfs and the overlay2 mount of one image):
/// everything but inode numbers and directory mtimes must be equal, and the hard-link
/// groups must be the same sets of paths. In the lines returned, "expected" is the
/// first tree's value and "got" the second's.
pub fn compare_trees(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, x) in a {
        let Some(y) = b.get(path) else {
            diffs.push(format!("{path}: only in the first tree"));
            continue;
        };
        compare_common(
            path,
            (&x.kind, &y.kind),
            (x.mode, y.mode),
            ((x.uid, x.gid), (y.uid, y.gid)),
            (&x.xattrs, &y.xattrs),
            &mut diffs,
        );
        if x.kind != y.kind {
            // Reported above; nlink and mtime of different kinds say nothing more.
            continue;
        }
        if matches!(x.kind, NodeKind::File { .. })
            && (x.mtime, x.mtime_nsec) != (y.mtime, y.mtime_nsec)
        {
            diffs.push(format!("{path}: mtime {} vs {}", x.mtime, y.mtime));
        }
        if x.kind != NodeKind::Dir && x.nlink != y.nlink {
            diffs.push(format!("{path}: nlink {} vs {}", x.nlink, y.nlink));
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            diffs.push(format!("{path}: only in the second tree"));
        }
    }
    let (ga, gb) = (link_groups(a), link_groups(b));
    for g in ga.difference(&gb) {
        diffs.push(format!(
            "hard-link group {} only in the first tree",
            g.join(" = ")
        ));
    }
    for g in gb.difference(&ga) {
        diffs.push(format!(
            "hard-link group {} only in the second tree",
            g.join(" = ")
        ));
    }
    diffs
}

/// The hard-link groups of a snapshot: sets of two or more non-directory paths that
/// share one `(dev, ino)`, each sorted.
pub fn link_groups(snap: &BTreeMap<String, Node>) -> std::collections::BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for (path, n) in snap {
        if !matches!(n.kind, NodeKind::Dir | NodeKind::Broken(_)) {
            by_ino.entry((n.dev, n.ino)).or_default().push(path.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

/// A fingerprint of a whole on-disk tree (every entry's full metadata incl. ctime-free
/// fields, content hash and all xattrs), to prove a layer dir did not change.
pub fn fingerprint(root: &Path) -> Result<BTreeMap<String, Node>> {
    let mut snap = snapshot(root, Xattrs::All)?;
    // The root dir itself matters too (mode/owner).
    snap.insert(".".into(), node_of(root, Xattrs::All)?);
    Ok(snap)
}
