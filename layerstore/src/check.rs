//! `check` and `check --repair`: metadata against the driver's layers, and leftovers of
//! interrupted work.
//!
//! Found problems:
//! - leftovers in `tmp/` (an interrupted import or removal; an entry whose owner still
//!   holds its flock is work in progress, not a leftover: [`crate::owner`]) and staging
//!   leases of dead commands in `staging/` ([`crate::staging`]; a live lease is not a
//!   problem and its unpublished layers are not orphans);
//! - unexpected entries in `layerdb/`, `images/`, `containers/` (not a valid id or name);
//! - layer records that are unreadable, whose parent record is missing, or whose driver
//!   layer (cache id) is missing;
//! - images whose config is unreadable or whose layers are missing;
//! - image names (the `names` file) that are not valid names, and a name two or more
//!   images claim (it would resolve to whichever is listed first);
//! - containers whose record is unreadable or whose image, init or rw layer is missing;
//! - orphan driver layers: layers of the driver no record refers to (a crash between
//!   apply and publish, or between removing metadata and removing the layer), unless
//!   their owner still holds an flock on the layer's directory (staging in progress);
//! - half-removed or half-created driver layers (`-removing`, `.creating-`), dead FUSE
//!   mounts, unused internal mounts, broken overlay2 short links (`l/`): what the driver
//!   lists as [`driver_core::Driver::leftovers`], which its `repair()` finishes;
//! - stale mounts below the root: dead FUSE servers, mounts whose container is gone,
//!   mounts no reference counts ([`crate::stale_mounts`]).
//!
//! Repair removes what is broken, in rounds until nothing is left (removing a broken
//! layer record makes its images broken, then their layers orphans...). It never
//! removes a layer that a good image or container needs: only records that are
//! themselves broken, what depends on them, and what nothing refers to. The CLI opens
//! the store for repair without the startup cleanup ([`LayerStore::open_for_repair`]),
//! so everything removed is listed.
//!
//! Outcome ([`CheckStatus`], the exit code of `layerctl check`): clean (nothing found),
//! repaired (problems found and all fixed), damaged (problems remain).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use driver_core::LayerId;

use crate::error::{Result, StoreError};
use crate::ids::{canonical_image_name, validate_image_name, ChainId, ContainerName, ImageId};
use crate::store::LayerStore;
use crate::writeset::{list_dir, remove_entry, remove_logged};

/// Rounds of repair before giving up. Each round can only uncover problems one level
/// up (a removed layer record makes its child's record broken in the next round, then
/// that child's driver layer an orphan...), so a chain of n layers broken at the bottom
/// needs about 2n rounds; repair stops earlier when a round fixes nothing. The bound
/// only guards against a fix that keeps coming back.
const MAX_REPAIR_ROUNDS: usize = 100_000;

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
    /// A line of an image's `names` file that is not a valid image name
    /// ([`crate::ids::validate_image_name`]); repair drops the line, the image stays.
    BadImageName {
        id: ImageId,
        name: String,
        reason: String,
    },
    /// One name (as names compare, [`crate::ids::same_image_name`]) on two or more
    /// images: `create NAME` would pick one silently. Repair takes it from all of them
    /// (no image is the right owner by any record; `tag` it again); the images stay.
    DuplicateImageName { name: String, images: Vec<ImageId> },
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
    /// One of the driver's leftovers that is a mount whose filesystem server is gone
    /// (`statfs` answers `ENOTCONN`: a killed userspace aufs server); repaired as a
    /// [`Problem::DriverLeftover`] (the driver's cleanup detaches it).
    DeadMount(PathBuf),
    /// A mount below the root that no live container accounts for.
    StaleMount { path: PathBuf, reason: String },
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
            Problem::BadImageName { id, name, reason } => {
                write!(f, "image {id}: invalid name {name:?}: {reason}")
            }
            Problem::DuplicateImageName { name, images } => {
                let ids: Vec<String> = images.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "image name {name} is claimed by {} images: {}",
                    images.len(),
                    ids.join(", ")
                )
            }
            Problem::CorruptContainer { name, reason } => {
                write!(f, "container {name}: corrupt record: {reason}")
            }
            Problem::ContainerBroken { name, reason } => write!(f, "container {name}: {reason}"),
            Problem::DriverLeftover(p) => {
                write!(f, "leftover of interrupted driver work: {}", p.display())
            }
            Problem::DeadMount(p) => write!(
                f,
                "dead mount (its filesystem server is gone): {}",
                p.display()
            ),
            Problem::OrphanLayer(id) => {
                write!(f, "orphan driver layer {id} (no record refers to it)")
            }
            Problem::StaleMount { path, reason } => {
                write!(f, "stale mount {}: {reason}", path.display())
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

/// What a check (or repair) concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Nothing was wrong.
    Clean,
    /// Problems were found and all of them repaired: the store is consistent now.
    Repaired,
    /// Problems remain.
    Damaged,
}

impl CheckReport {
    /// True when nothing is wrong (any more).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Clean, repaired or damaged.
    pub fn status(&self) -> CheckStatus {
        match (self.problems.is_empty(), self.repaired.is_empty()) {
            (false, _) => CheckStatus::Damaged,
            (true, true) => CheckStatus::Clean,
            (true, false) => CheckStatus::Repaired,
        }
    }
}

impl LayerStore {
    /// Verifies the store and lists its problems.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn check(&self) -> Result<CheckReport> {
        let mut problems = Vec::new();
        let tmp = self.tmp_dir();
        for n in list_dir(&tmp)? {
            let p = tmp.join(n);
            if crate::owner::owner_alive(&p) {
                tracing::debug!(path = %p.display(), "work in progress (its owner holds the lock)");
                continue;
            }
            problems.push(Problem::TmpLeftover(p));
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
        // Canonical name -> the images whose `names` list it, in id order.
        let mut claimed: BTreeMap<String, Vec<ImageId>> = BTreeMap::new();
        for n in list_dir(&idir)? {
            let Ok(id) = ImageId::from_hex(&n) else {
                problems.push(Problem::StrayEntry(idir.join(n)));
                continue;
            };
            let img = match self.image(&id) {
                Ok(img) => img,
                Err(e) => {
                    problems.push(Problem::CorruptImage {
                        id,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            for name in &img.names {
                match validate_image_name(name) {
                    Ok(()) => {
                        let owners = claimed
                            .entry(canonical_image_name(name).into_owned())
                            .or_default();
                        if !owners.contains(&id) {
                            owners.push(id.clone());
                        }
                    }
                    Err(e) => problems.push(Problem::BadImageName {
                        id: id.clone(),
                        name: name.clone(),
                        reason: match e {
                            StoreError::InvalidId { reason, .. } => reason.to_owned(),
                            e => e.to_string(),
                        },
                    }),
                }
            }
            match img.chain.iter().find(|c| !good_layers.contains(*c)) {
                Some(c) => problems.push(Problem::ImageLayerMissing {
                    id,
                    chain: c.clone(),
                }),
                None => {
                    good_images.insert(id);
                }
            }
        }
        for (name, images) in claimed {
            if images.len() > 1 {
                problems.push(Problem::DuplicateImageName { name, images });
            }
        }
        let mut container_layers: BTreeSet<LayerId> = BTreeSet::new();
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
                    container_layers.insert(c.mount_id.clone());
                    container_layers.insert(c.init_id.clone());
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
        let leftovers = self.driver.leftovers()?;
        let driver_layers: BTreeSet<LayerId> = self.driver.layers()?.into_iter().collect();
        let counted = |id: &LayerId| self.driver.mount_count(id).unwrap_or(0) > 0;
        for path in crate::stale_mounts::mounts_below(&self.root)? {
            if leftovers.iter().any(|l| path.starts_with(l)) {
                continue;
            }
            if let Some(reason) = crate::stale_mounts::stale_reason(
                &path,
                &self.root,
                &referenced,
                &driver_layers,
                &container_layers,
                &counted,
            ) {
                problems.push(Problem::StaleMount { path, reason });
            }
        }
        for path in leftovers {
            if is_dead_mount(&path) {
                problems.push(Problem::DeadMount(path));
            } else {
                problems.push(Problem::DriverLeftover(path));
            }
        }
        for id in driver_layers {
            if !referenced.contains(&id) {
                // A layer being staged outside the store lock: its owner holds an flock
                // on the layer's directory ([`crate::owner`]) until it publishes.
                if let Ok(dir) = self.driver.layer_dir(&id) {
                    if crate::owner::owner_alive(&dir) {
                        tracing::debug!(layer = %id, "unpublished layer in progress (its owner holds the lock)");
                        continue;
                    }
                }
                problems.push(Problem::OrphanLayer(id));
            }
        }
        Ok(CheckReport {
            problems,
            repaired: Vec::new(),
        })
    }

    /// Checks and removes what is broken, in rounds, then checks again; `repaired` lists
    /// every problem fixed (what was removed). Needs the exclusive lock; open the store
    /// with [`LayerStore::open_for_repair`] so leftovers are listed, not silently
    /// finished by the open.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn repair(&self) -> Result<CheckReport> {
        self.require_exclusive("repair")?;
        let mut repaired = Vec::new();
        for round in 0..MAX_REPAIR_ROUNDS {
            let report = self.check()?;
            if report.is_clean() {
                break;
            }
            if round == 0 {
                // What the open would have finished silently, listed above; finish it
                // now (the driver's thorough pass), then fix the rest one by one.
                self.empty_tmp_dead()?;
                self.driver.repair()?;
            }
            let fixed_before = repaired.len();
            for p in report.problems {
                match self.fix(&p) {
                    Ok(()) => {
                        tracing::info!(problem = %p, "repaired");
                        repaired.push(p);
                    }
                    // A later round may fix it (once what it depends on is gone); what
                    // stays broken is reported by the final check.
                    Err(e) => tracing::debug!(problem = %p, error = %e, "not repaired (yet)"),
                }
            }
            if repaired.len() == fixed_before {
                break; // no progress: what is left cannot be fixed
            }
        }
        // What every exclusive open does (stale mount counts...), which the repair open
        // skipped.
        self.driver.cleanup()?;
        let mut report = self.check()?;
        report.repaired = repaired;
        Ok(report)
    }

    pub(crate) fn fix(&self, p: &Problem) -> Result<()> {
        let tmp = self.tmp_dir();
        match p {
            Problem::TmpLeftover(path) | Problem::StrayEntry(path) => {
                remove_logged(path);
                if std::fs::symlink_metadata(path).is_ok() {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        reason: "could not be removed".into(),
                    });
                }
                Ok(())
            }
            Problem::StaleMount { path, .. } => {
                if let Err(e) = crate::stale_mounts::detach(path) {
                    if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                        return Err(StoreError::io(
                            "detach stale mount",
                            path,
                            std::io::Error::from_raw_os_error(e as i32),
                        ));
                    }
                }
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
            Problem::BadImageName { id, name, .. } => {
                let img = self.image(id)?;
                let kept: Vec<String> = img.names.into_iter().filter(|n| n != name).collect();
                self.write_names(id, &kept)
            }
            Problem::DuplicateImageName { name, images } => {
                for id in images {
                    let img = self.image(id)?;
                    let kept: Vec<String> = img
                        .names
                        .into_iter()
                        .filter(|n| canonical_image_name(n) != name.as_str())
                        .collect();
                    self.write_names(id, &kept)?;
                }
                Ok(())
            }
            Problem::CorruptContainer { name, .. } | Problem::ContainerBroken { name, .. } => {
                remove_entry(&tmp, &self.containers_dir().join(name.as_str()))
            }
            // The driver's own cleanup finishes these; it ran at the start of repair, so
            // one still here is one the driver cannot finish: report it as fixed only if
            // gone now.
            Problem::DriverLeftover(path) | Problem::DeadMount(path) => {
                self.driver.repair()?;
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
                // A mount the counts do not know of (counts lost) would make the
                // removal fail as busy: detach what is still mounted in the layer.
                for m in crate::stale_mounts::mounts_below(&self.root)? {
                    if m.components().any(|c| c.as_os_str() == id.as_str()) {
                        tracing::warn!(mount = %m.display(), layer = %id, "detaching an uncounted mount of an orphan layer");
                        let _ = crate::stale_mounts::detach(&m);
                    }
                }
                self.driver.remove(id).map_err(Into::into)
            }
        }
    }
}

/// Whether `path` is a mount point whose filesystem no longer answers (statx of the
/// path says so, or `statfs`, which always reaches a FUSE server, fails with
/// `ENOTCONN`/`ECONNABORTED`). Asked of the path, not of the whole mount table.
fn is_dead_mount(path: &Path) -> bool {
    use driver_core::mountinfo::{mount_root_state, MountRootState};
    match mount_root_state(path) {
        Ok(MountRootState::Disconnected) => return true,
        Ok(MountRootState::Mounted) => {}
        Ok(MountRootState::NotMounted) | Err(_) => return false,
    }
    matches!(
        nix::sys::statfs::statfs(path),
        Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)
    )
}
