//! Regular-file content and metadata written on a second thread while the parsing
//! thread goes on with the next entries.
//!
//! The parsing thread still does everything that names a path: it resolves the parent
//! in the root, creates the file (`O_CREAT | O_EXCL | O_NOFOLLOW` relative to the
//! parent fd) and only then hands the open fd over, with the content read from the
//! tar. The writer thread only touches that inode through its fd, in the order of
//! [`super::meta`]: content, chown, chmod (unless the file was created with its final
//! mode), times, then close. So tar order keeps its
//! meaning: a later entry that replaces or removes the name unlinks it first (the
//! writer then fills an orphan inode), a hard link to the name links the same inode
//! whose content and metadata arrive through the fd, and directories get their modes
//! and times only after the writer is joined ([`Writer::finish`], before the
//! deferred directories).
//!
//! Only plain regular files without xattrs take this path (sparse files and files
//! with xattrs are written inline: they are rare), and only while the writer keeps up:
//! when it is behind ([`Writer::congested`]) the parsing thread writes the next file
//! itself rather than wait for room in the queue, so on two busy cores neither thread
//! idles while the other works. Jobs of at most [`WRITE_CHUNK`]
//! bytes go in batches (up to [`BATCH_JOBS`] jobs or [`BATCH_BYTES`], so the writer
//! is woken a few hundred times per Debian rootfs, not once per file) through one
//! FIFO queue of [`QUEUE_BATCHES`] batches: memory and open fds stay bounded (about
//! 3 MiB and 100 fds) and one writer keeps each file's chunks in order. Content
//! buffers are reused, never zeroed again; a chunked stream's content is not copied
//! into them but lent ([`Content::Shared`], `shared.rs`). The first failure stops the writer; the parsing thread learns it at its next
//! hand-over or at the end, as a [`DriverError::Io`] naming the operation and path.
//! Dropping a [`Writer`] (an apply that failed on a later entry) writes what is
//! queued and waits for the thread: the entries before the failing one are complete
//! and nothing is written into the layer after the apply returns.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::meta::{self, Meta};
use super::shared::SharedBytes;
use crate::error::{DriverError, Result};

/// Most content bytes in one job (a bigger file is sent as several jobs).
pub(super) const WRITE_CHUNK: usize = 128 << 10;
/// Jobs per batch at most.
const BATCH_JOBS: usize = 16;
/// Content bytes after which a batch is sent.
const BATCH_BYTES: usize = 512 << 10;
/// Batches queued before the parsing thread waits.
const QUEUE_BATCHES: usize = 4;
/// Batches in flight (queued or being written) from which the writer counts as behind
/// ([`Writer::congested`]). 1, 2 and 4 measured (BENCHMARKS.md, "Import at tar
/// speed"): 1 and 2 alike, both better than never writing inline.
const BUSY_BATCHES: usize = 2;

/// What to do with the file once its last chunk is written.
#[derive(Debug, Clone, Copy)]
pub(super) struct End {
    pub meta: Meta,
    /// chown to `meta.uid:meta.gid` (the apply preserves owners).
    pub chown: bool,
    /// chmod to `meta.mode` (false: the file was created with it).
    pub chmod: bool,
}

/// One hand-over: a new file (with its first chunk) or the next chunk of the current
/// one, and, with the last chunk, its metadata.
#[derive(Debug)]
pub(super) struct Job {
    /// The file just created and its path (for errors); `None`: the current file.
    pub file: Option<(File, PathBuf)>,
    pub content: Content,
    pub end: Option<End>,
}

/// Content of one [`Job`].
#[derive(Debug)]
pub(super) enum Content {
    /// `buf[..len]` (a buffer from [`Writer::buffer`], recycled once written).
    Buf(Vec<u8>, usize),
    /// Bytes of the caller's chunked stream (`shared.rs`): written from there.
    Shared(SharedBytes),
}

impl Content {
    fn len(&self) -> usize {
        match self {
            Content::Buf(_, n) => *n,
            Content::Shared(s) => s.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Content::Buf(b, n) => &b[..*n],
            Content::Shared(s) => s.as_slice(),
        }
    }
}

/// The writer thread and the queue to it.
#[derive(Debug)]
pub(super) struct Writer {
    tx: Option<SyncSender<Vec<Job>>>,
    batch: Vec<Job>,
    batch_bytes: usize,
    /// Buffers the writer is done with, to fill again.
    spare: Receiver<Vec<Vec<u8>>>,
    free: Vec<Vec<u8>>,
    handle: Option<JoinHandle<Result<()>>>,
    /// Batches sent and not yet written (the writer counts them down).
    pending: Arc<AtomicUsize>,
}

impl Writer {
    pub(super) fn spawn() -> Result<Self> {
        let (tx, rx) = sync_channel::<Vec<Job>>(QUEUE_BATCHES);
        let (spare_tx, spare) = channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let p2 = pending.clone();
        let handle = std::thread::Builder::new()
            .name("apply-write".into())
            .spawn(move || run(rx, spare_tx, p2))
            .map_err(|e| DriverError::io("spawn file writer thread", PathBuf::new(), e))?;
        Ok(Writer {
            tx: Some(tx),
            batch: Vec::with_capacity(BATCH_JOBS),
            batch_bytes: 0,
            spare,
            free: Vec::new(),
            handle: Some(handle),
            pending,
        })
    }

    /// True when the writer is behind: [`BUSY_BATCHES`] or more batches are sent and
    /// not written yet. The parsing thread then writes the next file itself instead of
    /// queueing it (`entry.rs`), so neither thread waits for the other (a file is one
    /// inode reached only through its own fd: which thread writes it does not change
    /// the tree).
    pub(super) fn congested(&self) -> bool {
        #[cfg(test)]
        if tests::FORCE_INLINE.with(|f| f.get()) {
            return true;
        }
        self.pending.load(Ordering::Relaxed) >= BUSY_BATCHES
    }

    /// A buffer of [`WRITE_CHUNK`] initialized bytes to fill (one the writer is done
    /// with, when there is one).
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        if self.free.is_empty() {
            while let Ok(bufs) = self.spare.try_recv() {
                self.free.extend(bufs);
            }
        }
        self.free.pop().unwrap_or_else(|| vec![0; WRITE_CHUNK])
    }

    /// Queues `job`. Errors: the writer's own failure (it stopped).
    pub(super) fn send(&mut self, job: Job) -> Result<()> {
        self.batch_bytes += job.content.len();
        self.batch.push(job);
        if self.batch.len() >= BATCH_JOBS || self.batch_bytes >= BATCH_BYTES {
            return self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_JOBS));
        self.batch_bytes = 0;
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.join()
    }

    /// Waits until everything queued is written. Errors: the first failure.
    pub(super) fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            },
            // Joined already (it failed and said so): nothing more was written.
            None => Err(DriverError::io(
                "write file",
                PathBuf::new(),
                io::Error::other("file writer thread stopped earlier"),
            )),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // An apply that failed later: the entries before the failing one are written
        // completely, as when applied inline.
        let _ = self.flush();
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    rx: Receiver<Vec<Job>>,
    spare: Sender<Vec<Vec<u8>>>,
    pending: Arc<AtomicUsize>,
) -> Result<()> {
    let mut cur: Option<(File, PathBuf)> = None;
    for batch in rx {
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            if let Some(f) = job.file {
                cur = Some(f);
            }
            let Some((file, path)) = cur.as_mut() else {
                continue; // a chunk without its file: the sender's bug, nothing to write to
            };
            if job.content.len() > 0 {
                file.write_all(job.content.bytes())
                    .map_err(|e| DriverError::io("write file", path.clone(), e))?;
            }
            if let Content::Buf(buf, _) = job.content {
                done.push(buf);
            }
            if let Some(end) = job.end {
                let fd = file.as_fd();
                if end.chown {
                    meta::chown_fd(fd, &end.meta)
                        .map_err(|e| DriverError::errno("chown", &*path, e))?;
                }
                meta::finish_fd(fd, &end.meta, end.chmod)
                    .map_err(|e| DriverError::errno("set mode and times", &*path, e))?;
                cur = None; // closes the file
            }
        }
        let _ = spare.send(done);
        pending.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use tar::{EntryType, Header};

    use super::WRITE_CHUNK;
    use crate::apply::{apply_layer_stream, apply_tar, ApplyOptions, LayerStream, SharedBytes};
    use crate::whiteout::WhiteoutFormat;

    thread_local! {
        /// Makes [`super::Writer::congested`] answer true on this thread: every file
        /// is then written by the parsing thread.
        pub(crate) static FORCE_INLINE: Cell<bool> = const { Cell::new(false) };
    }

    /// Path -> (mode, uid, gid, mtime (0 for directories: implied ones get the
    /// current time), content length and hash, hard-link group: the first name of the
    /// same inode).
    type Snap = BTreeMap<String, (u32, u32, u32, i64, (usize, u64), String)>;

    fn snap(root: &std::path::Path) -> Snap {
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for e in walkdir::WalkDir::new(root).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let m = e.path().symlink_metadata().unwrap();
            let data = if m.is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&data, &mut h);
            let content = (data.len(), std::hash::Hasher::finish(&h));
            let group = first.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            out.insert(rel, (m.mode(), m.uid(), m.gid(), mtime, content, group));
        }
        out
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32, ids: (u64, u64)) {
        let mut h = Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_mtime(1_234_567_890);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Link);
        h.set_mode(0o644);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }

    /// Files written on the writer thread keep tar order: a multi-chunk file linked and
    /// then replaced by name leaves the link with the first content and the name with
    /// the second; many files in several batches all arrive with their metadata.
    #[test]
    fn replaced_and_linked_files_keep_tar_order() {
        let big: Vec<u8> = (0..3 * WRITE_CHUNK + 17).map(|i| (i % 253) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "a", &big, 0o640, (0, 0));
        link(&mut b, "b", "a");
        file(&mut b, "a", b"second", 0o600, (0, 0));
        for i in 0..100 {
            file(
                &mut b,
                &format!("many/f{i}"),
                format!("{i}").as_bytes(),
                0o644,
                (0, 0),
            );
        }
        file(&mut b, "empty", b"", 0o4755, (0, 0));
        let t = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let stats = apply_tar(
            d.path(),
            &mut &t[..],
            &ApplyOptions::new(WhiteoutFormat::Overlay),
        )
        .unwrap();
        assert_eq!(fs::read(d.path().join("b")).unwrap(), big);
        assert_eq!(fs::read(d.path().join("a")).unwrap(), b"second");
        let (a, bm) = (
            fs::metadata(d.path().join("a")).unwrap(),
            fs::metadata(d.path().join("b")).unwrap(),
        );
        assert_ne!(a.ino(), bm.ino());
        assert_eq!((a.mode() & 0o7777, bm.mode() & 0o7777), (0o600, 0o640));
        assert_eq!((a.mtime(), bm.mtime()), (1_234_567_890, 1_234_567_890));
        for i in 0..100 {
            let p = d.path().join(format!("many/f{i}"));
            assert_eq!(fs::read(&p).unwrap(), format!("{i}").as_bytes());
            assert_eq!(fs::metadata(&p).unwrap().mtime(), 1_234_567_890);
        }
        let e = fs::metadata(d.path().join("empty")).unwrap();
        assert_eq!((e.len(), e.mode() & 0o7777), (0, 0o4755));
        let content = big.len() + 6 + (0..100).map(|i: i32| i.to_string().len()).sum::<usize>();
        assert_eq!(stats.content_bytes, content as u64);
    }

    /// A temp dir with `g/`: owner 0:4321, mode 2775 (setgid), and the process's egid.
    fn setgid_dir_g() -> (tempfile::TempDir, u64) {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join("g");
        fs::create_dir(&g).unwrap();
        std::os::unix::fs::chown(&g, Some(0), Some(4321)).unwrap();
        fs::set_permissions(&g, fs::Permissions::from_mode(0o2775)).unwrap();
        (d, u64::from(nix::unistd::getegid().as_raw()))
    }

    /// The skipped chown (the new file already has the entry's owner) follows the
    /// creation rule: in a setgid directory a new file gets the directory's group, so
    /// an entry owned by the process's gid is still chowned there.
    #[test]
    fn owners_are_right_in_setgid_directories() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping owners_are_right_in_setgid_directories: needs root");
            return;
        }
        let (d, egid) = setgid_dir_g();
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "g/mine", b"1", 0o644, (0, egid));
        file(&mut b, "g/dirs", b"2", 0o644, (0, 4321));
        file(&mut b, "g/other", b"3", 0o644, (7, 8));
        file(&mut b, "top", b"4", 0o644, (0, egid));
        apply_and_check_owners(
            d.path(),
            b,
            &[
                ("g/mine", 0, egid as u32),
                ("g/dirs", 0, 4321),
                ("g/other", 7, 8),
                ("top", 0, egid as u32),
            ],
        );
    }

    /// Applies the tar of `b` to `root` (overlay format) and checks each entry's owner
    /// (not following symlinks): (name, uid, gid).
    fn apply_and_check_owners(
        root: &std::path::Path,
        b: tar::Builder<Vec<u8>>,
        want: &[(&str, u32, u32)],
    ) {
        let t = b.into_inner().unwrap();
        apply_tar(
            root,
            &mut &t[..],
            &ApplyOptions::new(WhiteoutFormat::Overlay),
        )
        .unwrap();
        for &(name, uid, gid) in want {
            let m = fs::symlink_metadata(root.join(name)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{name}");
        }
    }

    fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, ty: EntryType, mode: u32, ids: (u64, u64)) {
        let mut h = Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_mtime(1_234_567_890);
        h.set_size(0);
        if ty == EntryType::Symlink {
            b.append_link(&mut h, name, "target").unwrap();
        } else {
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        }
    }

    /// A POSIX ACL xattr value (`system.posix_acl_*`, version 2): `u::rwx,g::---,o::---`.
    fn acl_owner_only() -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm) in [(0x01u16, 7u16), (0x04, 0), (0x20, 0)] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        v
    }

    /// Files created with their final mode (no chmod when the umask keeps every bit)
    /// still end with exactly the entry's mode: modes the umask strips, special bits,
    /// and below a default ACL (set by the tar on a directory, or on the layer root
    /// beforehand), which overrides the umask for new files.
    #[test]
    fn file_modes_are_exact_whatever_umask_and_default_acls() {
        const MODES: [u32; 10] = [
            0o644, 0o755, 0o600, 0o444, 0o000, 0o666, 0o777, 0o4755, 0o2755, 0o1644,
        ];
        let build = |acl_dir: bool| {
            let mut b = tar::Builder::new(Vec::new());
            for m in MODES {
                file(&mut b, &format!("top{m:o}"), b"x", m, (0, 0));
            }
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(1_234_567_890);
            h.set_size(0);
            if acl_dir {
                let acl = acl_owner_only();
                b.append_pax_extensions([("SCHILY.xattr.system.posix_acl_default", &acl[..])])
                    .unwrap();
            }
            b.append_data(&mut h, "acl/", &b""[..]).unwrap();
            for m in MODES {
                file(&mut b, &format!("acl/f{m:o}"), b"x", m, (0, 0));
            }
            b.into_inner().unwrap()
        };
        let check = |root: &std::path::Path| {
            for m in MODES {
                for p in [format!("top{m:o}"), format!("acl/f{m:o}")] {
                    let md = fs::metadata(root.join(&p)).unwrap();
                    assert_eq!(md.mode() & 0o7777, m, "{p}");
                }
            }
        };
        // The tar sets a default ACL on `acl/`.
        let d = tempfile::tempdir().unwrap();
        let opts = ApplyOptions::new(WhiteoutFormat::Overlay);
        match apply_tar(d.path(), &mut &build(true)[..], &opts) {
            Ok(_) => {
                let has = xattr::get(d.path().join("acl"), "system.posix_acl_default")
                    .unwrap()
                    .is_some();
                assert!(has, "the default ACL was not set");
                check(d.path());
            }
            Err(e) if e.to_string().contains("Operation not supported") => {
                eprintln!("no POSIX ACLs on the test filesystem: only the root case runs");
            }
            Err(e) => panic!("{e}"),
        }
        // The layer root has a default ACL before the apply.
        let d = tempfile::tempdir().unwrap();
        if xattr::set(d.path(), "system.posix_acl_default", &acl_owner_only()).is_ok() {
            // Without the chmod a new 0644 file here would be 0600.
            fs::write(d.path().join("probe"), b"").unwrap();
            let probe = fs::metadata(d.path().join("probe")).unwrap().mode() & 0o777;
            fs::remove_file(d.path().join("probe")).unwrap();
            assert_eq!(probe, 0o600, "the default ACL does not apply here");
        }
        apply_tar(d.path(), &mut &build(false)[..], &opts).unwrap();
        check(d.path());
    }

    /// New directories, symlinks and device nodes skip the chown when they already
    /// have the entry's owner; the cached owner of a parent is forgotten when a later
    /// entry re-owns that (existing) parent, so files made in it afterwards are still
    /// chowned right.
    #[test]
    fn owners_of_new_nodes_and_re_owned_parents() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping owners_of_new_nodes_and_re_owned_parents: needs root");
            return;
        }
        let (d, egid) = setgid_dir_g();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "g/d-mine", EntryType::Directory, 0o755, (0, egid));
        entry(&mut b, "g/d-dirs", EntryType::Directory, 0o755, (0, 4321));
        entry(&mut b, "g/l-mine", EntryType::Symlink, 0o777, (0, egid));
        entry(&mut b, "g/l-other", EntryType::Symlink, 0o777, (5, 6));
        entry(&mut b, "g/p-mine", EntryType::Fifo, 0o644, (0, egid));
        entry(&mut b, "d-top", EntryType::Directory, 0o755, (0, egid));
        entry(&mut b, "l-top", EntryType::Symlink, 0o777, (0, 4321));
        // Primes the cached owner of `g` (new files get 0:4321 there) ...
        file(&mut b, "g/before", b"1", 0o644, (0, 4321));
        // ... then `g` itself is re-owned: new files in it now get group 7777.
        entry(&mut b, "g/", EntryType::Directory, 0o2775, (0, 7777));
        file(&mut b, "g/after", b"2", 0o644, (0, 4321));
        apply_and_check_owners(
            d.path(),
            b,
            &[
                ("g/d-mine", 0, egid as u32),
                ("g/d-dirs", 0, 4321),
                ("g/l-mine", 0, egid as u32),
                ("g/l-other", 5, 6),
                ("g/p-mine", 0, egid as u32),
                ("d-top", 0, egid as u32),
                ("l-top", 0, 4321),
                ("g/before", 0, 4321),
                ("g", 0, 7777),
                ("g/after", 0, 4321),
            ],
        );
    }

    /// Files the parsing thread writes itself (the writer is behind) come out exactly
    /// like files written by the writer thread: content of every size, modes (special
    /// bits, ones the umask strips), owners, times, hard links, replaced names.
    #[test]
    fn files_written_inline_when_the_writer_is_behind_are_identical() {
        let root = nix::unistd::geteuid().is_root();
        let big: Vec<u8> = (0..2 * WRITE_CHUNK + 5).map(|i| (i % 249) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        for (i, mode) in [0o644, 0o755, 0o600, 0o666, 0o4755, 0o2711, 0o000]
            .into_iter()
            .enumerate()
        {
            let ids = if root {
                (i as u64, 100 + i as u64)
            } else {
                (0, 0)
            };
            file(
                &mut b,
                &format!("d/f{i}"),
                format!("c{i}").as_bytes(),
                mode,
                ids,
            );
        }
        file(&mut b, "d/big", &big, 0o640, (0, 0));
        link(&mut b, "d/big-link", "d/big");
        file(&mut b, "d/big", b"replaced", 0o644, (0, 0));
        file(&mut b, "d/empty", b"", 0o644, (0, 0));
        let t = b.into_inner().unwrap();
        let opts = ApplyOptions::new(WhiteoutFormat::Overlay);
        let (a, i) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        apply_tar(a.path(), &mut &t[..], &opts).unwrap();
        FORCE_INLINE.with(|f| f.set(true));
        let r = apply_tar(i.path(), &mut &t[..], &opts);
        FORCE_INLINE.with(|f| f.set(false));
        r.unwrap();
        let (sa, si) = (snap(a.path()), snap(i.path()));
        assert_eq!(sa, si);
        assert_eq!(fs::read(i.path().join("d/big-link")).unwrap(), big);
        assert_eq!(si["d/f4"].0 & 0o7777, 0o4755);
        assert_eq!(si["d/f3"].0 & 0o7777, 0o666);
    }

    /// A [`ChunkedRead`](crate::apply::ChunkedRead) over `data` cut into pieces of
    /// `step` bytes, each its own shared buffer.
    struct Pieces {
        pieces: Vec<std::sync::Arc<Vec<u8>>>,
        at: (usize, usize),
        lent: usize,
    }

    impl Pieces {
        fn new(data: &[u8], step: usize) -> Self {
            let pieces = data
                .chunks(step)
                .map(|c| std::sync::Arc::new(c.to_vec()))
                .collect();
            Pieces {
                pieces,
                at: (0, 0),
                lent: 0,
            }
        }

        /// The current piece with bytes left, if any.
        fn current(&mut self) -> Option<std::sync::Arc<Vec<u8>>> {
            while let Some(p) = self.pieces.get(self.at.0) {
                if self.at.1 < p.len() {
                    return Some(p.clone());
                }
                self.at = (self.at.0 + 1, 0);
            }
            None
        }
    }

    impl std::io::Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let Some(p) = self.current() else {
                return Ok(0);
            };
            let n = (p.len() - self.at.1).min(out.len());
            out[..n].copy_from_slice(&p[self.at.1..self.at.1 + n]);
            self.at.1 += n;
            Ok(n)
        }
    }

    impl crate::apply::ChunkedRead for Pieces {
        fn read_shared(&mut self, max: usize) -> std::io::Result<Option<SharedBytes>> {
            let Some(p) = self.current() else {
                return Ok(None);
            };
            let n = (p.len() - self.at.1).min(max);
            let b = SharedBytes::new(p, self.at.1, n);
            self.at.1 += n;
            self.lent += n;
            Ok(Some(b))
        }
    }

    /// A chunked stream (files written from its shared pieces, by the writer thread or
    /// inline) gives exactly the tree of a plain reader, whatever the piece size
    /// (pieces ending inside headers, PAX records, file data and padding): content,
    /// modes, owners, times, hard links, replaced names, xattrs, a GNU sparse file and
    /// a long name. A stream cut inside a file's data fails the same way.
    #[test]
    fn chunked_streams_give_the_same_tree() {
        let big: Vec<u8> = (0..3 * WRITE_CHUNK + 17).map(|i| (i % 239) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "d/big", &big, 0o640, (0, 0));
        link(&mut b, "d/big-link", "d/big");
        file(&mut b, "d/big", b"replaced", 0o644, (0, 0));
        for i in 0..40 {
            let data: Vec<u8> = (0..i * 997).map(|j| (j % 13) as u8 + i as u8).collect();
            file(&mut b, &format!("d/f{i}"), &data, 0o600 + i as u32, (0, 0));
        }
        file(&mut b, "d/empty", b"", 0o644, (0, 0));
        let long = format!("d/{}", "n".repeat(180));
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(1_234_567_890);
        h.set_size(9);
        b.append_data(&mut h, &long, &b"long name"[..]).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
            .unwrap();
        file(&mut b, "d/with-xattr", b"x content", 0o644, (0, 0));
        // GNU old sparse (`S`): 4 KiB of data at offset 8 KiB of a 16 KiB file.
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_path("d/sparse").unwrap();
        h.set_mode(0o644);
        h.set_mtime(1_234_567_890);
        h.set_size(4096);
        {
            let g = h.as_gnu_mut().unwrap();
            g.sparse[0].offset = *b"00000020000\0";
            g.sparse[0].numbytes = *b"00000010000\0";
            // The trailing hole: an empty region at the real size.
            g.sparse[1].offset = *b"00000040000\0";
            g.sparse[1].numbytes = *b"00000000000\0";
            g.realsize = *b"00000040000\0";
        }
        h.set_cksum();
        b.append(&h, &[7u8; 4096][..]).unwrap();
        file(&mut b, "d/last", &big[..5000], 0o644, (0, 0));
        let t = b.into_inner().unwrap();
        let opts = ApplyOptions::new(WhiteoutFormat::Overlay);
        let plain = tempfile::tempdir().unwrap();
        let want = apply_tar(plain.path(), &mut &t[..], &opts).unwrap();
        let xattrs = xattr::get(plain.path().join("d/with-xattr"), "user.k").is_ok();
        let snap_plain = snap(plain.path());
        assert_eq!(snap_plain["d/big-link"].4 .0, big.len());
        for inline in [false, true] {
            for step in [1, 7, 512, 4096, 70_001, t.len()] {
                let d = tempfile::tempdir().unwrap();
                let mut src = Pieces::new(&t, step);
                FORCE_INLINE.with(|f| f.set(inline));
                let r = apply_layer_stream(d.path(), LayerStream::Chunked(&mut src), &opts);
                FORCE_INLINE.with(|f| f.set(false));
                assert_eq!(r.unwrap(), want, "step {step} inline {inline}");
                assert_eq!(snap(d.path()), snap_plain, "step {step} inline {inline}");
                assert!(src.lent >= 2 * big.len(), "step {step}: {} lent", src.lent);
                if xattrs {
                    assert_eq!(
                        xattr::get(d.path().join("d/with-xattr"), "user.k").unwrap(),
                        Some(b"v".to_vec())
                    );
                }
            }
        }
        // Cut inside the first big file's data.
        let cut = &t[..3 * 512 + 200_000];
        let e_plain = apply_tar(tempfile::tempdir().unwrap().path(), &mut &cut[..], &opts)
            .unwrap_err()
            .to_string();
        let d = tempfile::tempdir().unwrap();
        let mut src = Pieces::new(cut, 4096);
        let e = apply_layer_stream(d.path(), LayerStream::Chunked(&mut src), &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated") && e.contains("d/big"), "{e}");
        assert_eq!(e, e_plain);
    }

    /// Directories get their modes and times while the writer still drains its queue
    /// (`Applier::finish`): a read-only directory full of multi-chunk files still ends
    /// with its own mode and mtime, and every file in it with its content and times.
    #[test]
    fn directory_times_and_modes_survive_the_writers_tail() {
        let big: Vec<u8> = (0..2 * WRITE_CHUNK + 3).map(|i| (i % 211) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        for (dir, mode) in [("ro", 0o555), ("none", 0o000), ("plain", 0o755)] {
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Directory);
            h.set_mode(mode);
            h.set_mtime(1_111_111_111);
            h.set_size(0);
            b.append_data(&mut h, format!("{dir}/"), &b""[..]).unwrap();
            for i in 0..12 {
                file(&mut b, &format!("{dir}/f{i}"), &big, 0o644, (0, 0));
            }
            link(&mut b, &format!("{dir}/l"), &format!("{dir}/f0"));
        }
        let t = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        apply_tar(
            d.path(),
            &mut &t[..],
            &ApplyOptions::new(WhiteoutFormat::Overlay),
        )
        .unwrap();
        for (dir, mode) in [("ro", 0o555), ("none", 0o000), ("plain", 0o755)] {
            let m = fs::metadata(d.path().join(dir)).unwrap();
            assert_eq!(
                (m.mode() & 0o7777, m.mtime()),
                (mode, 1_111_111_111),
                "{dir}"
            );
            if nix::unistd::geteuid().is_root() {
                for i in 0..12 {
                    let p = d.path().join(format!("{dir}/f{i}"));
                    assert_eq!(fs::read(&p).unwrap(), big, "{dir}/f{i}");
                    assert_eq!(fs::metadata(&p).unwrap().mtime(), 1_234_567_890);
                }
            }
        }
        // The tempdir can be removed again.
        for dir in ["ro", "none"] {
            fs::set_permissions(d.path().join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// A directory implied by a layer's entries is copied from the layer below, xattrs
    /// included: a default ACL there decides the mode of files created in the copy, so
    /// those files are still chmod-ed to exactly the entry's mode (overlay stack, no
    /// `etc/` entry in the tar).
    #[test]
    fn file_modes_are_exact_below_a_default_acl_copied_from_below() {
        let (lower, upper) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let etc = lower.path().join("etc");
        fs::create_dir(&etc).unwrap();
        if xattr::set(&etc, "system.posix_acl_default", &acl_owner_only()).is_err() {
            eprintln!("no POSIX ACLs on the test filesystem: nothing to check");
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "top", b"t", 0o644, (0, 0));
        for m in [0o644, 0o755, 0o640] {
            file(&mut b, &format!("etc/f{m:o}"), b"x", m, (0, 0));
        }
        let t = b.into_inner().unwrap();
        let stack = crate::stack::LayerStack::new(
            vec![upper.path().to_path_buf(), lower.path().to_path_buf()],
            WhiteoutFormat::Overlay,
        );
        crate::apply::apply_to_stack(&stack, &mut &t[..]).unwrap();
        assert!(
            xattr::get(upper.path().join("etc"), "system.posix_acl_default")
                .unwrap()
                .is_some(),
            "the implied parent did not copy the ACL"
        );
        for m in [0o644, 0o755, 0o640] {
            let md = fs::metadata(upper.path().join(format!("etc/f{m:o}"))).unwrap();
            assert_eq!(md.mode() & 0o7777, m, "etc/f{m:o}");
        }
        assert_eq!(
            fs::metadata(upper.path().join("top")).unwrap().mode() & 0o7777,
            0o644
        );
    }
}
