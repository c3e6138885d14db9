//! Native changes and size: read from the layer's `diff/` (O(number of changes)), with
//! one lookup per change in the lower layers to tell Add from Modify.
//!
//! Rules (documented choice, close to `docker diff` on overlay2):
//! - a 0/0 char device `x` -> `Delete x`;
//! - any other entry -> `Modify` if the path exists in the lower layers (directories
//!   copied up because a child changed are reported as modified, like Docker), else `Add`;
//! - an opaque directory is reported as one entry (`Modify` if it existed below); the
//!   lower children it hides are not listed one by one.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use driver_core::error::{DriverError, Result};
use driver_core::{Change, ChangeKind};

use crate::diff::{is_opaque, is_whiteout};

fn lstat(p: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `rel` is visible in the union of `lowers` (nearest first), honouring
/// whiteouts and opaque directories of the upper lowers.
pub(crate) fn exists_in_lowers(lowers: &[PathBuf], rel: &Path) -> io::Result<bool> {
    let comps: Vec<Component<'_>> = rel.components().collect();
    for lower in lowers {
        let mut hidden = false;
        let mut cur = lower.clone();
        let mut absent = false;
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let Some(m) = lstat(&cur)? else {
                absent = true;
                break;
            };
            if is_whiteout(&m) {
                return Ok(false);
            }
            if i + 1 == comps.len() {
                return Ok(true);
            }
            if !m.is_dir() {
                // A file here hides whatever lower layers have below this name.
                return Ok(false);
            }
            if is_opaque(&cur) {
                hidden = true;
            }
        }
        if absent && hidden {
            return Ok(false);
        }
    }
    Ok(false)
}

/// The changes recorded in `diff_dir` relative to `lowers`.
pub(crate) fn native_changes(diff_dir: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(diff_dir)
        .min_depth(1)
        .follow_links(false)
    {
        let e = e.map_err(|e| {
            let p = e.path().unwrap_or(diff_dir).to_owned();
            DriverError::io("walk", p, e.into())
        })?;
        let rel = e.path().strip_prefix(diff_dir).unwrap_or(e.path());
        let m = e
            .metadata()
            .map_err(|err| DriverError::io("lstat", e.path(), err.into()))?;
        let kind = if is_whiteout(&m) {
            ChangeKind::Delete
        } else if exists_in_lowers(lowers, rel)
            .map_err(|err| DriverError::io("lstat in lower layers", rel, err))?
        {
            ChangeKind::Modify
        } else {
            ChangeKind::Add
        };
        out.push(Change {
            path: Path::new("/").join(rel),
            kind,
        });
    }
    out.sort();
    Ok(out)
}

/// Bytes of regular-file content in `diff_dir`, hard links counted once.
pub(crate) fn native_size(diff_dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(diff_dir).follow_links(false) {
        let e = e.map_err(|e| {
            let p = e.path().unwrap_or(diff_dir).to_owned();
            DriverError::io("walk", p, e.into())
        })?;
        if !e.file_type().is_file() {
            continue;
        }
        let m = e
            .metadata()
            .map_err(|err| DriverError::io("lstat", e.path(), err.into()))?;
        if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        total += m.len();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root (mknod, trusted.* xattrs); skips otherwise unless required.
    fn root() -> bool {
        let r = nix::unistd::geteuid().is_root();
        assert!(r || !driver_core::privileged_required(), "needs root");
        r
    }

    fn whiteout(p: &Path) {
        nix::sys::stat::mknod(
            p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }

    #[test]
    fn lookup_through_whiteouts_and_opaque_dirs() {
        if !root() {
            eprintln!("skipping: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        // Nearest first: top, mid, bottom.
        let (top, mid, bot) = (
            t.path().join("top"),
            t.path().join("mid"),
            t.path().join("bot"),
        );
        for d in [&top, &mid, &bot] {
            fs::create_dir_all(d.join("o")).unwrap();
        }
        for f in ["a", "gone", "o/hidden", "o/kept", "file/x"] {
            let p = bot.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "b").unwrap();
        }
        fs::create_dir_all(mid.join("file")).unwrap();
        fs::remove_dir_all(mid.join("file")).unwrap();
        fs::write(mid.join("file"), "now a file").unwrap();
        whiteout(&mid.join("gone"));
        fs::write(mid.join("o/kept"), "m").unwrap();
        rustix::fs::setxattr(
            mid.join("o"),
            OVERLAY_OPAQUE,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let lowers = vec![top, mid, bot];
        let cases = [
            ("a", true),
            ("gone", false), // whited out in mid
            ("o", true),
            ("o/kept", true),    // in the opaque dir itself
            ("o/hidden", false), // below the opaque dir
            ("file/x", false),   // a file in mid hides bot's directory
            ("nothing", false),
        ];
        for (p, want) in cases {
            assert_eq!(
                exists_in_lowers(&lowers, Path::new(p)).unwrap(),
                want,
                "{p}"
            );
        }
    }

    const OVERLAY_OPAQUE: &str = driver_core::whiteout::OVERLAY_OPAQUE_XATTR;
}
