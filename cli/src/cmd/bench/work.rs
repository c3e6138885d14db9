//! The work done inside a mounted root filesystem, the same for every driver and peer:
//! full reads (cold and warm), a stat walk, small-file writes, copy-up of large files.
//! Plus the scratch-dir hygiene: dropping the page cache, unmounting leftovers.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Directory (in the container root) that the small-file writes go to.
pub const WRITES_DIR: &str = "layerctl-bench-writes";

/// Size of each small file written by [`small_writes`]: one page, as a config or log.
pub const SMALL_WRITE_BYTES: usize = 4096;

/// Every entry below `root` (not `root` itself), depth first, without following
/// symlinks; each with the file type the directory listing gave.
fn walk(
    root: &Path,
    mut f: impl FnMut(&Path, fs::FileType) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).with_context(|| format!("read dir {}", dir.display()))?;
        for e in rd {
            let e = e.with_context(|| format!("read dir {}", dir.display()))?;
            let ft = e
                .file_type()
                .with_context(|| format!("file type of {}", e.path().display()))?;
            let p = e.path();
            f(&p, ft)?;
            if ft.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}

/// Reads every regular file below `root` to the end; returns the bytes read.
pub fn read_all(root: &Path) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    walk(root, |p, ft| {
        if ft.is_file() {
            let mut f = File::open(p).with_context(|| format!("open {}", p.display()))?;
            loop {
                let n = f
                    .read(&mut buf)
                    .with_context(|| format!("read {}", p.display()))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        Ok(())
    })?;
    Ok(total)
}

/// `lstat` of every entry below `root` (as `find -ls` or `du` would); returns the count.
pub fn stat_walk(root: &Path) -> anyhow::Result<u64> {
    let mut n = 0u64;
    walk(root, |p, _| {
        fs::symlink_metadata(p).with_context(|| format!("lstat {}", p.display()))?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Creates `count` new files of [`SMALL_WRITE_BYTES`] in `<root>/`[`WRITES_DIR`] (closed,
/// not fsynced: what a package manager's unpack does before its final sync).
pub fn small_writes(root: &Path, count: usize) -> anyhow::Result<u64> {
    let dir = root.join(WRITES_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let data = vec![0x5au8; SMALL_WRITE_BYTES];
    for i in 0..count {
        let p = dir.join(format!("w{i}"));
        fs::write(&p, &data).with_context(|| format!("write {}", p.display()))?;
    }
    Ok((count * SMALL_WRITE_BYTES) as u64)
}

/// Appends one byte to each of `files` (paths relative to `root`): on a union mount that
/// copies the whole file up into the writable layer first. Returns the bytes of the
/// files touched.
pub fn copy_up(root: &Path, files: &[(PathBuf, u64)]) -> anyhow::Result<u64> {
    let mut total = 0;
    for (rel, size) in files {
        let p = root.join(rel);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&p)
            .with_context(|| format!("open for append {}", p.display()))?;
        f.write_all(b"\n")
            .with_context(|| format!("append to {}", p.display()))?;
        total += size;
    }
    Ok(total)
}

/// Writes dirty pages back and drops the page, dentry and inode caches, so the next read
/// comes from the disk (the "cold" read). Errors when not allowed (not root, or a
/// read-only /proc in a container): the caller skips the cold step then.
pub fn drop_caches() -> anyhow::Result<()> {
    let st = std::process::Command::new("sync")
        .status()
        .context("run sync")?;
    anyhow::ensure!(st.success(), "sync failed: {st}");
    fs::write("/proc/sys/vm/drop_caches", "3\n").context("write /proc/sys/vm/drop_caches")
}

/// Unmounts whatever is still mounted below `dir` (deepest first, lazily), so that `dir`
/// can be removed without descending into a mount; each one is logged.
pub fn unmount_below(dir: &Path) {
    let Ok(mounts) = driver_core::mountinfo::read() else {
        return;
    };
    let mut below: Vec<PathBuf> = mounts
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in below {
        tracing::warn!(mount = %m.display(), "bench: unmounting a leftover mount");
        if let Err(e) = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(mount = %m.display(), error = %e, "bench: unmount leftover");
        }
    }
}

/// Removes a scratch directory after unmounting anything below it.
pub fn remove_scratch(dir: &Path) {
    unmount_below(dir);
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "bench: removing scratch dir");
        }
    }
}
