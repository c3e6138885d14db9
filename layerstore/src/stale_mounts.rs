//! Stale mounts below the store root, for `check`: a mount no live container accounts
//! for.
//!
//! Every driver puts a container's mount below a path with its read-write layer id as
//! one component (`overlay2/<id>/merged`, `aufs/mnt/<id>`), and the internal mounts of
//! overlay2's deep stacks below an image layer's cache id (`overlay2/<id>/lower-merged`,
//! the driver lists the unused ones itself as leftovers). A mount below the root is
//! stale when
//! - it is a dead FUSE mount (its userspace server is gone: `stat` answers `ENOTCONN`),
//!   or
//! - its path has a layer id component (a driver layer, or a generated id) but none
//!   that some container or layer record refers to (the container was removed, or its
//!   layer is an orphan), or
//! - its component is a container's read-write or init layer that the driver counts no
//!   mount reference for (a `umount` killed between the two steps).
//!
//! Mounts the driver already lists as leftovers are left to it. Repair detaches a stale
//! mount (`umount2(MNT_DETACH)`, as Docker does for dead mounts); the orphan layer
//! below it is then removed by the next round.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use driver_core::LayerId;

/// Why a mount is stale.
pub(crate) fn stale_reason(
    mount_point: &Path,
    root: &Path,
    referenced: &BTreeSet<LayerId>,
    driver_layers: &BTreeSet<LayerId>,
    container_layers: &BTreeSet<LayerId>,
    counted: &dyn Fn(&LayerId) -> bool,
) -> Option<String> {
    let rel = mount_point.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() {
        return None;
    }
    if let Err(e) = std::fs::metadata(mount_point) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            return Some("its FUSE server is gone (transport endpoint is not connected)".into());
        }
    }
    let ids: Vec<LayerId> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter_map(|s| LayerId::new(s).ok())
        .filter(|id| {
            referenced.contains(id) || driver_layers.contains(id) || looks_generated(id.as_str())
        })
        .collect();
    if ids.is_empty() {
        // Not a layer's mount (a bind mount someone made below the root): not ours.
        return None;
    }
    if !ids.iter().any(|id| referenced.contains(id)) {
        return Some(format!(
            "no container or layer refers to {}",
            ids.last().map(|i| i.to_string()).unwrap_or_default()
        ));
    }
    for id in ids.iter().filter(|id| container_layers.contains(*id)) {
        if !counted(id) {
            return Some(format!(
                "layer {id} is mounted but no mount reference counts it"
            ));
        }
    }
    None
}

/// A layer id as the store makes them (64 lowercase hex, `-init` for init layers):
/// a component of a removed layer's mount path still looks like this.
fn looks_generated(s: &str) -> bool {
    let hex = s.strip_suffix("-init").unwrap_or(s);
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Mount points strictly below `root`, deepest first (the order to detach them in).
pub(crate) fn mounts_below(root: &Path) -> driver_core::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = driver_core::mountinfo::read()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root) && p != root)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    Ok(v)
}

/// Detaches the mount at `path` (lazily: a dead FUSE mount cannot be unmounted
/// normally, and a busy one goes once its last user leaves).
pub(crate) fn detach(path: &Path) -> nix::Result<()> {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_reason_table() {
        let root = Path::new("/r");
        let img = LayerId::new("a".repeat(64)).unwrap();
        let ctr = LayerId::new("b".repeat(64)).unwrap();
        let gone = "c".repeat(64);
        let referenced: BTreeSet<LayerId> = [img.clone(), ctr.clone()].into();
        let ctrs: BTreeSet<LayerId> = [ctr.clone()].into();
        let none = BTreeSet::new();
        let yes = |_: &LayerId| true;
        let no = |_: &LayerId| false;
        let r = |p: &str, counted: &dyn Fn(&LayerId) -> bool| {
            stale_reason(Path::new(p), root, &referenced, &none, &ctrs, counted)
        };
        let c = ctr.as_str();
        let i = img.as_str();
        assert_eq!(r(&format!("/r/overlay2/{c}/merged"), &yes), None);
        assert!(r(&format!("/r/overlay2/{c}/merged"), &no).is_some());
        assert_eq!(r(&format!("/r/overlay2/{i}/lower-merged"), &no), None);
        assert!(r(&format!("/r/overlay2/{gone}/merged"), &yes).is_some());
        assert!(r(&format!("/r/aufs/mnt/{gone}-init"), &yes).is_some());
        assert_eq!(r("/r/some/bind", &yes), None, "not a layer's mount");
        assert_eq!(r("/r", &yes), None);
        assert_eq!(r("/elsewhere/x", &yes), None);
    }
}
