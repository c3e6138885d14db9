//! Internal mounts of deep stacks (see [`crate::plan::InternalMount`]): taken before an
//! outer mount, given back after it, shared and counted in `refs/<key>.lower` (live
//! while the kernel lists `<home>/<key>/lower-merged`); whiteout summaries built once
//! per group; stale internal mounts swept by `cleanup` and `remove`.
//!
//! Every function here runs under the counts' lock (`refs/.lock`), which the caller
//! holds, so no two processes mount, count or sweep the same internal mount at once.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::fsync_dir;
use driver_core::mountinfo::{self, MountInfo};
use driver_core::refcount::{Liveness, RefsGuard};
use driver_core::stack::Deletion;
use driver_core::whiteout::{OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR};
use driver_core::{LayerId, LayerStack, WhiteoutFormat};

use crate::plan::{count_key, InternalMount, MountPlan, LOWER_MERGED};
use crate::{mounter, Overlay2Driver};

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
    // The count first, then the mount: every internal mount the driver makes has a
    // count file, so [`sweep_stale`] finds it from `refs/` alone (without the mount
    // table), also when this process is killed right after the mount. A count whose
    // mount is not there reads as 0 (its liveness is the mount).
    g.set_key_nosync(&key, 1)?;
    if let Err(e) = mounter::mount(&im.plan, d.api) {
        if let Err(ce) = g.set_key(&key, 0) {
            tracing::error!(key, error = %ce, "dropping the count of an internal mount that failed");
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

/// The names in the counts' directory `refs/` (temp files and `.lock` excluded), read
/// without the lock; empty when it does not exist yet.
fn count_keys(d: &Overlay2Driver) -> Vec<String> {
    let Ok(rd) = fs::read_dir(d.layout.refs()) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// The internal mounts below home that no overlay uses any more, found without reading
/// the whole mount table in the usual case. `keys` are the count files of `refs/`.
///
/// 1. Candidates: the internal mounts the driver counts (`<key>.lower`) whose
///    `<key>/lower-merged` is a mount root (statx, O(1) each). Every internal mount the
///    driver makes is counted before it is mounted ([`acquire`]), so a `layerctl
///    mount` killed between its internal and its outer mount leaves a candidate.
/// 2. Users: the outer mounts the driver counts (`refs/<id>`, `<id>/merged` a mount
///    root); each one's plan names the internal mounts it stacks on (one `readlink` per
///    group, [`crate::plan::StackInfo::resolve`]).
/// 3. A candidate no counted outer mount uses is only a suspect: an outer mount may
///    have lost its count file, or be someone else's overlay over ours. Only then is
///    the table read, once, and it decides as before: unused is what no overlay in
///    `/proc/self/mountinfo` names as a lower dir ([`unused_internal_mounts`], which
///    then also finds uncounted internal mounts).
///
/// So a store with no deep stack mounted costs one listing of `refs/`; one with deep
/// stacks mounted and nothing stale, a statx per counted mount and a plan per counted
/// deep outer mount; reading the table (O(every mount of the namespace), overlay lines
/// ~40 KB for 500 layers) is left to recovery.
fn unused_counted(d: &Overlay2Driver, keys: &[String]) -> Result<Vec<PathBuf>> {
    let l = &d.layout;
    let mut candidates = Vec::new();
    for key in keys {
        let Some(id) = key.strip_suffix(".lower") else {
            continue;
        };
        let Ok(id) = LayerId::new(id) else { continue };
        if mountinfo::is_mount_root(&l.lower_merged(&id))? {
            candidates.push(id);
        }
    }
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let mut used = std::collections::BTreeSet::new();
    for key in keys {
        let Ok(id) = LayerId::new(key.as_str()) else {
            continue;
        };
        if !l.lower_file(&id).exists() || !mountinfo::is_mount_root(&l.merged(&id))? {
            continue;
        }
        match crate::mount::plan_of(d, &id, &driver_core::MountOpts::default()) {
            Ok(Some(p)) => used.extend(p.internal.into_iter().map(|im| im.key)),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%id, error = %e, "cannot plan a mounted layer; the mount table decides")
            }
        }
    }
    if candidates.iter().all(|k| used.contains(k)) {
        return Ok(Vec::new());
    }
    tracing::debug!(
        suspects = candidates.iter().filter(|k| !used.contains(*k)).count(),
        "internal mounts no counted mount uses: asking the mount table"
    );
    Ok(unused_internal_mounts(l.home(), &mountinfo::read()?))
}

/// [`unused_counted`] with the counts read from `refs/` (no lock: for `leftovers`,
/// whose caller holds the store lock).
pub(crate) fn unused(d: &Overlay2Driver) -> Result<Vec<PathBuf>> {
    unused_counted(d, &count_keys(d))
}

/// Unmounts internal mounts that no outer mount uses and drops counts of internal
/// mounts that are gone. Takes the counts' lock itself.
/// The store runs it on every exclusive open (through `cleanup`): with no internal
/// count file it takes no lock and reads no mount table (one listing of `refs/`); with
/// some, see [`unused_counted`] for what it asks.
pub(crate) fn sweep_stale(d: &Overlay2Driver) -> Result<()> {
    if !count_keys(d).iter().any(|k| k.ends_with(".lower")) {
        return Ok(());
    }
    let g = d.refs.lock()?;
    let keys = g.keys()?;
    for p in unused_counted(d, &keys)? {
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
        if p == dest {
            // The summary itself is the group's bottom lower dir (see InternalMount).
            continue;
        }
        layers.push(fs::canonicalize(&p).ctx("resolve short link", &p)?);
    }
    let marks = LayerStack::new(layers, WhiteoutFormat::Overlay).deletions()?;
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
                Deletion::Whiteout => nix::sys::stat::mknod(
                    &p,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| DriverError::errno("mknod whiteout", &p, e))?,
                Deletion::Opaque => {
                    mkdir(&p, &mut made)?;
                    rustix::fs::lsetxattr(
                        &p,
                        OVERLAY_OPAQUE_XATTR,
                        OVERLAY_OPAQUE_VALUE,
                        rustix::fs::XattrFlags::empty(),
                    )
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
}
