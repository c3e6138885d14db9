//! Full-fidelity tree copy: what makes a vfs child layer.
//!
//! Keeps hard-link groups of every file type, owners, modes (setuid/setgid/sticky: chown before chmod), xattrs
//! (including `security.capability`, written after chown, which clears it), devices,
//! fifos, symlinks and timestamps (directories last, deepest first, so creating their
//! children does not bump them again).
//!
//! Regular files are copied by `FICLONE` where the filesystem can share extents (btrfs,
//! xfs), else `copy_file_range` (in-kernel copy) of the data segments only (holes of
//! sparse files stay holes), else read/write; by 2-4 worker threads.
//! The walk itself (mkdir, symlinks, special files) is sequential and comes first.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use driver_core::{DriverError, IoContext, Result};
use nix::fcntl::AtFlags;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{
    fchmod, fchmodat, mknod, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};
use xattr::FileExt;

/// Worker threads for regular files: enough to overlap I/O latency, few enough not to
/// thrash a small machine.
const MIN_WORKERS: usize = 2;
const MAX_WORKERS: usize = 4;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries created (including hard links).
    pub entries: u64,
    /// Bytes of regular-file content copied.
    pub bytes: u64,
    /// Files cloned by FICLONE (shared extents).
    pub reflinked: u64,
}

struct FileJob {
    rel: PathBuf,
    md: Metadata,
}

/// How data gets copied; shared by workers, downgraded on the first refusal.
#[derive(Debug)]
struct Methods {
    reflink: AtomicBool,
    reflinked: AtomicUsize,
}

/// Copies the tree `src` to `dst`, which must not exist. On error `dst` is left partly
/// written; the caller removes it.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let me = (Uid::effective().as_raw(), Gid::effective().as_raw());
    let mut dirs: Vec<(PathBuf, Metadata)> = Vec::new();
    let mut files: Vec<FileJob> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stats = CopyStats::default();

    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| src.to_path_buf());
            DriverError::io("walk", path, e.into())
        })?;
        let rel = entry
            .path()
            .strip_prefix(src)
            .expect("walkdir yields paths below its root")
            .to_path_buf();
        let md = entry
            .metadata()
            .map_err(|e| DriverError::io("stat", entry.path(), e.into()))?;
        let to = dst.join(&rel);
        let ft = md.file_type();
        stats.entries += 1;
        // Hard-link groups of every non-directory type (regular files, symlinks,
        // devices, fifos, sockets): the first path of an inode is copied, the others
        // are linked to it once the copies exist (linkat does not follow symlinks).
        if !ft.is_dir() && md.nlink() > 1 {
            if let Some(first) = first_link.get(&(md.dev(), md.ino())) {
                links.push((first.clone(), rel));
                continue;
            }
            first_link.insert((md.dev(), md.ino()), rel.clone());
        }
        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .ctx("create directory", &to)?;
            dirs.push((rel, md));
        } else if ft.is_file() {
            stats.bytes += md.size();
            files.push(FileJob { rel, md });
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path()).ctx("read link", entry.path())?;
            std::os::unix::fs::symlink(&target, &to).ctx("create symlink", &to)?;
            set_path_meta(entry.path(), &to, &md, me, true)?;
        } else {
            let kind = driver_core::copyup::node_kind(&ft).unwrap_or(SFlag::S_IFSOCK);
            mknod(&to, kind, Mode::from_bits_truncate(0o600), md.rdev()).ctx("mknod", &to)?;
            set_path_meta(entry.path(), &to, &md, me, false)?;
        }
    }

    let methods = Methods {
        reflink: AtomicBool::new(true),
        reflinked: AtomicUsize::new(0),
    };
    copy_files_parallel(src, dst, &files, &methods, me)?;
    stats.reflinked = methods.reflinked.load(Ordering::Relaxed) as u64;

    for (first, rel) in &links {
        let to = dst.join(rel);
        fs::hard_link(dst.join(first), &to).ctx("create hard link", &to)?;
    }
    // Children before parents: walk order reversed.
    for (rel, md) in dirs.iter().rev() {
        set_path_meta(&src.join(rel), &dst.join(rel), md, me, false)?;
    }
    tracing::debug!(src = %src.display(), dst = %dst.display(), ?stats, "copied tree");
    Ok(stats)
}

fn copy_files_parallel(
    src: &Path,
    dst: &Path,
    files: &[FileJob],
    methods: &Methods,
    me: (u32, u32),
) -> Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(MIN_WORKERS, |n| n.get())
        .clamp(MIN_WORKERS, MAX_WORKERS)
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<DriverError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = files.get(i) else { break };
                    if let Err(e) = copy_file(
                        &src.join(&job.rel),
                        &dst.join(&job.rel),
                        &job.md,
                        methods,
                        me,
                    ) {
                        failed.store(true, Ordering::Relaxed);
                        first_err
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        break;
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn copy_file(
    src: &Path,
    dst: &Path,
    md: &Metadata,
    methods: &Methods,
    me: (u32, u32),
) -> Result<()> {
    tracing::trace!(src = %src.display(), "copy file");
    let from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .ctx("open", src)?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .ctx("create", dst)?;
    copy_data(&from, &to, md.size(), methods).ctx("copy data", dst)?;
    // Owner first: chown clears setuid/setgid and security.capability.
    if (md.uid(), md.gid()) != me {
        fchown(
            &to,
            Some(Uid::from_raw(md.uid())),
            Some(Gid::from_raw(md.gid())),
        )
        .ctx("chown", dst)?;
    }
    fchmod(&to, Mode::from_bits_truncate(md.mode() & 0o7777)).ctx("chmod", dst)?;
    for name in from.list_xattr().ctx("list xattrs", src)? {
        if let Some(v) = from.get_xattr(&name).ctx("get xattr", src)? {
            to.set_xattr(&name, &v).ctx("set xattr", dst)?;
        }
    }
    nix::sys::stat::futimens(&to, &atime(md), &mtime(md)).ctx("set times", dst)
}

/// FICLONE (its refusal is remembered), else driver-core's hole-keeping copy
/// (`copy_file_range` of the data segments, else read/write).
fn copy_data(from: &File, to: &File, size: u64, methods: &Methods) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    if methods.reflink.load(Ordering::Relaxed) {
        match ficlone(from, to) {
            Ok(()) => {
                methods.reflinked.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "FICLONE refused; copying data segments");
                methods.reflink.store(false, Ordering::Relaxed);
            }
        }
    }
    // Data segments only, so a sparse file stays sparse in every layer copy.
    driver_core::fsutil::copy_file_data(from, to, size)
}

/// Shares `from`'s extents with `to` (btrfs, xfs with reflink, bcachefs).
#[allow(unsafe_code)]
fn ficlone(from: &File, to: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open
    // for the duration of the call and no memory is passed.
    let r = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn atime(md: &Metadata) -> TimeSpec {
    TimeSpec::new(md.atime(), md.atime_nsec())
}

fn mtime(md: &Metadata) -> TimeSpec {
    TimeSpec::new(md.mtime(), md.mtime_nsec())
}

/// Owner, mode, xattrs and times of a non-regular entry, by path, not following a
/// symlink at `dst`.
fn set_path_meta(
    src: &Path,
    dst: &Path,
    md: &Metadata,
    me: (u32, u32),
    is_symlink: bool,
) -> Result<()> {
    if (md.uid(), md.gid()) != me {
        fchownat(
            AT_FDCWD,
            dst,
            Some(Uid::from_raw(md.uid())),
            Some(Gid::from_raw(md.gid())),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ctx("chown", dst)?;
    }
    if !is_symlink {
        fchmodat(
            AT_FDCWD,
            dst,
            Mode::from_bits_truncate(md.mode() & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .ctx("chmod", dst)?;
    }
    let names = match xattr::list(src) {
        Ok(n) => Some(n),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => None,
        Err(e) => return Err(DriverError::io("list xattrs", src, e)),
    };
    for name in names.into_iter().flatten() {
        if let Some(v) = xattr::get(src, &name).ctx("get xattr", src)? {
            xattr::set(dst, &name, &v).ctx("set xattr", dst)?;
        }
    }
    utimensat(
        AT_FDCWD,
        dst,
        &atime(md),
        &mtime(md),
        UtimensatFlags::NoFollowSymlink,
    )
    .ctx("set times", dst)
}

#[cfg(test)]
mod tests;
