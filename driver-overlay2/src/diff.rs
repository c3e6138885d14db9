//! Native diff: the layer's `diff/` *is* its change set, so it is streamed as a tar
//! directly, converting overlay whiteouts back to the OCI format as it goes:
//! a 0/0 char device `x` becomes `.wh.x`, a directory with `trusted.overlay.opaque=y`
//! becomes the directory plus `.wh..wh..opq`. Everything else keeps its full metadata
//! (mode, owners, mtime, xattrs other than `trusted.overlay.*`, hard links, devices).
//!
//! Streamed: a writer thread fills a pipe, the caller reads the other end; memory is
//! constant apart from the table of multiply-linked inodes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::whiteout::{OVERLAY_OPAQUE_VALUE, OVERLAY_OPAQUE_XATTR, WH_OPAQUE, WH_PREFIX};
use tar::{EntryType, Header};

/// Prefix of overlay's private xattrs, never exported.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Whether `m` is an overlay whiteout (0/0 character device).
pub(crate) fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether `p` is an opaque directory.
pub(crate) fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 8];
    matches!(rustix::fs::lgetxattr(p, OVERLAY_OPAQUE_XATTR, &mut buf[..]), Ok(n) if &buf[..n] == OVERLAY_OPAQUE_VALUE)
}

/// All xattrs of `p` (not following symlinks), sorted by name.
pub(crate) fn read_xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 256];
    let n = loop {
        match rustix::fs::llistxattr(p, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need: usize = rustix::fs::llistxattr(p, &mut [0u8; 0][..])?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name_s = std::ffi::OsStr::new(std::str::from_utf8(name).unwrap_or_default());
        if name_s.is_empty() {
            continue;
        }
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(p, name_s, &mut val[..]) {
                Ok(l) => break Some(l),
                Err(rustix::io::Errno::RANGE) => {
                    let need: usize = rustix::fs::lgetxattr(p, name_s, &mut [0u8; 0][..])?;
                    val.resize(need.max(val.len() * 2), 0);
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(len) = len {
            val.truncate(len);
            out.push((name.to_vec(), val));
        }
    }
    out.sort();
    Ok(out)
}

/// Streams the native diff of `diff_dir` as an OCI-whiteout tar.
pub(crate) fn native_diff(diff_dir: PathBuf) -> Result<Box<dyn Read + Send>> {
    let (r, w) = nix::unistd::pipe().ctx("pipe", &diff_dir)?;
    let handle = std::thread::Builder::new()
        .name("overlay2-diff".into())
        .spawn(move || -> Result<()> {
            let out = BufWriter::with_capacity(128 * 1024, File::from(w));
            let out = write_tar(&diff_dir, out)?;
            out.into_inner()
                .map_err(|e| DriverError::io("write diff stream", &diff_dir, e.into_error()))?;
            Ok(())
        })
        .map_err(|e| DriverError::io("spawn diff writer", "overlay2-diff", e))?;
    Ok(Box::new(DiffReader {
        pipe: File::from(r),
        writer: Some(handle),
    }))
}

/// The read end of a diff stream; at EOF it reports the writer's error, if any.
struct DiffReader {
    pipe: File,
    writer: Option<JoinHandle<Result<()>>>,
}

impl Read for DiffReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(h) = self.writer.take() {
                match h.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(io::Error::other(e)),
                    Err(_) => return Err(io::Error::other("diff writer thread panicked")),
                }
            }
        }
        Ok(n)
    }
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts itself.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn base_header(m: &fs::Metadata, ty: EntryType, mode: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mtime(m.mtime().max(0) as u64);
    h.set_size(0);
    h
}

/// Opens `rel` below `root` for reading its content without following any symlink
/// (a running container may swap a file for a link to a host file mid-walk), and
/// checks it is still the inode that was lstat'ed.
fn open_beneath(root: &File, rel: &Path, m: &fs::Metadata) -> io::Result<File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let f = File::from(openat2(root, rel, how).map_err(io::Error::from)?);
    let fm = f.metadata()?;
    if !fm.is_file() || fm.ino() != m.ino() || fm.dev() != m.dev() {
        return Err(io::Error::other("file replaced while the diff was taken"));
    }
    Ok(f)
}

/// Writes the tar of `root` (a layer's `diff/`) to `out`. Content is read fd-relative
/// without following symlinks; metadata of an entry swapped mid-walk may be that of
/// the new entry, but no byte from outside the layer is ever exported.
pub(crate) fn write_tar<W: Write>(root: &Path, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let root_fd = File::open(root).ctx("open directory", root)?;
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    let werr = |e: io::Error, p: &Path| DriverError::io("write diff tar", p, e);
    for e in walker {
        let e = e.map_err(|e| {
            let p = e.path().unwrap_or(root).to_owned();
            DriverError::io("walk", p, e.into())
        })?;
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(path);
        let m = e
            .metadata()
            .map_err(|err| DriverError::io("lstat", path, err.into()))?;
        let ft = m.file_type();
        let perm = m.mode() & 0o7777;

        if is_whiteout(&m) {
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let wh = rel.with_file_name(format!("{WH_PREFIX}{name}"));
            let mut h = base_header(&m, EntryType::Regular, if perm == 0 { 0o600 } else { perm });
            b.append_data(&mut h, &wh, io::empty())
                .map_err(|e| werr(e, path))?;
            continue;
        }

        let xattrs: Vec<_> = read_xattrs(path)
            .ctx("read xattrs", path)?
            .into_iter()
            .filter(|(k, _)| !k.starts_with(OVERLAY_XATTR_PREFIX))
            .collect();
        if !xattrs.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &xattrs {
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(k);
                data.extend(pax_record(&key, v));
            }
            let mut h = Header::new_ustar();
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            let name = format!(
                "PaxHeaders/{}",
                rel.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            let name: String = name.chars().take(99).collect();
            h.set_path(&name).map_err(|e| werr(e, path))?;
            h.set_cksum();
            b.append(&h, data.as_slice()).map_err(|e| werr(e, path))?;
        }

        if ft.is_dir() {
            let mut h = base_header(&m, EntryType::Directory, perm);
            let mut name = rel.as_os_str().to_owned();
            name.push("/");
            b.append_data(&mut h, Path::new(&name), io::empty())
                .map_err(|e| werr(e, path))?;
            if is_opaque(path) {
                let mut h = base_header(&m, EntryType::Regular, perm & 0o777);
                b.append_data(&mut h, rel.join(WH_OPAQUE), io::empty())
                    .map_err(|e| werr(e, path))?;
            }
        } else if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = links.get(&key) {
                    let mut h = base_header(&m, EntryType::Link, perm);
                    b.append_link(&mut h, rel, first)
                        .map_err(|e| werr(e, path))?;
                    continue;
                }
                links.insert(key, rel.to_owned());
            }
            let f = open_beneath(&root_fd, rel, &m).ctx("open", path)?;
            let mut h = base_header(&m, EntryType::Regular, perm);
            h.set_size(m.len());
            // A file that changes size under us would corrupt the stream; take exactly len.
            b.append_data(&mut h, rel, f.take(m.len()))
                .map_err(|e| werr(e, path))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(path).ctx("readlink", path)?;
            let mut h = base_header(&m, EntryType::Symlink, perm);
            b.append_link(&mut h, rel, &target)
                .map_err(|e| werr(e, path))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let ty = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut h = base_header(&m, ty, perm);
            if !ft.is_fifo() {
                let rdev = m.rdev();
                h.set_device_major(libc::major(rdev))
                    .map_err(|e| werr(e, path))?;
                h.set_device_minor(libc::minor(rdev))
                    .map_err(|e| werr(e, path))?;
            }
            b.append_data(&mut h, rel, io::empty())
                .map_err(|e| werr(e, path))?;
        } else {
            tracing::debug!(path = %path.display(), "skipping socket in diff");
        }
    }
    b.into_inner().ctx("finish diff tar", root)
}
