//! Whether the process that made a staging or `-removing` entry is still at work on it.
//!
//! Convention (for every writer that stages outside the store lock): the owner holds an
//! `flock` (shared or exclusive) on the entry itself, a directory or file, from creating
//! it until it is published or removed: an entry of `<root>/tmp/`, or the directory of
//! a driver layer not yet published ([`driver_core::Driver::layer_dir`]). The kernel drops the lock when the owner dies,
//! however it dies (SIGKILL included), and a reused pid cannot fake it. `check` reports
//! an entry (or an orphan layer) only when nobody holds its lock, and `--repair` removes
//! only such entries.

use std::fs::File;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// True while some process holds an flock on `path`. A path that cannot be opened
/// (gone already) has no live owner.
pub fn owner_alive(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        // Taken: nobody else held it (dropping the guard unlocks).
        Ok(_guard) => false,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
        Err((_, e)) => {
            tracing::debug!(path = %path.display(), error = %e, "flock probe failed; taking the owner as dead");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lock_means_alive() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("x-staging");
        std::fs::create_dir(&d).unwrap();
        assert!(!owner_alive(&d));
        let held = Flock::lock(File::open(&d).unwrap(), FlockArg::LockShared).unwrap();
        assert!(owner_alive(&d));
        drop(held);
        assert!(!owner_alive(&d));
        assert!(!owner_alive(&t.path().join("missing")));
    }
}
