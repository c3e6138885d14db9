//! Union rules for filesystems that serve a stack live (the userspace aufs), beside the
//! read-side rules of [`crate::stack`] and the copy of one entry in [`crate::copyup`].
//!
//! - Hard-link identity (aufs' `plnk`): a lower file with several names that the
//!   merged view still shows as that one inode is copied up as a group, so changing it
//!   through one name changes it under all of them, as on a single tree.
//!   [`visible_link_group`] names the group.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{DriverError, Result};
use crate::stack::{Found, LayerStack};

/// The other names (relative paths, sorted) under which `stack`'s merged view shows the
/// very inode that `found` (the entry at `rel`, a non-directory) holds in its branch:
/// every name of that inode in the branch, less those hidden by whiteouts, opaque
/// directories or upper entries, less `rel` itself. Empty when the inode has one link.
///
/// Costs one walk of the branch holding the inode.
///
/// Errors: [`DriverError::Io`] naming the path that could not be walked or looked up.
pub fn visible_link_group(stack: &LayerStack, found: &Found, rel: &Path) -> Result<Vec<PathBuf>> {
    if found.meta.is_dir() || found.meta.nlink() <= 1 {
        return Ok(Vec::new());
    }
    let branch = &stack.branches()[found.branch];
    let (dev, ino) = (found.meta.dev(), found.meta.ino());
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(branch)
        .min_depth(1)
        .follow_links(false)
    {
        let e = e.map_err(|e| {
            let p = e.path().unwrap_or(branch).to_path_buf();
            DriverError::io("walk lower layer", p, e.into())
        })?;
        if e.file_type().is_dir() {
            continue;
        }
        let m = e
            .metadata()
            .map_err(|err| DriverError::io("stat", e.path(), err.into()))?;
        if m.dev() != dev || m.ino() != ino {
            continue;
        }
        let Ok(name) = e.path().strip_prefix(branch) else {
            continue;
        };
        if name == rel {
            continue;
        }
        let shown = stack
            .lookup(name)?
            .is_some_and(|g| g.branch == found.branch && g.meta.ino() == ino);
        if shown {
            out.push(name.to_path_buf());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whiteout::WhiteoutFormat;
    use std::fs;

    #[test]
    fn group_leaves_out_hidden_and_shadowed_names() {
        let t = tempfile::tempdir().unwrap();
        let (top, low) = (t.path().join("top"), t.path().join("low"));
        for d in ["bin", "opq", "x"] {
            fs::create_dir_all(low.join(d)).unwrap();
        }
        fs::create_dir_all(top.join("opq")).unwrap();
        fs::write(low.join("bin/a"), "group").unwrap();
        for n in ["bin/b", "c", "gone", "opq/h", "shadowed", "x/d"] {
            fs::hard_link(low.join("bin/a"), low.join(n)).unwrap();
        }
        fs::write(low.join("alone"), "1").unwrap();
        // Hidden: a whiteout, an opaque upper dir, an upper file of the same name.
        fs::write(top.join(".wh.gone"), "").unwrap();
        fs::write(top.join("opq/.wh..wh..opq"), "").unwrap();
        fs::write(top.join("shadowed"), "mine").unwrap();
        let s = LayerStack::new(vec![top, low], WhiteoutFormat::Aufs);
        let f = s.lookup(Path::new("bin/a")).unwrap().unwrap();
        assert_eq!(
            visible_link_group(&s, &f, Path::new("bin/a")).unwrap(),
            [
                PathBuf::from("bin/b"),
                PathBuf::from("c"),
                PathBuf::from("x/d")
            ]
        );
        let one = s.lookup(Path::new("alone")).unwrap().unwrap();
        assert!(visible_link_group(&s, &one, Path::new("alone"))
            .unwrap()
            .is_empty());
        let dir = s.lookup(Path::new("bin")).unwrap().unwrap();
        assert!(visible_link_group(&s, &dir, Path::new("bin"))
            .unwrap()
            .is_empty());
    }
}
