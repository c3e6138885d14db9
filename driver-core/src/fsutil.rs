//! Small filesystem helpers shared by drivers and the layer store: atomic metadata
//! writes, directory fsync, and the `/proc/self/fd` path of an entry of an open
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync the
/// directory. A crash leaves either the old content or the new, never a mix; a leftover
/// temp file is named `.<name>.tmp-<rand>` and is ignored (and removed by cleanup).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// [`write_atomic`] with an explicit file mode.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", crate::id::random_hex(6)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .ctx("create temp file", &tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("rename into place", path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        if let Err(e) = fs::remove_file(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %e, "removing temp file after failed write");
            }
        }
    }
    result
}

/// fsyncs a directory so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .ctx("open directory", dir)?
        .sync_all()
        .ctx("fsync directory", dir)
}

/// Reads a small metadata file as a trimmed string.
pub fn read_trimmed(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .ctx("read", path)?
        .trim()
        .to_owned())
}

/// `/proc/self/fd/<dir>` or `/proc/self/fd/<dir>/<name>`: a path for the calls that
/// have no `*at` form (the xattr calls). The directory is the already-open `dir` (any
/// fd, `O_PATH` included); the `l*` calls on it do not follow a final `name`.
pub(crate) fn fd_path(dir: std::os::fd::BorrowedFd<'_>, name: Option<&[u8]>) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut p = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if let Some(name) = name {
        p.push(std::ffi::OsStr::from_bytes(name));
    }
    p
}

/// Whether process `pid` exists (`/proc/<pid>` is there; pid 0 never is): the owner of
/// a served mount, of a half-created layer, of a probe's temp mount.
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new("/proc").join(pid.to_string()).exists()
}

/// Creates the directory `p` (its parent must exist) with exactly `mode`, whatever the
/// process umask.
///
/// Errors: [`crate::DriverError::Io`] naming `p` (`EEXIST` when it exists).
pub fn mkdir_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .ctx("create directory", p)?;
    // The umask may have cut the mode.
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).ctx("chmod", p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("meta");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("meta")]);
    }
}
