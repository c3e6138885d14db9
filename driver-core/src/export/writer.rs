//! The one tar header format of every exported layer (see the module doc of
//! [`crate::export`] for the rules). Headers are built byte by byte here, not by the
//! `tar` crate's `Builder`, so the output is fixed by this file alone and a failed
//! export never writes an end-of-archive marker.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::changes::read_xattrs;
use crate::error::{DriverError, IoContext, Result};
use crate::whiteout::WH_PREFIX;

/// Tar block size.
const BLOCK: usize = 512;
/// Xattrs overlayfs keeps for itself (opaque, origin, impure, redirect); never layer
/// content, never exported or compared.
pub(crate) const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
/// Largest values the ustar octal fields hold (7 digits for ids, 11 for size/mtime);
/// larger ones go into PAX records.
const USTAR_MAX_ID: u64 = 0o7777777;
const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// Name of every PAX extended header (fixed, so output does not depend on the entry).
const PAX_NAME: &[u8] = b"././@PaxHeader";
/// Mode of whiteout entries: a whiteout's only meaning is its name (OCI layer.md), so
/// it carries fixed metadata (0644, 0:0, mtime 0) whatever the driver stored.
const WHITEOUT_MODE: u32 = 0o644;
/// Read buffer for file content.
const COPY_BUF: usize = 64 * 1024;

/// What one header says, before encoding.
#[derive(Debug, Default)]
struct Hdr {
    name: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    typeflag: u8,
    link: Vec<u8>,
    dev: Option<(u64, u64)>,
    /// xattr name -> value (never `trusted.overlay.*`).
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes `width - 1` octal digits and a NUL into `field`; false when `v` does not fit.
fn octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// `<len> <key>=<value>\n`, where len counts the whole record including itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
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

/// Splits `name` into ustar (prefix, name): the rightmost `/` that leaves a non-empty
/// name of at most 100 bytes and a prefix of at most 155.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    let last = name.len().saturating_sub(1).min(155);
    (0..=last).rev().find_map(|i| {
        let tail = &name[i + 1..];
        (name[i] == b'/' && !tail.is_empty() && tail.len() <= 100).then(|| (&name[..i], tail))
    })
}

/// One ustar block with the common fields; `chksum` filled last.
fn ustar_block(h: &Hdr, pax: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    match split_ustar(&h.name) {
        Some((prefix, name)) => {
            b[..name.len()].copy_from_slice(name);
            b[345..345 + prefix.len()].copy_from_slice(prefix);
        }
        None => {
            pax.insert(b"path".to_vec(), h.name.clone());
            b[..100].copy_from_slice(&h.name[..100]);
        }
    }
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    for (field, v, key) in [(108..116, h.uid, "uid"), (116..124, h.gid, "gid")] {
        if v > USTAR_MAX_ID || !octal(&mut b[field.clone()], v) {
            octal(&mut b[field], 0);
            pax.insert(key.as_bytes().to_vec(), v.to_string().into_bytes());
        }
    }
    if h.size > USTAR_MAX_SIZE || !octal(&mut b[124..136], h.size) {
        octal(&mut b[124..136], 0);
        pax.insert(b"size".to_vec(), h.size.to_string().into_bytes());
    }
    let mtime_ok = u64::try_from(h.mtime)
        .ok()
        .filter(|&m| m <= USTAR_MAX_SIZE)
        .is_some_and(|m| octal(&mut b[136..148], m));
    if !mtime_ok {
        octal(&mut b[136..148], 0);
        pax.insert(b"mtime".to_vec(), h.mtime.to_string().into_bytes());
    }
    b[156] = h.typeflag;
    if h.link.len() <= 100 {
        b[157..157 + h.link.len()].copy_from_slice(&h.link);
    } else {
        pax.insert(b"linkpath".to_vec(), h.link.clone());
        b[157..257].copy_from_slice(&h.link[..100]);
    }
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let (major, minor) = h.dev.unwrap_or((0, 0));
    octal(&mut b[329..337], major);
    octal(&mut b[337..345], minor);
    b
}

fn set_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// The header blocks for `h`: a PAX extended header (records sorted by key) when
/// something does not fit ustar or there are xattrs, then the ustar block.
fn encode(h: &Hdr) -> Vec<u8> {
    let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, v) in &h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax.insert(key, v.clone());
    }
    let mut main = ustar_block(h, &mut pax);
    set_checksum(&mut main);
    let mut out = Vec::with_capacity(3 * BLOCK);
    if !pax.is_empty() {
        let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let ph = Hdr {
            name: PAX_NAME.to_vec(),
            mode: 0o644,
            size: data.len() as u64,
            typeflag: b'x',
            ..Hdr::default()
        };
        let mut unused = BTreeMap::new();
        let mut b = ustar_block(&ph, &mut unused);
        set_checksum(&mut b);
        out.extend_from_slice(&b);
        out.extend_from_slice(&data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }
    out.extend_from_slice(&main);
    out
}

/// Writes exported entries in the fixed format. Keeps the hard-link table
/// ((dev, ino) -> first exported path) and nothing else.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    /// Directory the entries' content is read from (opened once; files are opened
    /// beneath it without following symlinks).
    root: PathBuf,
    root_fd: File,
    links: HashMap<(u64, u64), PathBuf>,
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer of entries whose content lives below `root`.
    pub(crate) fn new(root: &Path, out: W) -> Result<Self> {
        Ok(TarWriter {
            out,
            root: root.to_path_buf(),
            root_fd: File::open(root).ctx("open export root", root)?,
            links: HashMap::new(),
            buf: vec![0u8; COPY_BUF],
        })
    }

    fn put(&mut self, bytes: &[u8], rel: &Path) -> Result<()> {
        self.out.write_all(bytes).ctx("write tar", rel)
    }

    /// A whiteout `.wh.<name>` for the deleted path `rel`.
    pub(crate) fn whiteout(&mut self, rel: &Path) -> Result<()> {
        let name = rel.file_name().unwrap_or_default();
        let mut wh = WH_PREFIX.as_bytes().to_vec();
        wh.extend_from_slice(name.as_bytes());
        let path = rel.with_file_name(OsStr::from_bytes(&wh));
        let h = Hdr {
            name: path.as_os_str().as_bytes().to_vec(),
            mode: WHITEOUT_MODE,
            typeflag: b'0',
            ..Hdr::default()
        };
        self.put(&encode(&h), rel)
    }

    /// The entry at `rel` below the root, whose `lstat` is `md`. Sockets are skipped
    /// (tar cannot hold them; neither does moby).
    ///
    /// A name starting with `.wh.` is refused ([`DriverError::UnsafeEntry`]): in a layer
    /// tar it is a whiteout (OCI layer.md), so written as a file it would delete the
    /// name it hides on import and lose the file (and the imported tar would no longer
    /// match the layer's content). Such names never come from an image; vfs and
    /// overlay2 containers can make them (the userspace aufs refuses to), so `commit`
    /// and `export` of such a container fail naming the entry, on every driver.
    pub(crate) fn entry(&mut self, rel: &Path, md: &Metadata) -> Result<()> {
        if rel
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(WH_PREFIX.as_bytes()))
        {
            return Err(DriverError::UnsafeEntry {
                entry: rel.display().to_string(),
                reason: format!(
                    "a name starting with {WH_PREFIX} is a whiteout in a layer tar; \
                     it cannot be written as a file (rename or remove it)"
                ),
            });
        }
        let full = self.root.join(rel);
        let ft = md.file_type();
        let xattrs = read_xattrs(&full)?
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .filter(|(k, _)| !k.starts_with(OVERLAY_XATTR_PREFIX))
            .collect();
        let mut h = Hdr {
            name: rel.as_os_str().as_bytes().to_vec(),
            mode: md.mode() & 0o7777,
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: md.mtime(),
            xattrs,
            ..Hdr::default()
        };
        let mut content: Option<File> = None;
        if ft.is_dir() {
            h.typeflag = b'5';
            h.name.push(b'/');
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            match self.links.get(&key) {
                Some(first) if md.nlink() > 1 => {
                    h.typeflag = b'1';
                    h.link = first.as_os_str().as_bytes().to_vec();
                }
                _ => {
                    if md.nlink() > 1 {
                        self.links.insert(key, rel.to_path_buf());
                    }
                    h.typeflag = b'0';
                    h.size = md.size();
                    content = Some(self.open_file(rel, md)?);
                }
            }
        } else if ft.is_symlink() {
            h.typeflag = b'2';
            h.link = std::fs::read_link(&full)
                .ctx("read link", &full)?
                .into_os_string()
                .into_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            h.typeflag = if ft.is_char_device() { b'3' } else { b'4' };
            h.dev = Some((libc::major(md.rdev()).into(), libc::minor(md.rdev()).into()));
        } else if ft.is_fifo() {
            h.typeflag = b'6';
        } else {
            tracing::debug!(path = %full.display(), "skipping socket");
            return Ok(());
        }
        self.put(&encode(&h), rel)?;
        if let Some(f) = content {
            self.copy_exact(f, &full, md.size())?;
        }
        Ok(())
    }

    /// Opens the regular file `rel` beneath the root without following any symlink (a
    /// running container may swap a file for a link to a host file mid-walk) and checks
    /// it is still the inode that was `lstat`ed.
    fn open_file(&self, rel: &Path, md: &Metadata) -> Result<File> {
        use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
        let full = self.root.join(rel);
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let f = File::from(
            openat2(self.root_fd.as_fd(), rel, how)
                .map_err(io::Error::from)
                .ctx("open", &full)?,
        );
        let fm = f.metadata().ctx("stat", &full)?;
        if !fm.is_file() || fm.ino() != md.ino() || fm.dev() != md.dev() {
            return Err(DriverError::io(
                "export",
                full,
                io::Error::other("file replaced while being exported"),
            ));
        }
        Ok(f)
    }

    /// Copies exactly `size` bytes of `f` (the size its header announced) and pads the
    /// block. A file that ends early (shrank) or still has bytes after `size` (grew), or
    /// whose size is no longer `size` once read, is an error naming it: the stream is
    /// never a short or misaligned entry.
    fn copy_exact(&mut self, mut f: File, full: &Path, size: u64) -> Result<()> {
        let changed = |what: String| {
            DriverError::io(
                "export",
                full,
                io::Error::new(io::ErrorKind::InvalidData, what),
            )
        };
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match f.read(&mut self.buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DriverError::io("read", full, e)),
            };
            if n == 0 {
                return Err(changed(format!(
                    "file shrank while being exported: lstat said {size} bytes, it ended after {}",
                    size - left
                )));
            }
            self.out.write_all(&self.buf[..n]).ctx("write tar", full)?;
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        let extra = loop {
            match f.read(&mut probe) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DriverError::io("read", full, e)),
            }
        };
        let now = f.metadata().ctx("stat", full)?.size();
        if extra > 0 || now != size {
            return Err(changed(format!(
                "file size changed while being exported: lstat said {size} bytes, now {now}"
            )));
        }
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.out
            .write_all(&[0u8; BLOCK][..pad])
            .ctx("write tar", full)
    }

    /// Writes the end-of-archive marker (two zero blocks) and returns the output.
    pub(crate) fn finish(mut self) -> Result<W> {
        let root = self.root.clone();
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .ctx("write tar", &root)?;
        self.out.flush().ctx("write tar", &root)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_split_table() {
        let long_dir = "d".repeat(120);
        let name = format!("{long_dir}/file");
        assert_eq!(
            split_ustar(name.as_bytes()),
            Some((long_dir.as_bytes(), &b"file"[..]))
        );
        assert_eq!(split_ustar(b"short"), Some((&b""[..], &b"short"[..])));
        let no_slash = "x".repeat(101);
        assert_eq!(split_ustar(no_slash.as_bytes()), None);
        let dir_only = format!("{}/", "y".repeat(150));
        assert_eq!(split_ustar(dir_only.as_bytes()), None, "empty name part");
    }

    #[test]
    fn pax_only_when_needed_and_sorted() {
        let plain = Hdr {
            name: b"a".to_vec(),
            mode: 0o644,
            typeflag: b'0',
            ..Hdr::default()
        };
        assert_eq!(encode(&plain).len(), BLOCK);
        let big = Hdr {
            name: "n".repeat(300).into_bytes(),
            uid: 1 << 30,
            mtime: -1,
            xattrs: vec![(b"user.b".to_vec(), b"2".to_vec())],
            typeflag: b'0',
            ..Hdr::default()
        };
        let enc = encode(&big);
        assert_eq!(enc[156], b'x');
        let data = String::from_utf8_lossy(&enc[BLOCK..2 * BLOCK]).into_owned();
        let keys: Vec<&str> = data
            .lines()
            .filter_map(|l| l.split_once(' ').and_then(|(_, r)| r.split_once('=')))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["SCHILY.xattr.user.b", "mtime", "path", "uid"]);
        assert!(data.contains("mtime=-1\n"), "{data}");
    }
}
