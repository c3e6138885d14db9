//! What the driver home holds, name by name: layers, leftovers of interrupted work and
//! the driver's own files. [`Driver::layers`](driver_core::Driver::layers) and
//! [`Driver::leftovers`](driver_core::Driver::leftovers) answer from it, so the layer
//! store never matches overlay2's folder names.

use std::fs;
use std::path::PathBuf;

use driver_core::{IoContext, LayerId, Result};

use crate::layout::{Layout, CREATING_PREFIX, LINK_DIR, REMOVING_SUFFIX};
use crate::startup::pid_alive;

/// One name in `<home>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HomeEntry {
    /// `<id>/`: a layer (when it holds `diff/`).
    Layer(LayerId),
    /// `.<id>-removing/`: an interrupted removal.
    Removing,
    /// `.creating-<pid>-<id>/`: a create, interrupted unless `pid` still runs.
    Creating { pid: String },
    /// `.probe-tmp-<pid>-<rand>/`: a probe's test mount, stale unless `pid` still runs.
    ProbeTmp { pid: String },
    /// `l/`, `refs/`, probe caches and anything else that is not a layer.
    Other,
}

/// Classifies one name of `<home>`.
pub(crate) fn classify(name: &str) -> HomeEntry {
    if name.starts_with('.') && name.ends_with(REMOVING_SUFFIX) {
        return HomeEntry::Removing;
    }
    if let Some(rest) = name.strip_prefix(CREATING_PREFIX) {
        return HomeEntry::Creating {
            pid: rest.split('-').next().unwrap_or("").to_owned(),
        };
    }
    if let Some(rest) = name.strip_prefix(".probe-tmp-") {
        return HomeEntry::ProbeTmp {
            pid: rest.split('-').next().unwrap_or("").to_owned(),
        };
    }
    if name == LINK_DIR || name == "refs" {
        return HomeEntry::Other;
    }
    match LayerId::new(name) {
        Ok(id) => HomeEntry::Layer(id),
        Err(_) => HomeEntry::Other,
    }
}

/// The layers in `<home>`: directories with a layer id name holding `diff/`, sorted.
pub(crate) fn layers(l: &Layout) -> Result<Vec<LayerId>> {
    let mut out = Vec::new();
    for e in fs::read_dir(l.home()).ctx("read directory", l.home())? {
        let e = e.ctx("read directory", l.home())?;
        if let HomeEntry::Layer(id) = classify(&e.file_name().to_string_lossy()) {
            if l.diff(&id).is_dir() {
                out.push(id);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Leftovers of interrupted work in `<home>` that cleanup would remove now, and layer
/// directories without `diff/` (damage the full repair removes).
pub(crate) fn leftovers(l: &Layout) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(l.home()).ctx("read directory", l.home())? {
        let e = e.ctx("read directory", l.home())?;
        let stale = match classify(&e.file_name().to_string_lossy()) {
            HomeEntry::Removing => true,
            HomeEntry::Creating { pid } | HomeEntry::ProbeTmp { pid } => !pid_alive(&pid),
            // A layer directory that lost its `diff/` (never a create in progress: those
            // are renamed into place whole); the full repair removes it.
            HomeEntry::Layer(id) => e.path().is_dir() && !l.diff(&id).is_dir(),
            HomeEntry::Other => false,
        };
        if stale {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Broken short links, which `Driver::repair` (the full pass of
/// [`crate::startup::repair`]) re-derives: a layer without a readable `link` file
/// (`<home>/<id>/link`), a layer whose short link is missing or points elsewhere
/// (`l/<short>`), an `l/` entry that is no short link or dangles, and a `lower` file
/// naming a short link that does not exist (`<home>/<id>/lower`; a layer below lost
/// its link: mounting fails; repair recreates it when the layer below still has its
/// `link` file). O(layers) stats: only `check` and `gc` call it.
pub(crate) fn broken_links(l: &Layout) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut known = std::collections::HashSet::new();
    for id in layers(l)? {
        match l.read_link(&id) {
            Ok(short) => {
                let p = l.link_path(&short);
                let want = std::path::Path::new("..").join(id.as_str()).join("diff");
                if fs::read_link(&p).ok().as_deref() != Some(want.as_path()) {
                    out.push(p);
                }
                known.insert(short);
            }
            Err(_) => out.push(l.link_file(&id)),
        }
    }
    let links = l.links();
    for e in fs::read_dir(&links).ctx("read directory", &links)? {
        let e = e.ctx("read directory", &links)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if !known.contains(&name) && fs::metadata(&p).is_err() && !out.contains(&p) {
            out.push(p);
        }
    }
    for id in layers(l)? {
        if let Ok(lowers) = l.read_lowers(&id) {
            if lowers.iter().any(|s| fs::metadata(l.link_path(s)).is_err()) {
                out.push(l.lower_file(&id));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let id = "a".repeat(64);
        assert_eq!(classify(&id), HomeEntry::Layer(LayerId::new(&id).unwrap()));
        assert_eq!(classify(&format!(".{id}-removing")), HomeEntry::Removing);
        assert_eq!(
            classify(".creating-42-x"),
            HomeEntry::Creating { pid: "42".into() }
        );
        assert_eq!(
            classify(".probe-tmp-7-abc"),
            HomeEntry::ProbeTmp { pid: "7".into() }
        );
        assert_eq!(classify("l"), HomeEntry::Other);
        assert_eq!(classify("refs"), HomeEntry::Other);
        assert_eq!(classify(".probe-123.json"), HomeEntry::Other);
    }
}
