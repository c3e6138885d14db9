//! Internal mounts of deep stacks (see [`crate::plan::InternalMount`]): taken before an
//! outer mount, given back after it, shared and counted in `refs/<key>.lower` (live
//! while the kernel lists `<home>/<key>/lower-merged`); whiteout summaries built once
//! per group; stale internal mounts swept by `cleanup` and `remove`.
//!
//! Every function here runs under the counts' lock (`refs/.lock`), which the caller
//! holds, so no two processes mount, count or sweep the same internal mount at once.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::fsync_dir;
use driver_core::mountinfo::{self, MountInfo};
use driver_core::refcount::{Liveness, RefsGuard};
use driver_core::LayerId;

use crate::plan::{count_key, InternalMount, MountPlan, LOWER_MERGED};
use crate::{mounter, Overlay2Driver};

/// overlayfs's opaque-directory marker (value `y`), as in the layers' `diff/`.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Takes one reference on each internal mount, bottom first, mounting those not
/// mounted yet. On error, gives back what it took and returns the error.
pub(crate) fn acquire_all(
    d: &Overlay2Driver,
    g: &RefsGuard<'_>,
    internal: &[InternalMount],
) -> Result<()> {
    for (i, im) in internal.iter().enumerate() {
        if let Err(e) = acquire(d, g, im) {
            release_all(d, g, &internal[..i]);
            return Err(e);
        }
    }
    Ok(())
}

fn acquire(d: &Overlay2Driver, g: &RefsGuard<'_>, im: &InternalMount) -> Result<()> {
    let key = im.count_key();
    let target = &im.plan.target;
    let n = g.get_key(&key, Liveness::KernelMount(target))?;
    if n > 0 {
        return g.set_key_nosync(&key, n + 1);
    }
    if let Some(w) = &im.whiteouts {
        ensure_whiteouts(&im.plan, &im.plan.abs(w))?;
    }
    if !target.is_dir() {
        DirBuilder::new()
            .mode(0o700)
            .create(target)
            .ctx("create directory", target)?;
    }
    mounter::mount(&im.plan, d.api)?;
    if let Err(e) = g.set_key_nosync(&key, 1) {
        if let Err(ue) = mounter::unmount(&key, target) {
            tracing::error!(key, error = %ue, "unmount after failing to record an internal mount");
        }
        return Err(e);
    }
    tracing::debug!(key = %im.key, layers = im.plan.lowerdirs.len(), "internal mount made");
    Ok(())
}

/// Gives back one reference on each internal mount, top first, unmounting those that
/// reach 0. Failures are logged, not returned: the outer mount is already gone (or
/// never was), and [`sweep_stale`] unmounts whatever is left unused.
pub(crate) fn release_all(d: &Overlay2Driver, g: &RefsGuard<'_>, internal: &[InternalMount]) {
    let _ = d;
    for im in internal.iter().rev() {
        let key = im.count_key();
        let target = &im.plan.target;
        let r = (|| -> Result<()> {
            match g.get_key(&key, Liveness::KernelMount(target))? {
                0 => g.set_key(&key, 0),
                1 => {
                    mounter::unmount(&key, target)?;
                    g.set_key(&key, 0)
                }
                n => g.set_key_nosync(&key, n - 1),
            }
        })();
        if let Err(e) = r {
            tracing::warn!(key, error = %e, "giving back an internal mount");
        }
    }
}

/// Whether mount option text `opts` names `dir` as a (lower) dir: the path followed by
/// the end, `,` or `:` (overlay lists lowerdirs joined by `:`).
fn names_dir(opts: &str, dir: &str) -> bool {
    opts.match_indices(dir).any(|(i, _)| {
        let before = opts[..i].chars().next_back();
        let after = opts[i + dir.len()..].chars().next();
        matches!(before, Some('=') | Some(':')) && matches!(after, None | Some(',') | Some(':'))
    })
}

/// The internal mounts below `home` in `table` that no other overlay uses as a lower
/// dir (left behind when an outer mount was unmounted behind the driver's back).
pub fn unused_internal_mounts(home: &Path, table: &[MountInfo]) -> Vec<PathBuf> {
    table
        .iter()
        .filter(|m| {
            m.mount_point.parent().and_then(Path::parent) == Some(home)
                && m.mount_point.file_name().is_some_and(|n| n == LOWER_MERGED)
        })
        .filter(|m| {
            let dir = m.mount_point.to_string_lossy();
            !table
                .iter()
                .any(|o| o.id != m.id && o.fstype == "overlay" && names_dir(&o.super_options, &dir))
        })
        .map(|m| m.mount_point.clone())
        .collect()
}

/// Unmounts internal mounts that no outer mount uses and drops counts of internal
/// mounts that are gone. Takes the counts' lock itself.
/// The store runs it on every exclusive open (through `cleanup`): with no internal
/// mount left unused and no internal count file, it takes no lock (one mountinfo read
/// and one listing of `refs/`).
pub(crate) fn sweep_stale(d: &Overlay2Driver) -> Result<()> {
    let home = d.layout.home();
    let any_counts = fs::read_dir(d.layout.refs()).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".lower"))
    });
    if !any_counts && unused_internal_mounts(home, &mountinfo::read()?).is_empty() {
        return Ok(());
    }
    let g = d.refs.lock()?;
    for p in unused_internal_mounts(home, &mountinfo::read()?) {
        let key = p
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::info!(path = %p.display(), "unmounting an unused internal mount");
        match mounter::unmount(&key, &p) {
            Ok(()) => {
                if let Ok(id) = LayerId::new(key.as_str()) {
                    g.set_key(&count_key(&id), 0)?;
                }
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "unmounting a stale internal mount")
            }
        }
    }
    for key in g.keys()? {
        if let Some(id) = key.strip_suffix(".lower") {
            let Ok(id) = LayerId::new(id) else { continue };
            let target = d.layout.lower_merged(&id);
            if g.get_key(&key, Liveness::KernelMount(&target))? == 0 {
                g.set_key(&key, 0)?;
            }
        }
    }
    Ok(())
}

/// What a group of layers deletes from the groups below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The path is deleted: a 0/0 char device in the summary.
    Whiteout,
    /// The directory hides everything below it: `trusted.overlay.opaque=y`.
    Opaque,
}

/// The deletions of layer trees `layers` (topmost first, overlay format: 0/0 char
/// devices and `trusted.overlay.opaque=y`) as seen from below the whole group: each
/// path some layer deletes, unless a higher layer of the group already deleted it or
/// a parent of it. A deleted path that higher layers filled with deletions of their own
/// becomes an opaque directory. Paths are relative to the layer roots.
pub fn group_deletions(layers: &[PathBuf]) -> Result<BTreeMap<PathBuf, Mark>> {
    let mut marks: BTreeMap<PathBuf, Mark> = BTreeMap::new();
    // Directories the summary needs because marks lie below them.
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let covered = |marks: &BTreeMap<PathBuf, Mark>, p: &Path| {
        p.ancestors().skip(1).any(|a| marks.contains_key(a))
    };
    for root in layers {
        let mut it = walkdir::WalkDir::new(root).min_depth(1).into_iter();
        while let Some(e) = it.next() {
            let e = e.map_err(|e| {
                let p = e.path().unwrap_or(root).to_owned();
                DriverError::io("walk layer", p, e.into())
            })?;
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("walkdir yields paths below its root")
                .to_owned();
            let ft = e.file_type();
            if covered(&marks, &rel) {
                if ft.is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            if ft.is_char_device() {
                let md = e
                    .metadata()
                    .map_err(|er| DriverError::io("stat", e.path(), er.into()))?;
                if md.rdev() == 0 && !marks.contains_key(&rel) {
                    let m = if dirs.contains(&rel) {
                        Mark::Opaque
                    } else {
                        Mark::Whiteout
                    };
                    add(&mut marks, &mut dirs, rel, m);
                }
            } else if ft.is_dir() {
                if marks.contains_key(&rel) {
                    // Deleted or made opaque above: nothing below matters.
                    it.skip_current_dir();
                } else if is_opaque(e.path())? {
                    add(&mut marks, &mut dirs, rel, Mark::Opaque);
                    it.skip_current_dir();
                }
            }
        }
    }
    Ok(marks)
}

fn add(marks: &mut BTreeMap<PathBuf, Mark>, dirs: &mut HashSet<PathBuf>, p: PathBuf, m: Mark) {
    for a in p.ancestors().skip(1) {
        if a.as_os_str().is_empty() || !dirs.insert(a.to_owned()) {
            break;
        }
    }
    marks.insert(p, m);
}

fn is_opaque(p: &Path) -> Result<bool> {
    let mut buf = [0u8; 8];
    match rustix::fs::lgetxattr(p, OPAQUE_XATTR, &mut buf) {
        Ok(n) => Ok(&buf[..n] == b"y"),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(false),
        Err(e) => Err(DriverError::io(
            "read xattr trusted.overlay.opaque",
            p,
            std::io::Error::from_raw_os_error(e.raw_os_error()),
        )),
    }
}

/// Builds the whiteout summary of a group at `dest` unless it exists: in a temp dir
/// beside it, synced, renamed into place. Layers never change once they have children,
/// so a summary stays right for the life of its key layer (it goes with the layer's
/// directory).
fn ensure_whiteouts(group: &MountPlan, dest: &Path) -> Result<()> {
    if dest.is_dir() {
        return Ok(());
    }
    let mut layers = Vec::with_capacity(group.lowerdirs.len());
    for l in &group.lowerdirs {
        let p = group.abs(l);
        layers.push(fs::canonicalize(&p).ctx("resolve short link", &p)?);
    }
    let marks = group_deletions(&layers)?;
    let parent = dest.parent().unwrap_or(Path::new("/"));
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{}",
        crate::plan::LOWER_WHITEOUTS,
        std::process::id(),
        driver_core::id::random_hex(4)
    ));
    let build = || -> Result<()> {
        let mut made: Vec<PathBuf> = Vec::new();
        let mkdir = |p: &Path, made: &mut Vec<PathBuf>| -> Result<()> {
            if !p.is_dir() {
                DirBuilder::new()
                    .mode(0o755)
                    .create(p)
                    .ctx("create directory", p)?;
                made.push(p.to_owned());
            }
            Ok(())
        };
        mkdir(&tmp, &mut made)?;
        for (rel, m) in &marks {
            let p = tmp.join(rel);
            // Parents first (sorted map: a parent sorts before its children).
            let mut parents: Vec<&Path> = p
                .ancestors()
                .skip(1)
                .take_while(|a| *a != tmp.as_path())
                .collect();
            parents.reverse();
            for a in parents {
                mkdir(a, &mut made)?;
            }
            match m {
                Mark::Whiteout => nix::sys::stat::mknod(
                    &p,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| DriverError::errno("mknod whiteout", &p, e))?,
                Mark::Opaque => {
                    mkdir(&p, &mut made)?;
                    rustix::fs::lsetxattr(&p, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                        .map_err(|e| {
                            DriverError::io(
                                "set xattr trusted.overlay.opaque",
                                &p,
                                std::io::Error::from_raw_os_error(e.raw_os_error()),
                            )
                        })?;
                }
            }
        }
        for dir in made.iter().rev() {
            fsync_dir(dir)?;
        }
        fs::rename(&tmp, dest).ctx("rename into place", dest)?;
        fsync_dir(parent)
    };
    let r = build();
    if r.is_err() {
        if let Err(e) = fs::remove_dir_all(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %e, "removing partial whiteout summary");
            }
        }
    }
    tracing::debug!(path = %dest.display(), marks = marks.len(), "whiteout summary built");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u32, mp: &str, fstype: &str, opts: &str) -> MountInfo {
        MountInfo {
            id,
            mount_point: mp.into(),
            mount_options: "rw".into(),
            fstype: fstype.into(),
            source: "overlay".into(),
            super_options: opts.into(),
        }
    }

    #[test]
    fn names_dir_matches_whole_lowerdir_entries() {
        let o = "rw,lowerdir=/h/l/A:/h/x/lower-merged:/h/x/lower-wh,upperdir=/h/c/diff";
        assert!(names_dir(o, "/h/x/lower-merged"));
        assert!(names_dir(
            "ro,lowerdir+=/h/x/lower-merged",
            "/h/x/lower-merged"
        ));
        assert!(!names_dir(o, "/h/x/lower"));
        assert!(!names_dir(o, "/x/lower-merged"));
    }

    #[test]
    fn unused_internal_mounts_are_those_no_overlay_names() {
        let t = vec![
            info(1, "/", "ext4", "rw"),
            info(
                2,
                "/h/a/lower-merged",
                "overlay",
                "ro,lowerdir=/h/l/A:/h/l/B",
            ),
            info(3, "/h/b/lower-merged", "overlay", "ro,lowerdir=/h/l/C"),
            info(
                4,
                "/h/c/merged",
                "overlay",
                "rw,lowerdir=/h/l/D:/h/b/lower-merged:/h/b/lower-wh:/h/a/lower-merged",
            ),
            info(5, "/h/e/lower-merged", "overlay", "ro,lowerdir=/h/l/E"),
            info(6, "/h/f/merged", "overlay", "ro,lowerdir=/h/l/F"),
        ];
        assert_eq!(
            unused_internal_mounts(Path::new("/h"), &t),
            vec![PathBuf::from("/h/e/lower-merged")]
        );
    }

    fn wh(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        nix::sys::stat::mknod(
            p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }

    #[test]
    fn group_deletions_follow_the_layer_order() {
        if !nix::unistd::geteuid().is_root() {
            assert!(!driver_core::privileged_required(), "needs root (mknod)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (top, mid, low) = (
            t.path().join("top"),
            t.path().join("mid"),
            t.path().join("low"),
        );
        for l in [&top, &mid, &low] {
            fs::create_dir_all(l).unwrap();
        }
        // top: deletes a/x and d; makes o opaque; recreates r (a file) over a lower deletion.
        wh(&top.join("a/x"));
        wh(&top.join("d"));
        fs::create_dir_all(top.join("o/in")).unwrap();
        rustix::fs::lsetxattr(
            top.join("o"),
            OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::write(top.join("r"), b"r").unwrap();
        // mid: deletes a (whose a/x the top deleted too), d/y (below top's deletion of d),
        // o/z (below top's opaque o), r, and a char device that is not a whiteout.
        wh(&mid.join("a"));
        wh(&mid.join("d/y"));
        wh(&mid.join("o/z"));
        wh(&mid.join("r"));
        nix::sys::stat::mknod(
            &mid.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        // low: an opaque dir p with a deletion inside (covered by p's opacity).
        wh(&low.join("p/q"));
        rustix::fs::lsetxattr(
            low.join("p"),
            OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let got = group_deletions(&[top, mid, low]).unwrap();
        let want: BTreeMap<PathBuf, Mark> = [
            ("a", Mark::Opaque),
            ("a/x", Mark::Whiteout),
            ("d", Mark::Whiteout),
            ("o", Mark::Opaque),
            ("p", Mark::Opaque),
            ("r", Mark::Whiteout),
        ]
        .into_iter()
        .map(|(p, m)| (PathBuf::from(p), m))
        .collect();
        assert_eq!(got, want);
    }
}
