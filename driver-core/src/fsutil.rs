//! Small filesystem helpers shared by drivers and the layer store: atomic metadata
//! writes, directory fsync, the `/proc/self/fd` path of an entry of an open
//! directory, and the one file-content copy that keeps holes ([`copy_file_data`]).

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

/// Largest single `copy_file_range` request (the kernel caps one call near 2 GiB).
const COPY_CHUNK: u64 = 1 << 30;

/// Copies the first `size` bytes of `from` into `to` (an empty file), keeping holes:
/// only the data segments `SEEK_DATA`/`SEEK_HOLE` report are copied (in-kernel
/// `copy_file_range`, else `pread`/`pwrite`), and `to` is then sized to `size` (its tail
/// hole made by `ftruncate`). A sparse 1 GiB file holding 4 KiB of data thus costs
/// 4 KiB, as with the kernel's own copies (overlayfs copy-up, `cp --sparse=auto`); on
/// a filesystem without `SEEK_DATA` the whole file is one data segment.
///
/// Used by every copy of a file's content: copy-up ([`crate::copyup::copy_up_at`])
/// and vfs's layer copies.
///
/// Errors: the failing call's `io::Error` (the caller names the path).
pub fn copy_file_data(from: &File, to: &File, size: u64) -> std::io::Result<()> {
    use rustix::fs::{seek, SeekFrom};
    let mut off = 0u64;
    while off < size {
        let data = match seek(from, SeekFrom::Data(off)) {
            Ok(d) => d,
            // Only a hole is left after `off`.
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA here: all of it is data.
            Err(rustix::io::Errno::INVAL) if off == 0 => 0,
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match seek(from, SeekFrom::Hole(data)) {
            Ok(h) => h.min(size),
            Err(rustix::io::Errno::INVAL) => size,
            Err(e) => return Err(e.into()),
        };
        copy_range(from, to, data, hole - data)?;
        off = hole;
    }
    to.set_len(size)
}

/// [`copy_file_data`] for a file known to have no holes (its allocated blocks cover its
/// size): one `copy_file_range` for the whole file, without the `SEEK_DATA`/`SEEK_HOLE`
/// probes and the final `ftruncate` (made only when the source shrank meanwhile). An
/// empty file costs no call at all. Used by copy-up, where most files are small and
/// dense and each saved call shows in a `chmod -R` of lower files.
///
/// Errors: the failing call's `io::Error` (the caller names the path).
pub fn copy_dense_file_data(from: &File, to: &File, size: u64) -> std::io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    if copy_range(from, to, 0, size)? < size {
        to.set_len(size)?;
    }
    Ok(())
}

/// Copies `len` bytes at offset `off` of `from` to the same offset of `to`. Returns the
/// offset reached: `off + len`, or less when `from` ended earlier (it shrank).
fn copy_range(from: &File, to: &File, off: u64, len: u64) -> std::io::Result<u64> {
    use rustix::io::Errno;
    use std::os::unix::fs::FileExt;
    let (mut at_in, mut at_out) = (off, off);
    let end = off + len;
    while at_in < end {
        let want = (end - at_in).min(COPY_CHUNK) as usize;
        match rustix::fs::copy_file_range(from, Some(&mut at_in), to, Some(&mut at_out), want) {
            Ok(0) => return Ok(at_in), // the file shrank; copy what there was
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Where copy_file_range is refused: read and write.
    let mut buf = vec![0u8; (end - at_in).min(1 << 20) as usize];
    while at_in < end {
        let want = (end - at_in).min(buf.len() as u64) as usize;
        let n = match from.read_at(&mut buf[..want], at_in) {
            Ok(0) => return Ok(at_in),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all_at(&buf[..n], at_in)?;
        at_in += n as u64;
    }
    Ok(at_in)
}

/// Name of the filesystem holding `path`, from its `statfs` magic (linux/magic.h):
/// "ext4" (ext2/3/4 share a magic), "xfs", "btrfs", "tmpfs", "overlayfs", "zfs", "f2fs",
/// "nfs", "ecryptfs", "fuse", "reiserfs", else "unknown (0xMAGIC)"; "unknown (ERROR)"
/// when `statfs` fails. What `info`, driver status, overlay2's probe and `bench` print.
pub fn filesystem_name(path: &Path) -> String {
    match nix::sys::statfs::statfs(path) {
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => fs_magic_name(st.filesystem_type().0 as i64),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Name of a filesystem from its `statfs` magic; see [`filesystem_name`].
pub fn fs_magic_name(magic: i64) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x6969 => "nfs".into(),
        0xF15F => "ecryptfs".into(),
        0x6573_5546 => "fuse".into(),
        0x5265_4973 => "reiserfs".into(),
        other => format!("unknown (0x{other:x})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn filesystem_names() {
        assert_eq!(super::fs_magic_name(0xEF53), "ext4");
        assert_eq!(super::fs_magic_name(0x1234), "unknown (0x1234)");
        assert!(
            super::filesystem_name(std::path::Path::new("/nonexistent/x")).starts_with("unknown (")
        );
    }

    use super::*;

    #[test]
    fn copy_file_data_keeps_holes_and_bytes() {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::{FileExt, MetadataExt};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let f = File::create(&src).unwrap();
        // data at 0, a 64 MiB hole, data in the middle, a tail hole: 256 MiB in all.
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[7u8; 10000], 64 << 20).unwrap();
        f.set_len(256 << 20).unwrap();
        drop(f);
        let dense = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
        let from = File::open(&src).unwrap();
        let dst = d.path().join("dst");
        let to = File::create(&dst).unwrap();
        copy_file_data(&from, &to, 256 << 20).unwrap();
        drop(to);
        assert_eq!(fs::metadata(&dst).unwrap().len(), 256 << 20);
        assert!(
            dense(&dst) <= dense(&src) + (1 << 20),
            "holes kept: {} bytes on disk for {} in the source",
            dense(&dst),
            dense(&src)
        );
        let (a, b) = (fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        assert!(a == b, "same bytes");
        // A dense file and an empty one copy too.
        let mut dense_src = File::create(d.path().join("dense")).unwrap();
        std::io::Write::write_all(&mut dense_src, &[1u8; 300_000]).unwrap();
        dense_src.seek(SeekFrom::Start(0)).unwrap();
        let to = File::create(d.path().join("dense2")).unwrap();
        copy_file_data(&File::open(d.path().join("dense")).unwrap(), &to, 300_000).unwrap();
        assert_eq!(
            fs::read(d.path().join("dense2")).unwrap(),
            vec![1u8; 300_000]
        );
        let to = File::create(d.path().join("empty2")).unwrap();
        copy_file_data(&File::open(d.path().join("dense")).unwrap(), &to, 0).unwrap();
        assert_eq!(fs::metadata(d.path().join("empty2")).unwrap().len(), 0);
    }

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
