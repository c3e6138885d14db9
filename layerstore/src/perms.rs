//! Permissions of the store: the root and the driver's home are `0700`, as Docker makes
//! `/var/lib/docker` and its drivers' directories private (moby `daemon.go`, `setupDaemonRoot`;
//! Docker uses 0710 only for user-namespace remapping, which layerctl does not do).
//! Layer content keeps the modes its tar gave (setuid binaries, world-writable `/tmp`),
//! so other host users must not reach it at all: a setuid root binary inside a layer
//! would otherwise be a way to root for any local user, and a world-writable layer
//! directory a way to plant files in images.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{IoCtx, Result};

/// Mode of the store root and the driver's home.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Makes `dir` `0700` unless it already is (no write on every command).
pub(crate) fn make_private(dir: &Path) -> Result<()> {
    let m = fs::metadata(dir).ctx("stat", dir)?;
    if m.permissions().mode() & 0o7777 != PRIVATE_DIR_MODE {
        tracing::debug!(dir = %dir.display(), mode = format!("{:o}", m.permissions().mode() & 0o7777), "making private (0700)");
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .ctx("chmod 0700", dir)?;
    }
    Ok(())
}
