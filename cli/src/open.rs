//! Driver selection and store opening.
//!
//! The driver is: `--driver` / config `driver` if given (an error, exit 6, when the root
//! records another one), else the driver the root records, else the registry's best
//! (overlay2 when its probe passes, else vfs).

use anyhow::Context;
use driver_core::Registry;
use layerstore::{LayerStore, LockMode, StoreError};

use crate::config::Settings;

/// Every driver compiled in.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(driver_vfs::entry());
    r.register(driver_overlay2::entry());
    r.register(aufs_entry());
    r
}

/// The hidden first argument under which `layerctl` runs the userspace aufs server
/// (`layerctl __aufs-server serve --mountpoint ...`), so the mount outlives the
/// command that made it without a second binary to install.
pub const AUFS_SERVER_ARG: &str = "__aufs-server";

/// driver-aufs's entry, with this very executable as the userspace server (unless
/// `[driver_options.aufs] server` names another).
fn aufs_entry() -> driver_core::DriverEntry {
    driver_core::DriverEntry {
        factory: |home, opts| {
            let server =
                std::env::current_exe()
                    .ok()
                    .map(|program| driver_aufs::options::ServerCommand {
                        program,
                        args: vec![AUFS_SERVER_ARG.into()],
                    });
            Ok(Box::new(driver_aufs::AufsDriver::with_server(
                home, opts, server,
            )?))
        },
        ..driver_aufs::entry()
    }
}

/// The driver name to use for `cfg.root`.
pub fn pick_driver(cfg: &Settings, reg: &Registry) -> anyhow::Result<String> {
    let recorded = LayerStore::recorded_driver(&cfg.root)?;
    match (&cfg.driver, recorded) {
        (Some(want), Some(rec)) if *want != rec => Err(StoreError::DriverMismatch {
            root: cfg.root.clone(),
            recorded: rec,
            requested: want.clone(),
        }
        .into()),
        (Some(want), _) => {
            reg.get(want)?;
            Ok(want.clone())
        }
        (None, Some(rec)) => Ok(rec),
        (None, None) => {
            LayerStore::check_unrecorded_root(&cfg.root, &reg.names())?;
            std::fs::create_dir_all(&cfg.root)
                .with_context(|| format!("create root {}", cfg.root.display()))?;
            Ok(reg.best(&cfg.root)?.name.to_owned())
        }
    }
}

/// Opens the store with the lock `mode`.
pub fn open_store(cfg: &Settings, mode: LockMode) -> anyhow::Result<LayerStore> {
    let reg = registry();
    let name = pick_driver(cfg, &reg)?;
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("create root {}", cfg.root.display()))?;
    // The root as the kernel names it (absolute, no symlinks): drivers find their
    // mounts in /proc/self/mountinfo by path, and `mount`/`ps` print paths that must
    // hold from any working directory. A relative `--root` or one through a symlink
    // (`/var/lib/layerctl -> /data/layerctl`) made the userspace aufs mount fail.
    let root = std::fs::canonicalize(&cfg.root)
        .with_context(|| format!("resolve root {}", cfg.root.display()))?;
    let driver = reg.open(&name, &root, &cfg.options_for(&name))?;
    Ok(LayerStore::open(&root, driver, mode)?.with_sync(cfg.sync))
}

/// Opens the store for `check --repair`: exclusive, without finishing interrupted work
/// on open, so the repair lists what it removes.
pub fn open_store_for_repair(cfg: &Settings) -> anyhow::Result<LayerStore> {
    let reg = registry();
    let name = pick_driver(cfg, &reg)?;
    // As `open_store`: with `--driver` a missing root was not made (only the pick of
    // the best driver made it), so `check --repair --driver vfs` of a new root failed
    // with "resolve root: No such file or directory" where plain `check` passed.
    std::fs::create_dir_all(&cfg.root)
        .with_context(|| format!("create root {}", cfg.root.display()))?;
    let root = std::fs::canonicalize(&cfg.root)
        .with_context(|| format!("resolve root {}", cfg.root.display()))?;
    let driver = reg.open(&name, &root, &cfg.options_for(&name))?;
    Ok(LayerStore::open_for_repair(&root, driver)?.with_sync(cfg.sync))
}
