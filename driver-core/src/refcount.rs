//! Mount reference counts that survive the process (each `layerctl mount` is its own
//! process) and reset themselves when what they count is gone (reboot, external umount,
//! dead FUSE server).
//!
//! Layout: `<dir>/<key>` holds `<count> <boot id>` as text, written atomically (temp
//! file + rename); `<dir>/.lock` is flocked exclusively for every read-modify-write, so
//! concurrent `layerctl mount` processes of the same layer count correctly and only one
//! mounts.
//!
//! ## Is it really mounted?
//! A stored count is only believed while what it counts is still there. Which question
//! decides that is the driver's one choice, a [`Liveness`], passed to [`RefsGuard::get`]:
//! - [`Liveness::KernelMount`]: a kernel mount at a path (overlay2, aufs): the count is
//!   live while the kernel has a mount there (the path is a mount root, i.e. listed in
//!   `/proc/self/mountinfo`; see [`crate::mountinfo::is_mount_root`]). A mount found
//!   without a count file (lost by an older run) counts once.
//! - [`Liveness::ThisBoot`]: no kernel mount at all (vfs, overlay2's base layers): the
//!   count is live only in the boot that wrote it (the file records
//!   `/proc/sys/kernel/random/boot_id`; a reboot unmounts everything).
//! - [`Liveness::Served`]: a mount served by a userspace process (FUSE): live while the
//!   server process runs and the kernel still lists the mount point.
//!
//! A new driver picks one of these; it adds no special case here or in the store.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{DriverError, IoContext, Result};
use crate::fsutil::write_atomic;
use crate::id::LayerId;

/// Where the kernel keeps the random id of the running boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// What decides whether a stored count still counts something (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness<'a> {
    /// Live while the kernel's mount table lists a mount at exactly this path.
    KernelMount(&'a Path),
    /// No kernel mount: live only in the boot that wrote the count.
    ThisBoot,
    /// Served by a userspace process: live while process `server_pid` exists and the
    /// kernel lists a mount at `mount_point`.
    Served {
        /// The mount point of the served filesystem.
        mount_point: &'a Path,
        /// The serving process.
        server_pid: u32,
    },
}

impl Liveness<'_> {
    /// Whether the thing counted is there now; `None` means "only the count file
    /// knows" ([`Liveness::ThisBoot`], decided by the file's boot id).
    fn kernel_says(&self) -> Result<Option<bool>> {
        match *self {
            Liveness::KernelMount(p) => Ok(Some(crate::mountinfo::is_mount_root(p)?)),
            Liveness::ThisBoot => Ok(None),
            Liveness::Served {
                mount_point,
                server_pid,
            } => Ok(Some(
                crate::fsutil::pid_alive(server_pid)
                    && crate::mountinfo::is_mount_root(mount_point)?,
            )),
        }
    }
}

/// The directory of persisted counts.
#[derive(Debug, Clone)]
pub struct MountRefs {
    dir: PathBuf,
    /// The running boot's id, read once from [`BOOT_ID_PATH`] (or given, in tests).
    boot_id: OnceLock<String>,
}

/// Holds the counts' lock; all reads and updates go through it.
#[derive(Debug)]
pub struct RefsGuard<'a> {
    refs: &'a MountRefs,
    _lock: Flock<File>,
}

/// A count file's content: `<count> <boot id>` (an older format had the count alone).
fn parse(text: &str) -> (u32, Option<&str>) {
    let mut w = text.split_whitespace();
    let n = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (n, w.next())
}

impl MountRefs {
    /// Counts kept in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MountRefs {
            dir: dir.into(),
            boot_id: OnceLock::new(),
        }
    }

    /// Like [`MountRefs::new`], with the boot id given instead of read from the kernel:
    /// for tests of the "stale after reboot" path.
    pub fn with_boot_id(dir: impl Into<PathBuf>, boot_id: &str) -> Self {
        let r = MountRefs::new(dir);
        let _ = r.boot_id.set(boot_id.to_owned());
        r
    }

    fn boot_id(&self) -> Result<&str> {
        if let Some(b) = self.boot_id.get() {
            return Ok(b);
        }
        let p = Path::new(BOOT_ID_PATH);
        let b = fs::read_to_string(p).ctx("read", p)?;
        Ok(self.boot_id.get_or_init(|| b.trim().to_owned()))
    }

    /// Takes the exclusive lock.
    pub fn lock(&self) -> Result<RefsGuard<'_>> {
        fs::create_dir_all(&self.dir).ctx("create directory", &self.dir)?;
        let p = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx("open lock file", &p)?;
        let lock = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| DriverError::errno("flock", &p, e))?;
        Ok(RefsGuard {
            refs: self,
            _lock: lock,
        })
    }
}

impl RefsGuard<'_> {
    fn path(&self, key: &str) -> PathBuf {
        self.refs.dir.join(key)
    }

    /// The count for `id`, believed only while `live` says the mount is there
    /// (otherwise it is stale and reads as 0; see the module doc).
    pub fn get(&self, id: &LayerId, live: Liveness<'_>) -> Result<u32> {
        self.get_key(id.as_str(), live)
    }

    /// [`RefsGuard::get`] for a count that is not a layer's own (`key` is one path
    /// component chosen by the driver, e.g. `<id>.lower` for an internal mount).
    pub fn get_key(&self, key: &str, live: Liveness<'_>) -> Result<u32> {
        let kernel = live.kernel_says()?;
        if kernel == Some(false) {
            return Ok(0);
        }
        let p = self.path(key);
        let text = match fs::read_to_string(&p) {
            Ok(s) => s,
            // Mounted but no count: mounted by an older run that lost its file; count it once.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(if kernel == Some(true) { 1 } else { 0 })
            }
            Err(e) => return Err(DriverError::io("read mount count", p, e)),
        };
        let (n, boot) = parse(&text);
        if kernel.is_none() && boot != Some(self.refs.boot_id()?) {
            tracing::debug!(key, ?boot, "mount count from an earlier boot reads as 0");
            return Ok(0);
        }
        Ok(if kernel == Some(true) { n.max(1) } else { n })
    }

    /// Stores `count` for `id` (removing the file at 0), forced to disk.
    pub fn set(&self, id: &LayerId, count: u32) -> Result<()> {
        self.set_key(id.as_str(), count)
    }

    /// [`RefsGuard::set`] for a driver-chosen key.
    pub fn set_key(&self, key: &str, count: u32) -> Result<()> {
        let p = self.path(key);
        if count == 0 {
            match fs::remove_file(&p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(DriverError::io("remove mount count", p, e)),
            }
        } else {
            let text = format!("{count} {}", self.refs.boot_id()?);
            let r = write_atomic(&p, text.as_bytes());
            overwrite_if_full(r, &p, &text, true)
        }
    }

    /// Like [`RefsGuard::set`], but the new count is not forced to disk: the file is
    /// still replaced atomically (temp file + rename, under the lock), only the two
    /// fsyncs are skipped. Safe for every [`Liveness`]: a process crash keeps the page
    /// cache, and after a machine crash (a reboot) the mount is gone and any stored
    /// count reads as 0 (a new boot id, or no kernel mount), so durability buys nothing,
    /// while the fsyncs cost more than the mount itself (overlay2: ~1.2 ms of a ~2 ms
    /// mount).
    pub fn set_nosync(&self, id: &LayerId, count: u32) -> Result<()> {
        self.set_key_nosync(id.as_str(), count)
    }

    /// [`RefsGuard::set_nosync`] for a driver-chosen key.
    pub fn set_key_nosync(&self, key: &str, count: u32) -> Result<()> {
        if count == 0 {
            return self.set_key(key, 0);
        }
        let p = self.path(key);
        let tmp = self
            .refs
            .dir
            .join(format!(".{key}.tmp-{}", crate::id::random_hex(6)));
        let text = format!("{count} {}", self.refs.boot_id()?);
        let r = fs::write(&tmp, &text)
            .ctx("write mount count", &tmp)
            .and_then(|()| fs::rename(&tmp, &p).ctx("rename mount count", &p));
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        overwrite_if_full(r, &p, &text, false)
    }

    /// The keys that have a count file (temp files and `.lock` excluded), for cleanup.
    pub fn keys(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.dir()).ctx("read directory", self.dir())? {
            let e = e.ctx("read directory", self.dir())?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The directory of counts.
    pub fn dir(&self) -> &Path {
        &self.refs.dir
    }
}

/// When replacing a count file failed for want of space (`ENOSPC`, `EDQUOT`: a full
/// disk, where the temp file of an atomic replace cannot be made), and the file exists,
/// rewrites it in place instead: one `pwrite` at offset 0 of the new text, padded with
/// spaces to the old length (`parse` splits on whitespace), needs no new inode and no
/// new block. Under the counts' lock (readers take it too) the one small write is as
/// good as a rename for every other process; a machine crash resets counts anyway (see
/// [`RefsGuard::set_nosync`]). Without it a `umount` or the unmount that ends an
/// `export` or `run` on a full disk failed and left a mount reference behind. Any other
/// outcome is returned as it was.
fn overwrite_if_full(r: Result<()>, p: &Path, text: &str, sync: bool) -> Result<()> {
    let full = matches!(
        &r,
        Err(DriverError::Io { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    );
    if !full || !p.is_file() {
        return r;
    }
    let in_place = (|| -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .write(true)
            .open(p)
            .ctx("open mount count", p)?;
        let old = f.metadata().ctx("stat mount count", p)?.len() as usize;
        let mut buf = text.as_bytes().to_vec();
        if buf.len() < old {
            buf.resize(old, b' ');
        }
        f.write_all_at(&buf, 0).ctx("rewrite mount count", p)?;
        if sync {
            f.sync_data().ctx("fsync mount count", p)?;
        }
        Ok(())
    })();
    match in_place {
        Ok(()) => {
            tracing::debug!(path = %p.display(), "disk full: mount count rewritten in place");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "rewriting the mount count in place failed too");
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_mount_counts_persist_and_reset_when_unmounted() {
        let d = tempfile::tempdir().unwrap();
        let refs = MountRefs::new(d.path().join("refs"));
        let id = LayerId::new("abc").unwrap();
        let mounted = Liveness::KernelMount(Path::new("/"));
        let not_mounted = Liveness::KernelMount(d.path());
        let g = refs.lock().unwrap();
        assert_eq!(
            g.get(&id, mounted).unwrap(),
            1,
            "mounted without a file counts once"
        );
        g.set(&id, 3).unwrap();
        drop(g);
        let g = refs.lock().unwrap();
        assert_eq!(g.get(&id, mounted).unwrap(), 3);
        assert_eq!(
            g.get(&id, not_mounted).unwrap(),
            0,
            "kernel says unmounted: stale count"
        );
        g.set(&id, 0).unwrap();
        assert!(!d.path().join("refs/abc").exists());
        g.set_nosync(&id, 2).unwrap();
        assert_eq!(g.get(&id, mounted).unwrap(), 2);
        g.set_nosync(&id, 0).unwrap();
        assert!(!d.path().join("refs/abc").exists());
        assert_eq!(
            fs::read_dir(d.path().join("refs")).unwrap().count(),
            1,
            "only .lock left"
        );
    }

    #[test]
    fn this_boot_counts_are_stale_after_a_reboot() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("refs");
        let id = LayerId::new("vfs-layer").unwrap();
        let before = MountRefs::with_boot_id(&dir, "boot-a");
        {
            let g = before.lock().unwrap();
            assert_eq!(g.get(&id, Liveness::ThisBoot).unwrap(), 0, "no file");
            g.set(&id, 2).unwrap();
            assert_eq!(g.get(&id, Liveness::ThisBoot).unwrap(), 2);
            assert_eq!(g.keys().unwrap(), vec!["vfs-layer".to_owned()]);
        }
        // The same boot in another process: the count holds.
        let same = MountRefs::with_boot_id(&dir, "boot-a");
        assert_eq!(
            same.lock().unwrap().get(&id, Liveness::ThisBoot).unwrap(),
            2
        );
        // After a reboot (another boot id) it reads as 0 and counts up from there.
        let after = MountRefs::with_boot_id(&dir, "boot-b");
        let g = after.lock().unwrap();
        assert_eq!(g.get(&id, Liveness::ThisBoot).unwrap(), 0);
        g.set_nosync(&id, 1).unwrap();
        assert_eq!(g.get(&id, Liveness::ThisBoot).unwrap(), 1);
        assert_eq!(
            fs::read_to_string(dir.join("vfs-layer")).unwrap(),
            "1 boot-b"
        );
        // A file of the older format (count alone) has no boot: stale for ThisBoot,
        // believed for a kernel mount that is there.
        fs::write(dir.join("vfs-layer"), "5").unwrap();
        assert_eq!(g.get(&id, Liveness::ThisBoot).unwrap(), 0);
        assert_eq!(
            g.get(&id, Liveness::KernelMount(Path::new("/"))).unwrap(),
            5
        );
    }

    #[test]
    fn real_boot_id_is_read_from_the_kernel() {
        let d = tempfile::tempdir().unwrap();
        let refs = MountRefs::new(d.path().join("refs"));
        let id = LayerId::new("x").unwrap();
        let g = refs.lock().unwrap();
        g.set(&id, 1).unwrap();
        let boot = fs::read_to_string(BOOT_ID_PATH).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("refs/x")).unwrap(),
            format!("1 {}", boot.trim())
        );
        assert_eq!(g.get(&id, Liveness::ThisBoot).unwrap(), 1);
    }

    #[test]
    fn served_mounts_need_a_live_server_and_a_mount() {
        let d = tempfile::tempdir().unwrap();
        let refs = MountRefs::new(d.path().join("refs"));
        let id = LayerId::new("fuse").unwrap();
        let g = refs.lock().unwrap();
        g.set(&id, 4).unwrap();
        let me = std::process::id();
        let live = Liveness::Served {
            mount_point: Path::new("/"),
            server_pid: me,
        };
        assert_eq!(g.get(&id, live).unwrap(), 4);
        // A child that has exited and been reaped: its pid is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = Liveness::Served {
            mount_point: Path::new("/"),
            server_pid: dead,
        };
        if !crate::fsutil::pid_alive(dead) {
            assert_eq!(g.get(&id, gone).unwrap(), 0, "server died: stale");
        }
        let unmounted = Liveness::Served {
            mount_point: d.path(),
            server_pid: me,
        };
        assert_eq!(g.get(&id, unmounted).unwrap(), 0, "mount gone: stale");
    }
}
