//! Bounds on one layer's decompressed stream: its size in bytes and its number of tar
//! headers, so a decompression bomb (a small gzip or zstd blob that inflates to
//! terabytes, or to millions of empty entries) ends with a clear error instead of
//! filling the disk or the inode table.
//!
//! The bounds are checked on the decompressed bytes as they stream from the decoder to
//! the driver's apply ([`Limited`]), so the stream stops at the first byte past a
//! limit; the import then fails and removes the half-applied layer as for any other
//! error. Entries are counted by walking the 512-byte tar blocks as they pass
//! ([`TarBlocks`]): every non-zero header block counts, extended headers (PAX `x`/`g`,
//! GNU `L`/`K`) included, so a file with a long name counts twice.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Tar block size.
const BLOCK: usize = 512;

/// Limits on one layer of an import (`[limits]` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Largest decompressed layer tar, bytes (`max_layer_size`).
    pub max_layer_size: u64,
    /// Most tar headers in one layer (`max_layer_entries`).
    pub max_layer_entries: u64,
}

impl ImportLimits {
    /// No bounds (a commit's own changes, which are not untrusted input).
    pub const NONE: ImportLimits = ImportLimits {
        max_layer_size: u64::MAX,
        max_layer_entries: u64::MAX,
    };
    /// Default `max_layer_size`: 64 GiB. The largest public images have layers of a
    /// few GiB; a bomb is stopped before it takes a disk's worth.
    pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;
    /// Default `max_layer_entries`: 4 million. A Debian root filesystem has ~20,000
    /// entries and the largest layers seen (SDKs, node_modules) a few hundred thousand.
    pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 4_000_000;
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_layer_size: Self::DEFAULT_MAX_LAYER_SIZE,
            max_layer_entries: Self::DEFAULT_MAX_LAYER_ENTRIES,
        }
    }
}

/// Which limit a stream went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_layer_size`.
    Size,
    /// `max_layer_entries`.
    Entries,
}

impl LimitKind {
    /// The config key.
    pub fn key(self) -> &'static str {
        match self {
            LimitKind::Size => "max_layer_size",
            LimitKind::Entries => "max_layer_entries",
        }
    }
}

/// Shared flag telling which limit tripped (read after the apply failed).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tripped(Arc<AtomicU8>);

impl Tripped {
    pub(crate) fn get(&self) -> Option<LimitKind> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(LimitKind::Size),
            2 => Some(LimitKind::Entries),
            _ => None,
        }
    }
    fn set(&self, k: LimitKind) {
        let v = match k {
            LimitKind::Size => 1,
            LimitKind::Entries => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

/// A blob of a known size (OCI descriptor `size`): reads at
/// most `size` bytes of `inner` and fails with [`io::ErrorKind::InvalidData`] on the
/// first byte beyond, so a blob longer than its descriptor is refused without reading
/// the rest of it (a shorter one fails the size check after the stream).
pub(crate) struct SizeCapped<R> {
    inner: R,
    size: u64,
    left: u64,
}

impl<R: Read> SizeCapped<R> {
    pub(crate) fn new(inner: R, size: u64) -> Self {
        SizeCapped {
            inner,
            size,
            left: size,
        }
    }
}

impl<R: Read> Read for SizeCapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob is longer than the {} bytes its descriptor gives",
                        self.size
                    ),
                )),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A reader that fails with [`io::ErrorKind::InvalidData`] once the stream goes past
/// `limits`, and records which limit in [`Tripped`].
pub(crate) struct Limited<R> {
    inner: R,
    limits: ImportLimits,
    bytes: u64,
    blocks: TarBlocks,
    tripped: Tripped,
}

impl<R: Read> Limited<R> {
    pub(crate) fn new(inner: R, limits: ImportLimits) -> (Self, Tripped) {
        let tripped = Tripped::default();
        (
            Limited {
                inner,
                limits,
                bytes: 0,
                blocks: TarBlocks::default(),
                tripped: tripped.clone(),
            },
            tripped,
        )
    }

    fn over(&self, k: LimitKind) -> io::Error {
        self.tripped.set(k);
        let msg = match k {
            LimitKind::Size => format!(
                "decompressed layer is larger than {} bytes ([limits] max_layer_size)",
                self.limits.max_layer_size
            ),
            LimitKind::Entries => format!(
                "layer has more than {} tar entries ([limits] max_layer_entries)",
                self.limits.max_layer_entries
            ),
        };
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(k) = self.tripped.get() {
            return Err(self.over(k));
        }
        // Never hand out a byte past the size limit: read at most one byte beyond it.
        let room = self
            .limits
            .max_layer_size
            .saturating_sub(self.bytes)
            .saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.bytes += n as u64;
        if self.bytes > self.limits.max_layer_size {
            return Err(self.over(LimitKind::Size));
        }
        self.blocks.feed(&buf[..n]);
        if self.blocks.headers > self.limits.max_layer_entries {
            return Err(self.over(LimitKind::Entries));
        }
        Ok(n)
    }
}

/// Walks a tar stream's 512-byte blocks and counts header blocks: a header's size field
/// (octal or GNU base-256) says how many data blocks to skip; old GNU sparse headers
/// (`S`) are followed by extension blocks while their `isextended` byte is set. A
/// malformed header is the apply's to refuse; here it only counts as a header.
#[derive(Debug, Default)]
pub(crate) struct TarBlocks {
    block: Vec<u8>,
    /// Bytes of entry data (with padding) still to pass before the next header.
    skip: u64,
    /// Data to skip after the sparse extension blocks.
    after_ext: u64,
    in_ext: bool,
    /// Header blocks seen.
    pub(crate) headers: u64,
}

impl TarBlocks {
    pub(crate) fn feed(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            if self.skip > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = buf.len().min(BLOCK - self.block.len());
            self.block.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.block.len() == BLOCK {
                self.header();
                self.block.clear();
            }
        }
    }

    fn header(&mut self) {
        let b = &self.block;
        if self.in_ext {
            self.in_ext = b[504] != 0;
            if !self.in_ext {
                self.skip = self.after_ext;
            }
            return;
        }
        if b.iter().all(|x| *x == 0) {
            return;
        }
        self.headers += 1;
        let size = field_size(&b[124..136]);
        let padded = size.saturating_add((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64);
        if b[156] == b'S' && b[482] != 0 {
            self.in_ext = true;
            self.after_ext = padded;
        } else {
            self.skip = padded;
        }
    }
}

/// A tar size field: octal (spaces/NULs around it) or GNU base-256 (high bit of the
/// first byte set; a negative size reads as 0, the apply refuses it).
fn field_size(f: &[u8]) -> u64 {
    if f[0] & 0x80 != 0 {
        if f[0] & 0x40 != 0 {
            return 0;
        }
        let mut v: u64 = u64::from(f[0] & 0x3f);
        for &x in &f[1..] {
            v = v.saturating_mul(256).saturating_add(u64::from(x));
        }
        return v;
    }
    let s: String = f
        .iter()
        .map(|&c| c as char)
        .skip_while(|c| *c == ' ' || *c == '\0')
        .take_while(|c| c.is_digit(8))
        .collect();
    u64::from_str_radix(&s, 8).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, size) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &vec![7u8; *size][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn counts_headers_in_any_chunking() {
        let long = "d/".repeat(80) + "f";
        let t = tar(&[("a", 0), ("b", 511), ("c", 513), (&long, 3)]);
        for chunk in [1, 7, 512, 4096, t.len()] {
            let mut c = TarBlocks::default();
            for part in t.chunks(chunk) {
                c.feed(part);
            }
            // 4 entries + the GNU long-name header of the last one.
            assert_eq!(c.headers, 5, "chunk {chunk}");
        }
    }

    #[test]
    fn base256_and_octal_sizes() {
        assert_eq!(field_size(b"00000001000\0"), 512);
        assert_eq!(field_size(b"     1000 \0\0"), 512);
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x02;
        f[10] = 0x01;
        assert_eq!(field_size(&f), 258);
        f[0] = 0xff;
        assert_eq!(field_size(&f), 0);
    }

    #[test]
    fn stops_at_the_limits() {
        let t = tar(&[("a", 100), ("b", 100), ("c", 100)]);
        let lim = ImportLimits {
            max_layer_size: u64::MAX,
            max_layer_entries: 2,
        };
        let (mut r, tripped) = Limited::new(&t[..], lim);
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(tripped.get(), Some(LimitKind::Entries), "{e}");
        assert!(e.to_string().contains("max_layer_entries"), "{e}");

        let lim = ImportLimits {
            max_layer_size: 1000,
            max_layer_entries: u64::MAX,
        };
        let (mut r, tripped) = Limited::new(&t[..], lim);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(tripped.get(), Some(LimitKind::Size), "{e}");
        assert!(out.len() <= 1000, "handed out {} bytes", out.len());

        let (mut r, tripped) = Limited::new(&t[..], ImportLimits::default());
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), t.len() as u64);
        assert_eq!(tripped.get(), None);
    }
}
