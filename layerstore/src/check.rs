//! `check` and `check --repair`: metadata against the driver's layers, and leftovers of
//! interrupted work.
//!
//! Found problems:
//! - leftovers in `tmp/` (an interrupted import or removal) and staging leases of dead
//!   imports in `staging/` ([`crate::staging`]; a live import's lease is not a problem
//!   and its unpublished layers are not orphans);
//! - unexpected entries in `layerdb/`, `images/`, `containers/` (not a valid id or name);
//! - layer records that are unreadable, whose parent record is missing, or whose driver
//!   layer (cache id) is missing;
//! - images whose config is unreadable or whose layers are missing;
//! - containers whose record is unreadable or whose image, init or rw layer is missing;
//! - orphan driver layers: layers of the driver no record refers to (a crash between
//!   apply and publish, or between removing metadata and removing the layer);
//! - half-removed or half-created driver layers (`-removing`, `.creating-`), which the
//!   driver's `cleanup()` finishes (run on every exclusive open and by repair).
//!
//! Repair removes what is broken, in rounds until nothing is left (removing a broken
//! layer record makes its images broken, then their layers orphans...).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use driver_core::LayerId;

use crate::error::{Result, StoreError};
use crate::ids::{ChainId, ContainerName, ImageId};
use crate::store::LayerStore;
use crate::writeset::{list_dir, remove_entry, remove_logged};

/// Rounds of repair before giving up (each round can only uncover problems one level up).
const MAX_REPAIR_ROUNDS: usize = 8;

/// One problem found by [`LayerStore::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Something left in `tmp/`, or a dead import's lease in `staging/`.
    TmpLeftover(PathBuf),
    /// An entry that is not a valid id or name in a metadata directory.
    StrayEntry(PathBuf),
    /// A layer record that cannot be read.
    CorruptLayer { chain: ChainId, reason: String },
    /// A layer record whose parent record is missing.
    LayerParentMissing { chain: ChainId, parent: ChainId },
    /// A layer record whose driver layer is missing.
    LayerContentMissing { chain: ChainId, cache_id: LayerId },
    /// An image that cannot be read.
    CorruptImage { id: ImageId, reason: String },
    /// An image whose layer is missing.
    ImageLayerMissing { id: ImageId, chain: ChainId },
    /// A container that cannot be read.
    CorruptContainer { name: ContainerName, reason: String },
    /// A container whose image, or init/rw layer, is missing.
    ContainerBroken { name: ContainerName, reason: String },
    /// A driver layer no record refers to.
    OrphanLayer(LayerId),
    /// Interrupted driver work the driver itself lists ([`driver_core::Driver::leftovers`]):
    /// a half-removed or half-created layer directory, a stale internal mount, a dead
    /// server's mount; the driver's `cleanup` finishes it.
    DriverLeftover(PathBuf),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TmpLeftover(p) => write!(f, "leftover of interrupted work: {}", p.display()),
            Problem::StrayEntry(p) => write!(f, "unexpected entry: {}", p.display()),
            Problem::CorruptLayer { chain, reason } => {
                write!(f, "layer {chain}: corrupt record: {reason}")
            }
            Problem::LayerParentMissing { chain, parent } => {
                write!(f, "layer {chain}: parent layer {parent} is missing")
            }
            Problem::LayerContentMissing { chain, cache_id } => {
                write!(f, "layer {chain}: driver layer {cache_id} is missing")
            }
            Problem::CorruptImage { id, reason } => {
                write!(f, "image {id}: corrupt record: {reason}")
            }
            Problem::ImageLayerMissing { id, chain } => {
                write!(f, "image {id}: layer {chain} is missing")
            }
            Problem::CorruptContainer { name, reason } => {
                write!(f, "container {name}: corrupt record: {reason}")
            }
            Problem::ContainerBroken { name, reason } => write!(f, "container {name}: {reason}"),
            Problem::DriverLeftover(p) => {
                write!(f, "leftover of interrupted driver work: {}", p.display())
            }
            Problem::OrphanLayer(id) => {
                write!(f, "orphan driver layer {id} (no record refers to it)")
            }
        }
    }
}

/// The result of a check (after repair, what is left).
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Problems still present.
    pub problems: Vec<Problem>,
    /// Problems repaired (with `--repair`).
    pub repaired: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl LayerStore {
    /// Verifies the store and lists its problems.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn check(&self) -> Result<CheckReport> {
        let mut problems = Vec::new();
        let tmp = self.tmp_dir();
        for n in list_dir(&tmp)? {
            problems.push(Problem::TmpLeftover(tmp.join(n)));
        }
        let mut referenced: BTreeSet<LayerId> = BTreeSet::new();
        for lease in self.leases()? {
            if lease.live {
                referenced.extend(lease.layers);
            } else {
                // Its layers show up as orphans below: repair removes both.
                problems.push(Problem::TmpLeftover(lease.dir));
            }
        }
        let mut good_layers: BTreeSet<ChainId> = BTreeSet::new();
        let mut records = Vec::new();
        let ldb = self.layerdb_dir();
        for n in list_dir(&ldb)? {
            let Ok(chain) = ChainId::from_hex(&n) else {
                problems.push(Problem::StrayEntry(ldb.join(n)));
                continue;
            };
            match self.layer(&chain) {
                Ok(rec) => records.push(rec),
                Err(e) => {
                    // Its cache id, if readable, still counts as referenced: the record
                    // is what gets repaired, not (yet) its content.
                    if let Ok(s) = std::fs::read_to_string(ldb.join(&n).join("cache-id")) {
                        if let Ok(id) = LayerId::new(s.trim()) {
                            referenced.insert(id);
                        }
                    }
                    problems.push(Problem::CorruptLayer {
                        chain,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let all_chains: BTreeSet<ChainId> = records.iter().map(|r| r.chain_id.clone()).collect();
        for rec in &records {
            referenced.insert(rec.cache_id.clone());
            let mut ok = true;
            if let Some(p) = &rec.parent {
                if !all_chains.contains(p) {
                    problems.push(Problem::LayerParentMissing {
                        chain: rec.chain_id.clone(),
                        parent: p.clone(),
                    });
                    ok = false;
                }
            }
            if !self.driver.exists(&rec.cache_id) {
                problems.push(Problem::LayerContentMissing {
                    chain: rec.chain_id.clone(),
                    cache_id: rec.cache_id.clone(),
                });
                ok = false;
            }
            if ok {
                good_layers.insert(rec.chain_id.clone());
            }
        }
        let idir = self.images_dir();
        let mut good_images = BTreeSet::new();
        for n in list_dir(&idir)? {
            let Ok(id) = ImageId::from_hex(&n) else {
                problems.push(Problem::StrayEntry(idir.join(n)));
                continue;
            };
            match self.image(&id) {
                Ok(img) => match img.chain.iter().find(|c| !good_layers.contains(*c)) {
                    Some(c) => problems.push(Problem::ImageLayerMissing {
                        id,
                        chain: c.clone(),
                    }),
                    None => {
                        good_images.insert(id);
                    }
                },
                Err(e) => problems.push(Problem::CorruptImage {
                    id,
                    reason: e.to_string(),
                }),
            }
        }
        let cdir = self.containers_dir();
        for n in list_dir(&cdir)? {
            let Ok(name) = ContainerName::new(&n) else {
                problems.push(Problem::StrayEntry(cdir.join(n)));
                continue;
            };
            match self.container(&name) {
                Ok(c) => {
                    referenced.insert(c.mount_id.clone());
                    referenced.insert(c.init_id.clone());
                    let reason = if !good_images.contains(&c.image) {
                        Some(format!("image {} is missing or broken", c.image))
                    } else if !self.driver.exists(&c.init_id) {
                        Some(format!("init layer {} is missing", c.init_id))
                    } else if !self.driver.exists(&c.mount_id) {
                        Some(format!("read-write layer {} is missing", c.mount_id))
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        problems.push(Problem::ContainerBroken { name, reason });
                    }
                }
                Err(e) => {
                    let dir = cdir.join(&n);
                    for f in ["mount-id", "init-id"] {
                        if let Ok(s) = std::fs::read_to_string(dir.join(f)) {
                            if let Ok(id) = LayerId::new(s.trim()) {
                                referenced.insert(id);
                            }
                        }
                    }
                    problems.push(Problem::CorruptContainer {
                        name,
                        reason: e.to_string(),
                    });
                }
            }
        }
        for path in self.driver.leftovers()? {
            problems.push(Problem::DriverLeftover(path));
        }
        for id in self.driver.layers()? {
            if !referenced.contains(&id) {
                problems.push(Problem::OrphanLayer(id));
            }
        }
        Ok(CheckReport {
            problems,
            repaired: Vec::new(),
        })
    }

    /// Checks and removes what is broken, in rounds, then checks again. Needs the
    /// exclusive lock.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn repair(&self) -> Result<CheckReport> {
        self.require_exclusive("repair")?;
        self.driver.cleanup()?;
        let mut repaired = Vec::new();
        for _ in 0..MAX_REPAIR_ROUNDS {
            let report = self.check()?;
            if report.is_clean() {
                break;
            }
            for p in report.problems {
                match self.fix(&p) {
                    Ok(()) => {
                        tracing::info!(problem = %p, "repaired");
                        repaired.push(p);
                    }
                    Err(e) => tracing::warn!(problem = %p, error = %e, "repair failed"),
                }
            }
        }
        let mut report = self.check()?;
        report.repaired = repaired;
        Ok(report)
    }

    pub(crate) fn fix(&self, p: &Problem) -> Result<()> {
        let tmp = self.tmp_dir();
        match p {
            Problem::TmpLeftover(path) | Problem::StrayEntry(path) => {
                remove_logged(path);
                Ok(())
            }
            Problem::CorruptLayer { chain, .. }
            | Problem::LayerParentMissing { chain, .. }
            | Problem::LayerContentMissing { chain, .. } => {
                remove_entry(&tmp, &self.layerdb_dir().join(chain.hex()))
            }
            Problem::CorruptImage { id, .. } | Problem::ImageLayerMissing { id, .. } => {
                remove_entry(&tmp, &self.images_dir().join(id.hex()))
            }
            Problem::CorruptContainer { name, .. } | Problem::ContainerBroken { name, .. } => {
                remove_entry(&tmp, &self.containers_dir().join(name.as_str()))
            }
            // The driver's own cleanup finishes these; it ran at the start of repair, so
            // one still here is one the driver cannot finish: report it as fixed only if
            // gone now.
            Problem::DriverLeftover(path) => {
                self.driver.cleanup()?;
                if self.driver.leftovers()?.contains(path) {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        reason: "the driver's cleanup did not remove it".into(),
                    });
                }
                Ok(())
            }
            Problem::OrphanLayer(id) => {
                for _ in 0..self.driver.mount_count(id).unwrap_or(0) {
                    self.driver.unmount(id)?;
                }
                self.driver.remove(id).map_err(Into::into)
            }
        }
    }
}
