//! Staging leases: what a running import holds while it works without the store lock,
//! and the record of driver layers any mutating command is about to create or remove.
//!
//! An import applies its layers into fresh driver layers (random cache ids, exactly as
//! a published layer's) WITHOUT the store lock, and takes the exclusive lock only for
//! the short steps that change what others see: creating a driver layer, publishing
//! its layerdb record, registering an image, and rolling back. The driver layer is the
//! staging copy; publishing is writing the layerdb record that names it, so nothing is
//! renamed in the driver's tree (overlay2's `l/` short links, aufs's `layers/` files
//! and every `lower` file stay right by construction), and the staging parent chain is
//! simply the chain of records published so far by this import.
//!
//! While it runs, the import holds a lease, a directory under `<root>/staging/`:
//! ```text
//! <root>/staging/<lease>/lock                flocked exclusive by the importing process
//!                                            for its whole life: the liveness marker
//! <root>/staging/<lease>/layer-<cache id>    a driver layer being filled, unpublished
//! <root>/staging/<lease>/chain-<hex>         a published layer the import builds on or
//!                                            published itself (protected from gc/rmi)
//! <root>/staging/<lease>/spool-*             spooled input (stdin, decompressed archive)
//! ```
//! Rules (all under the store lock, so readers and `gc`/`check` see a consistent set):
//! - the lease is made, and each `layer-` entry is added, before the driver layer is
//!   created; a `chain-` entry is added in the same locked step that publishes or
//!   finds the layer; the lease is removed (under the lock) when the import ends;
//! - a lease whose `lock` can be flocked has no live owner: it is dead. The next
//!   exclusive open removes its unpublished driver layers and the lease
//!   (`LayerStore::finish_dead_leases`); `check` reports it as a leftover and its
//!   layers as orphans;
//! - `gc` and `rmi` keep every chain a live lease names (and its ancestors); `check`
//!   counts a live lease's `layer-` entries as referenced.
//!
//! A flock dies with its process, so a SIGKILLed import is seen dead at once, without
//! pids (which can be reused) or boot ids.
//!
//! Commands that hold the exclusive lock throughout (`create`, `commit`, `rm`, `rmi`,
//! `gc`) take a lease too (`LayerStore::work_lease`) and list in it, before touching
//! the driver, the layers they create or are about to unpublish and remove. So a
//! command killed at any moment leaves at most a dead lease (plus the driver's own
//! `-removing`/`.creating-` entries), which the next exclusive open finishes: it
//! removes every listed layer no layer record or container names.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use driver_core::id::random_hex;
use driver_core::LayerId;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{IoCtx, Result, StoreError};
use crate::ids::ChainId;
use crate::store::LayerStore;
use crate::writeset::{list_dir, remove_logged};

/// Name of the liveness lock file inside a lease directory.
const LOCK_FILE: &str = "lock";
/// Prefix of an entry naming an unpublished driver layer.
const LAYER_PREFIX: &str = "layer-";
/// Prefix of an entry naming a chain the import holds.
const CHAIN_PREFIX: &str = "chain-";

/// A live import's lease (see the module doc). Dropping it releases the flock; the
/// directory is removed by [`LayerStore::end_lease`] under the store lock.
#[derive(Debug)]
pub(crate) struct Lease {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Lease {
    /// Makes a new lease under `staging` and flocks it. Call under the store lock, so
    /// that nobody sees the directory before it is locked.
    pub(crate) fn create(staging: &Path) -> Result<Lease> {
        let dir = staging.join(random_hex(8));
        fs::create_dir(&dir).ctx("create staging lease", &dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&lock_path)
            .ctx("create lease lock", &lock_path)?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            StoreError::io(
                "flock",
                &lock_path,
                std::io::Error::from_raw_os_error(e as i32),
            )
        })?;
        tracing::debug!(lease = %dir.display(), "staging lease taken");
        Ok(Lease { dir, _lock: lock })
    }

    /// The lease directory (for spool files).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn touch(&self, name: String) -> Result<()> {
        let p = self.dir.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx("create lease entry", &p)?;
        Ok(())
    }

    /// Records that driver layer `id` is about to be created (unpublished).
    pub(crate) fn add_layer(&self, id: &LayerId) -> Result<()> {
        self.touch(format!("{LAYER_PREFIX}{id}"))
    }

    /// Drops the record of driver layer `id` (published or removed).
    pub(crate) fn drop_layer(&self, id: &LayerId) {
        remove_logged(&self.dir.join(format!("{LAYER_PREFIX}{id}")));
    }

    /// Records that the import holds `chain`.
    pub(crate) fn add_chain(&self, chain: &ChainId) -> Result<()> {
        self.touch(format!("{CHAIN_PREFIX}{}", chain.hex()))
    }
}

/// What one lease directory holds, as seen by another process.
#[derive(Debug, Clone)]
pub(crate) struct LeaseInfo {
    /// `<root>/staging/<lease>`.
    pub dir: PathBuf,
    /// Whether its owner still runs (its lock is held).
    pub live: bool,
    /// Unpublished driver layers.
    pub layers: Vec<LayerId>,
    /// Chains held.
    pub chains: Vec<ChainId>,
}

/// Whether the lease lock at `dir/lock` is held by a running process. A missing or
/// unopenable lock file counts as dead (a lease is locked in the step that makes it).
fn lease_live(dir: &Path) -> bool {
    let p = dir.join(LOCK_FILE);
    let Ok(f) = File::open(&p) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, Errno::EWOULDBLOCK)) => true,
        Err((_, e)) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot test lease lock; treating the lease as live");
            true
        }
    }
}

/// Every lease under `staging`.
pub(crate) fn scan(staging: &Path) -> Result<Vec<LeaseInfo>> {
    let mut out = Vec::new();
    for name in list_dir(staging)? {
        let dir = staging.join(&name);
        let live = lease_live(&dir);
        let mut layers = Vec::new();
        let mut chains = Vec::new();
        for e in list_dir(&dir)? {
            if let Some(id) = e.strip_prefix(LAYER_PREFIX) {
                if let Ok(id) = LayerId::new(id) {
                    layers.push(id);
                }
            } else if let Some(hex) = e.strip_prefix(CHAIN_PREFIX) {
                if let Ok(c) = ChainId::from_hex(hex) {
                    chains.push(c);
                }
            }
        }
        out.push(LeaseInfo {
            dir,
            live,
            layers,
            chains,
        });
    }
    Ok(out)
}

impl LayerStore {
    /// `<root>/staging`.
    pub(crate) fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// The leases under `staging/`.
    pub(crate) fn leases(&self) -> Result<Vec<LeaseInfo>> {
        scan(&self.staging_dir())
    }

    /// Chains held by live leases, with all their ancestors: what `gc` and `rmi` must
    /// keep. Call under the store lock.
    pub(crate) fn leased_chains(&self) -> Result<BTreeSet<ChainId>> {
        let mut out = BTreeSet::new();
        for l in self.leases()?.into_iter().filter(|l| l.live) {
            for c in &l.chains {
                if out.contains(c) {
                    continue;
                }
                match self.layer_chain(c) {
                    Ok(chain) => out.extend(chain.into_iter().map(|r| r.chain_id)),
                    // Not published (rolled back) or broken: nothing to keep for it.
                    Err(e) => tracing::debug!(chain = %c, error = %e, "leased chain not readable"),
                }
            }
        }
        Ok(out)
    }

    /// Removes the leases of dead imports: their unpublished driver layers (those no
    /// layer record names: a kill between publishing and dropping the entry leaves a
    /// published one listed) and the lease directory. Needs the exclusive lock; run on
    /// every exclusive open. Failures are logged: `check` reports what is left.
    pub(crate) fn finish_dead_leases(&self) -> Result<()> {
        let dead: Vec<LeaseInfo> = self.leases()?.into_iter().filter(|l| !l.live).collect();
        if dead.is_empty() {
            return Ok(());
        }
        let published = (|| -> Result<BTreeSet<LayerId>> {
            let mut s: BTreeSet<LayerId> = self.layers()?.into_iter().map(|r| r.cache_id).collect();
            for c in self.containers()? {
                s.insert(c.mount_id);
                s.insert(c.init_id);
            }
            Ok(s)
        })();
        let published = match published {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the layer and container records; keeping dead leases for check");
                return Ok(());
            }
        };
        for l in dead {
            let mut ok = true;
            for id in l.layers.iter().rev() {
                if published.contains(id) || !self.driver.exists(id) {
                    continue;
                }
                tracing::info!(layer = %id, lease = %l.dir.display(), "removing staging layer of a dead import");
                // A reference its dead owner took (vfs's apply counts one) goes with it:
                // nobody else knows the layer.
                for _ in 0..self.driver.mount_count(id).unwrap_or(0) {
                    if let Err(e) = self.driver.unmount(id) {
                        tracing::warn!(layer = %id, error = %e, "cannot drop a dead owner's mount reference");
                    }
                }
                if let Err(e) = self.driver.remove(id) {
                    tracing::warn!(layer = %id, error = %e, "cannot remove staging layer");
                    ok = false;
                }
            }
            if ok {
                remove_logged(&l.dir);
            }
        }
        Ok(())
    }

    /// A lease for a command holding the exclusive lock (see the module doc).
    pub(crate) fn work_lease(&self, op: &'static str) -> Result<Lease> {
        let _g = self.exclusive(op)?;
        Lease::create(&self.staging_dir())
    }

    /// Ends `lease`: removes its directory under the store lock, then releases it.
    pub(crate) fn end_lease(&self, lease: Lease) {
        match self.exclusive("import") {
            Ok(_g) => remove_logged(&lease.dir),
            Err(e) => {
                tracing::warn!(error = %e, lease = %lease.dir.display(), "cannot lock the store to end the lease; the next start removes it")
            }
        }
        drop(lease);
    }
}
