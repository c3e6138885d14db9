//! Garbage collection (`layerctl gc`): removes what no image or container needs.
//!
//! What goes:
//! - **unused layers**: layer records (and their driver layers) that are in no image's
//!   chain and below no container; they appear when an import or commit is killed
//!   between publishing a layer and publishing its image. Removed top down (children
//!   first), each as `rmi` frees a layer: record first, then content.
//! - **orphan driver layers** and **leftovers** of interrupted work (`tmp/` entries,
//!   the driver's `-removing`/`.creating-` dirs): what [`LayerStore::check`] reports as
//!   such, removed as `check --repair` removes them.
//!
//! Broken records (corrupt, missing content) are not gc's business: `check --repair`.
//!
//! Bytes freed are measured, not estimated (imports running meanwhile add to the
//! "after" side, so then it is a lower bound): the apparent size of the store root (as
//! `du -sb`: every entry's `st_size`, each hard-linked inode once, not crossing into
//! other filesystems such as mounted containers) before minus after. With `dry_run`
//! nothing is removed and `bytes` is the apparent size of what would go (every path
//! of each layer as [`driver_core::Driver::layer_paths`] names them, their records and
//! the leftovers): what `gc` then frees, when nothing changes meanwhile.

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use driver_core::LayerId;

use crate::check::Problem;
use crate::error::Result;
use crate::ids::ChainId;
use crate::store::LayerStore;

/// What [`LayerStore::gc`] removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Whether nothing was removed.
    pub dry_run: bool,
    /// Unused layers, top down.
    pub layers: Vec<ChainId>,
    /// Driver layers no record refers to.
    pub orphans: Vec<LayerId>,
    /// Leftovers of interrupted work.
    pub leftovers: Vec<PathBuf>,
    /// Bytes freed (dry run: the size of what would go), see the module doc.
    pub bytes: u64,
}

impl LayerStore {
    /// Collects garbage (see the module doc). Needs the exclusive lock.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        self.require_exclusive("gc")?;
        let mut report = GcReport {
            dry_run,
            ..Default::default()
        };
        let mut problems = Vec::new();
        for p in self.check()?.problems {
            match &p {
                Problem::OrphanLayer(id) => report.orphans.push(id.clone()),
                Problem::TmpLeftover(path)
                | Problem::DriverLeftover(path)
                | Problem::DeadMount(path) => report.leftovers.push(path.clone()),
                _ => continue,
            }
            problems.push(p);
        }
        let mut needed: BTreeSet<ChainId> = BTreeSet::new();
        for img in self.images()? {
            needed.extend(img.chain);
        }
        for c in self.containers()? {
            if let Some(p) = &c.parent {
                needed.extend(self.layer_chain(p)?.into_iter().map(|l| l.chain_id));
            }
        }
        // Layers a running import published or builds on, before its image exists.
        needed.extend(self.leased_chains()?);
        // Unused layers, deepest first: a child of an unused layer is unused too
        // (needed sets hold whole chains), so this removes children before parents.
        let mut unused: Vec<(usize, crate::layer::LayerRecord)> = Vec::new();
        for l in self.layers()? {
            if !needed.contains(&l.chain_id) {
                unused.push((self.layer_chain(&l.chain_id)?.len(), l));
            }
        }
        unused.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.chain_id.cmp(&b.1.chain_id)));
        report.layers = unused.iter().map(|(_, l)| l.chain_id.clone()).collect();

        if dry_run {
            // Every path the removal frees: each driver layer's paths, the records of
            // unused layers, the leftovers; hard-linked inodes once (`seen`).
            let mut paths = Vec::new();
            for (_, l) in &unused {
                paths.extend(self.driver.layer_paths(&l.cache_id)?);
                paths.push(self.layerdb_dir().join(l.chain_id.hex()));
            }
            for id in &report.orphans {
                paths.extend(self.driver.layer_paths(id)?);
            }
            paths.extend(report.leftovers.iter().cloned());
            let mut seen = HashSet::new();
            let mut bytes = 0;
            for p in &paths {
                bytes += apparent_size(p, &mut seen)?;
            }
            report.bytes = bytes;
            return Ok(report);
        }
        let before = apparent_size(&self.root, &mut HashSet::new())?;
        // Listed first: a kill mid-way leaves a dead lease the next start finishes by.
        let lease = self.work_lease("gc")?;
        for (_, l) in &unused {
            lease.add_layer(&l.cache_id)?;
        }
        for (_, l) in &unused {
            tracing::debug!(chain = %l.chain_id, "gc: removing unused layer");
            self.remove_layer(l)?;
        }
        self.end_lease(lease);
        for p in &problems {
            self.fix(p)?;
        }
        let after = apparent_size(&self.root, &mut HashSet::new())?;
        report.bytes = before.saturating_sub(after);
        Ok(report)
    }
}

/// `du -sb` of `path`: the sum of `st_size` of it and everything below, each inode
/// with several links once (`seen`), not descending into other filesystems. A missing
/// path is 0.
pub(crate) fn apparent_size(path: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<u64> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(crate::error::StoreError::io("stat", path, e)),
    };
    let dev = md.dev();
    let mut total = 0;
    let mut stack = vec![(path.to_path_buf(), md)];
    while let Some((p, md)) = stack.pop() {
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total += md.size();
        if md.is_dir() {
            // A directory can vanish mid-walk: an import creates and renames its
            // staging layers without the store lock.
            let rd = match std::fs::read_dir(&p) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::error::StoreError::io("list", &p, e)),
            };
            for e in rd {
                let e = match e {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(crate::error::StoreError::io("list", &p, e)),
                };
                let child = e.path();
                let cmd = match std::fs::symlink_metadata(&child) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(crate::error::StoreError::io("stat", child, e)),
                };
                if cmd.dev() != dev {
                    continue; // a mount (a container's merged dir): not the store's bytes
                }
                stack.push((child, cmd));
            }
        }
    }
    Ok(total)
}
