//! Startup and `cleanup`: make the skeleton, recreate missing short links (seen after
//! unclean shutdowns in Docker; never fatal), give a layer that lost its `link` file a
//! new one, finish `-removing` leftovers, drop debris of interrupted creates.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use driver_core::error::{IoContext, Result};
use driver_core::fsutil::write_atomic;
use driver_core::LayerId;

use crate::create::make_link;
use crate::layout::{is_short_id, new_short_id, Layout};
use crate::list::{classify, HomeEntry};

pub(crate) fn prepare_home(l: &Layout) -> Result<()> {
    for p in [l.home().to_owned(), l.links()] {
        if !p.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .ctx("create directory", &p)?;
        }
    }
    Ok(())
}

/// Whether `pid` (decimal) names a live process; anything unparsable counts as dead.
pub(crate) fn pid_alive(pid: &str) -> bool {
    pid.bytes().all(|b| b.is_ascii_digit())
        && pid.parse::<u32>().is_ok_and(driver_core::fsutil::pid_alive)
}

/// Repairs the tree. Leftovers of interrupted removals/creates are always finished.
/// The per-layer pass (every layer's `link` file and short link, dangling links, stale
/// counts) runs when `full`, or when the number of short links differs from the number
/// of layers: each single interruption (create between rename and symlink, remove
/// between rename and unlink) shows up as such a difference, and opening the driver
/// (every `layerctl` command) stays O(1) per layer (one getdents, no stat).
pub(crate) fn repair(l: &Layout, full: bool) -> Result<()> {
    let mut layers = Vec::new();
    for e in fs::read_dir(l.home()).ctx("read directory", l.home())? {
        let e = e.ctx("read directory", l.home())?;
        let path = e.path();
        match classify(&e.file_name().to_string_lossy()) {
            HomeEntry::Removing => {
                tracing::info!(path = %path.display(), "finishing interrupted removal");
                log_err(crate::remove::remove_tree(&path), &path);
            }
            // A live pid may be creating it right now.
            HomeEntry::Creating { pid } if !pid_alive(&pid) => {
                tracing::info!(path = %path.display(), "removing debris of an interrupted create");
                log_err(crate::remove::remove_tree(&path), &path);
            }
            HomeEntry::ProbeTmp { pid } if !pid_alive(&pid) => {
                log_err(crate::remove::remove_tree(&path), &path);
            }
            HomeEntry::Layer(id) => {
                // d_type from readdir, no stat per layer: opening the driver stays O(1)
                // syscalls per layer only in getdents.
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && full && !path.join("diff").is_dir() {
                    // A layer that lost its content (a create renames a complete layer
                    // into place, a removal renames it away first): nothing can use it,
                    // and its short link would dangle. `leftovers` lists it.
                    tracing::info!(path = %path.display(), "removing a layer directory without diff/");
                    log_err(crate::remove::remove_tree(&path), &path);
                } else if is_dir && (!full || path.join("diff").is_dir()) {
                    layers.push(id);
                }
            }
            HomeEntry::Creating { .. } | HomeEntry::ProbeTmp { .. } | HomeEntry::Other => {}
        }
    }
    let links: Vec<String> = fs::read_dir(l.links())
        .ctx("read directory", l.links())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !full && links.len() == layers.len() {
        return Ok(());
    }
    let mut wanted = HashSet::new();
    let mut by_target: Option<HashMap<String, String>> = None;
    for id in &layers {
        let link = match l.read_link(id) {
            Ok(s) => s,
            // Removed (or renamed away by a remove) since the listing: another process
            // works beside this startup (imports run without the store lock).
            Err(_) if !l.dir(id).is_dir() => continue,
            Err(e) => {
                // The short link in l/ still names it, if it survived: keep that name so
                // the children's `lower` files stay valid.
                let by_target = by_target.get_or_insert_with(|| links_by_target(l, &links));
                let s = match by_target.get(id.as_str()) {
                    Some(s) => {
                        tracing::warn!(%id, error = %e, link = s, "restoring link file from l/");
                        s.clone()
                    }
                    None => {
                        let s = new_short_id();
                        // Children's `lower` files name the lost link; they cannot be
                        // fixed without it (they fail to mount, clearly), as in Docker.
                        tracing::warn!(%id, error = %e, new = s, "layer has no link file; making a new one");
                        s
                    }
                };
                match write_atomic(&l.link_file(id), s.as_bytes()) {
                    Ok(()) => {}
                    Err(_) if !l.dir(id).is_dir() => continue, // removed meanwhile
                    Err(e) => return Err(e),
                }
                s
            }
        };
        let p = l.link_path(&link);
        if fs::symlink_metadata(&p).is_err() {
            if !l.diff(id).is_dir() {
                // No content to link to (the full pass removes such a directory).
                continue;
            }
            // Outside the full pass this is also what a concurrent `create` looks like
            // between its rename into place and its link (it makes the same link, which
            // `make_link` accepts): repaired quietly, reported only by the full pass.
            if full {
                tracing::warn!(%id, link, "recreating missing short link");
            } else {
                tracing::debug!(%id, link, "making missing short link");
            }
            make_link(l.home(), id, &link)?;
        } else if full {
            let want = Path::new("..").join(id.as_str()).join("diff");
            if fs::read_link(&p).ok().as_deref() != Some(want.as_path()) {
                tracing::warn!(%id, link, "short link points elsewhere; recreating it");
                fs::remove_file(&p).ctx("remove", &p)?;
                make_link(l.home(), id, &link)?;
            }
        }
        wanted.insert(link);
    }
    if full {
        for name in links {
            let p = l.link_path(&name);
            if !is_short_id(&name) || (!wanted.contains(&name) && fs::metadata(&p).is_err()) {
                tracing::info!(link = name, "pruning dangling short link");
                log_err(fs::remove_file(&p).ctx("remove", &p), &p);
            }
        }
        if let Ok(rd) = fs::read_dir(l.refs()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // `<id>.lower`: an internal mount's count, swept by internal::sweep_stale.
                let base = name.strip_suffix(".lower").unwrap_or(&name);
                if let Ok(id) = LayerId::new(base) {
                    if !layers.contains(&id) {
                        log_err(fs::remove_file(e.path()).ctx("remove", e.path()), &e.path());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Layer id -> short link name, read from the `l/<short> -> ../<id>/diff` symlinks.
fn links_by_target(l: &Layout, links: &[String]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for name in links.iter().filter(|n| is_short_id(n)) {
        if let Ok(t) = fs::read_link(l.link_path(name)) {
            let mut c = t.components();
            if let (Some(std::path::Component::ParentDir), Some(id), Some(d), None) =
                (c.next(), c.next(), c.next(), c.next())
            {
                if d.as_os_str() == "diff" {
                    m.insert(id.as_os_str().to_string_lossy().into_owned(), name.clone());
                }
            }
        }
    }
    m
}

fn log_err(r: Result<()>, p: &Path) {
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cleanup step failed");
    }
}
