//! Test helpers: a driver in a temp dir whose guard unmounts everything below it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use driver_core::{CreateOpts, Driver, DriverOptions, LayerId};
use driver_overlay2::Overlay2Driver;

/// Whether privileged tests can run; panics when they must (`LAYERCTL_REQUIRE_PRIVILEGED=1`).
pub fn can_mount() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        if driver_core::privileged_required() {
            panic!("LAYERCTL_REQUIRE_PRIVILEGED=1 but not running as root");
        }
        eprintln!("skipping: overlay2 tests need root");
    }
    root
}

/// A temp root; on drop unmounts every mount below it (deepest first), then deletes it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let base = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).unwrap();
        Env {
            dir: tempfile::Builder::new()
                .prefix("ov2-test-")
                .tempdir_in(base)
                .unwrap(),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("overlay2")
    }

    pub fn driver(&self) -> Overlay2Driver {
        self.driver_with(&DriverOptions::new())
    }

    pub fn driver_with(&self, opts: &DriverOptions) -> Overlay2Driver {
        Overlay2Driver::new(&self.home(), opts).expect("open overlay2 driver")
    }

    /// Mount points below this env, from the kernel's table.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_below(self.dir.path())
    }
}

pub fn mounts_below(p: &Path) -> Vec<PathBuf> {
    driver_core::mountinfo::read()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(p))
        .collect()
}

impl Drop for Env {
    fn drop(&mut self) {
        let mut ms = self.mounts();
        ms.reverse();
        for m in ms {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("guard: umount {}: {e}", m.display());
            }
        }
    }
}

pub fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// Creates a read-only layer on `parent` and writes `files` into its diff.
pub fn ro_layer(
    d: &Overlay2Driver,
    name: &str,
    parent: Option<&LayerId>,
    files: &[(&str, &str)],
) -> LayerId {
    let l = id(name);
    d.create(&l, parent, &CreateOpts::default()).unwrap();
    let dir = d.layer_dir(&l).unwrap();
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    l
}
