//! Extension headers (PAX `x`, GNU `L`/`K`) read from the raw bytes, not through the
//! tar crate's PAX parser.
//!
//! The tar crate (0.4) splits PAX records at `\n` instead of using each record's length
//! prefix, so a binary value holding 0x0A (a `security.capability` blob, any `user.*`
//! value with a newline) reads as "malformed", and records after it (`path`, `size`,
//! `uid`, `gid`) are silently lost by its non-raw iterator. Its raw mode cannot replace
//! it: raw entries skip GNU sparse maps and PAX `size` framing.
//!
//! So the crate keeps doing the framing (sizes, sparse maps, checksums, "two PAX headers
//! for one member", dangling headers at the end), and a [`Tap`] under it records the
//! bytes it reads between two entries: padding, then the extension headers with their
//! data, then the entry's own header. [`parse`] walks those headers again and reads
//! PAX records by their length prefix (POSIX: `"%d %s=%s\n"`, the length counting the
//! whole record; values are arbitrary bytes).
//!
//! The tape's buffer is reused across entries and bounded by [`TAPE_LIMIT`]; each
//! extension header's data by [`EXT_DATA_LIMIT`].

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::ops::Range;
use std::rc::Rc;

use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::meta;
use super::sparse::Records;
use super::xattr::{Xattrs, PAX_XATTR_PREFIX};

/// PAX keyword prefix of GNU sparse records.
const GNU_SPARSE_PREFIX: &[u8] = b"GNU.sparse.";

/// Tar block size: headers and data are padded to it.
const BLOCK: u64 = 512;
/// Most bytes of metadata recorded between two entries (padding, extension headers
/// and their data, the entry header, GNU sparse extension blocks). Also bounds what
/// the tar crate buffers for a PAX header before we see it.
pub(super) const TAPE_LIMIT: usize = 16 << 20;
/// Most data in one PAX / GNU long-name header. Real ones are a few hundred bytes;
/// xattr values are capped at 64 KiB by the kernel.
pub(super) const EXT_DATA_LIMIT: u64 = 1 << 20;

/// What the tape holds: bytes read by the tar crate since [`Tape::start`].
#[derive(Debug, Default)]
pub(super) struct Tape {
    buf: RefCell<Vec<u8>>,
    /// Stream position of `buf[0]`.
    start: Cell<u64>,
    /// Stream position of the next byte the tar crate reads.
    pos: Cell<u64>,
    on: Cell<bool>,
    /// Bytes taken past the tar reader's position ([`Tape::credit`]).
    credit: Cell<u64>,
}

impl Tape {
    /// Starts recording at the current position (the end of an entry's data).
    pub(super) fn start(&self) {
        self.buf.borrow_mut().clear();
        self.start.set(self.pos.get());
        self.on.set(true);
    }

    /// `n` bytes of the current entry's data were taken from the stream directly
    /// (`shared.rs`): the tar reader's next reads of that data are served from this
    /// credit, without touching the stream (or the reader's buffer).
    pub(super) fn credit(&self, n: u64) {
        self.credit.set(self.credit.get() + n);
    }

    /// Stops recording (the tar crate handed out the entry: its data is not metadata).
    pub(super) fn stop(&self) {
        self.on.set(false);
    }

    /// Stream position of the next byte the tar crate reads.
    pub(super) fn pos(&self) -> u64 {
        self.pos.get()
    }

    /// The last 512 bytes recorded: the header the tar crate read last, when it fails
    /// on one.
    pub(super) fn last_block(&self) -> Option<Vec<u8>> {
        let buf = self.buf.borrow();
        let n = buf.len();
        (n >= BLOCK as usize).then(|| buf[n - BLOCK as usize..].to_vec())
    }

    /// Where the end-of-archive block the tar crate stopped at starts, if it read one.
    /// Recorded after the last entry there is at most 511 bytes of padding, so 512
    /// trailing zeros are the zero block.
    pub(super) fn zero_block_at(&self) -> Option<u64> {
        let buf = self.buf.borrow();
        let n = buf.len();
        (n >= BLOCK as usize && buf[n - BLOCK as usize..].iter().all(|b| *b == 0))
            .then(|| self.start.get() + (n - BLOCK as usize) as u64)
    }
}

/// Reader between the tar crate and the stream, feeding the [`Tape`].
pub(super) struct Tap<R> {
    inner: R,
    tape: Rc<Tape>,
}

impl<R> Tap<R> {
    pub(super) fn new(inner: R, tape: Rc<Tape>) -> Self {
        Tap { inner, tape }
    }
}

/// Lets the tar crate skip padding through [`Archive::entries_with_seek`]: its own
/// skip zeroes a 32 KiB stack buffer on every call, twice per entry even when there is
/// nothing to skip (443 M instructions, 40 % of the parsing thread's user time on a
/// Debian rootfs, callgrind). Only forward relative seeks exist: the bytes are read
/// through [`Tap::read`] (so the tape records them exactly as before) and dropped.
///
/// [`Archive::entries_with_seek`]: tar::Archive::entries_with_seek
impl<R: Read> io::Seek for Tap<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let io::SeekFrom::Current(amt) = pos else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a tar stream only skips forward",
            ));
        };
        let mut left = u64::try_from(amt).map_err(|_| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "a tar stream only skips forward",
            )
        })?;
        let mut buf = [0u8; BLOCK as usize];
        while left > 0 {
            let n = left.min(BLOCK) as usize;
            match self.read(&mut buf[..n]) {
                // The tar crate's own words and kind for this case.
                Ok(0) => return Err(io::Error::other("unexpected EOF during skip")),
                Ok(k) => left -= k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.tape.pos())
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let t = &self.tape;
        let credit = t.credit.get();
        if credit > 0 && !out.is_empty() {
            // Entry data the apply already took from the stream: the bytes of `out`
            // are left as they are (the reader of entry data discards them).
            let n = credit.min(out.len() as u64) as usize;
            t.credit.set(credit - n as u64);
            t.pos.set(t.pos.get() + n as u64);
            return Ok(n);
        }
        let n = self.inner.read(out)?;
        if t.on.get() {
            let mut buf = t.buf.borrow_mut();
            if buf.len() + n > TAPE_LIMIT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more than {} MiB of tar metadata headers before one entry",
                        TAPE_LIMIT >> 20
                    ),
                ));
            }
            buf.extend_from_slice(&out[..n]);
        }
        t.pos.set(t.pos.get() + n as u64);
        Ok(n)
    }
}

/// Extension values for one entry. Ranges index the tape's buffer.
#[derive(Debug, Default, Clone)]
pub(super) struct Ext {
    /// PAX `path`.
    pub path: Option<Range<usize>>,
    /// PAX `linkpath`.
    pub linkpath: Option<Range<usize>>,
    /// GNU `L` data, trailing NULs stripped.
    pub long_name: Option<Range<usize>>,
    /// GNU `K` data, trailing NULs stripped.
    pub long_link: Option<Range<usize>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<TimeSpec>,
    pub atime: Option<TimeSpec>,
    /// `GNU.sparse.*` records (PAX sparse files).
    pub sparse: Records,
}

impl Ext {
    /// The entry name: `GNU.sparse.name` (the header holds `GNUSparseFile.<pid>/<name>`),
    /// else the GNU long name, else PAX `path` (the tar crate's and Go's order).
    pub(super) fn name(&self) -> Option<Range<usize>> {
        self.sparse
            .name
            .clone()
            .or_else(|| self.long_name.clone())
            .or_else(|| self.path.clone())
    }

    /// The link target: GNU long link, else PAX `linkpath`.
    pub(super) fn link(&self) -> Option<Range<usize>> {
        self.long_link.clone().or_else(|| self.linkpath.clone())
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads the extension headers recorded before the entry whose header starts at
/// stream position `header_pos`; xattrs go to `xattrs` (cleared by the caller).
///
/// `f` gets the tape's bytes and the parsed values (ranges index those bytes).
pub(super) fn parse<T>(
    tape: &Tape,
    header_pos: u64,
    xattrs: &mut Xattrs,
    f: impl FnOnce(&[u8], &Ext) -> T,
) -> io::Result<T> {
    let buf = tape.buf.borrow();
    let start = tape.start.get();
    // Headers begin at the first block boundary after the previous entry's data.
    let first = start.div_ceil(BLOCK) * BLOCK;
    let end = start + buf.len() as u64;
    if header_pos < first || header_pos + BLOCK > end {
        return Err(bad(format!(
            "tar reader position mismatch (header at {header_pos}, recorded {start}..{end})"
        )));
    }
    let base = (first - start) as usize;
    let region = base..(header_pos - start) as usize;
    let mut ext = Ext::default();
    let mut o = region.start;
    while o < region.end {
        if region.end - o < BLOCK as usize {
            return Err(bad("extension header cut short"));
        }
        let h = tar::Header::from_byte_slice(&buf[o..o + BLOCK as usize]);
        let ty = h.entry_type();
        let size = h.entry_size()?;
        if size > EXT_DATA_LIMIT {
            return Err(bad(format!(
                "{} header of {size} bytes (limit {EXT_DATA_LIMIT})",
                kind_name(ty)
            )));
        }
        let data = o + BLOCK as usize..o + BLOCK as usize + size as usize;
        let next = o + BLOCK as usize + (size.div_ceil(BLOCK) * BLOCK) as usize;
        if next > region.end {
            return Err(bad(format!("{} header data cut short", kind_name(ty))));
        }
        match ty {
            EntryType::XHeader => pax_records(&buf, data, &mut ext, xattrs)?,
            EntryType::GNULongName => ext.long_name = Some(trim_nuls(&buf, data)),
            EntryType::GNULongLink => ext.long_link = Some(trim_nuls(&buf, data)),
            other => {
                return Err(bad(format!(
                    "unexpected {:?} header before the entry",
                    char::from(other.as_byte())
                )))
            }
        }
        o = next;
    }
    Ok(f(&buf, &ext))
}

fn kind_name(ty: EntryType) -> &'static str {
    match ty {
        EntryType::XHeader => "PAX",
        EntryType::GNULongName => "GNU long name",
        EntryType::GNULongLink => "GNU long link",
        _ => "extension",
    }
}

fn trim_nuls(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.end > r.start && buf[r.end - 1] == 0 {
        r.end -= 1;
    }
    r
}

/// Parses the PAX records in `buf[data]`; a later record for the same key wins.
fn pax_records(
    buf: &[u8],
    data: Range<usize>,
    ext: &mut Ext,
    xattrs: &mut Xattrs,
) -> io::Result<()> {
    let mut at = data.start;
    while at < data.end {
        let rest = &buf[at..data.end];
        // Some writers pad the data with NULs.
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let (key, value) = record(rest).map_err(|why| {
            bad(format!(
                "malformed PAX record at byte {}: {why}",
                at - data.start
            ))
        })?;
        let len = record_len(rest);
        let v = at + (value.as_ptr() as usize - rest.as_ptr() as usize);
        let v = v..v + value.len();
        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
            xattrs.push(name, value);
        } else if let Some(k) = key.strip_prefix(GNU_SPARSE_PREFIX) {
            ext.sparse.record(k, buf, v)?;
        } else {
            // An empty value unsets the keyword (POSIX): the header field applies.
            let set = !value.is_empty();
            match key {
                b"path" => ext.path = set.then_some(v),
                b"linkpath" => ext.linkpath = set.then_some(v),
                b"size" => ext.size = number(key, value)?,
                b"uid" => ext.uid = number(key, value)?,
                b"gid" => ext.gid = number(key, value)?,
                // Unparseable times are ignored (the header's mtime applies).
                b"mtime" => ext.mtime = meta::parse_pax_time(value),
                b"atime" => ext.atime = meta::parse_pax_time(value),
                _ => {}
            }
        }
        at += len;
    }
    Ok(())
}

/// Length of the record at the start of `rest` (already validated by [`record`]).
fn record_len(rest: &[u8]) -> usize {
    rest.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0usize, |n, b| n * 10 + usize::from(b - b'0'))
}

/// Splits the record at the start of `rest` into key and value.
fn record(rest: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err("length is not a decimal number".into());
    }
    // Longer than any usize: refuse before it overflows.
    if digits > 19 {
        return Err("length has too many digits".into());
    }
    if rest.get(digits) != Some(&b' ') {
        return Err("length not followed by a space".into());
    }
    let len = record_len(rest);
    if len > rest.len() {
        return Err(format!(
            "length {len} runs past the end of the header data ({} bytes left)",
            rest.len()
        ));
    }
    // Length digits, space, at least `k=`, newline.
    if len < digits + 4 {
        return Err(format!("length {len} is too short for a record"));
    }
    let rec = &rest[digits + 1..len];
    let Some((&b'\n', kv)) = rec.split_last() else {
        return Err(format!(
            "record of length {len} does not end with a newline"
        ));
    };
    let Some(eq) = kv.iter().position(|b| *b == b'=') else {
        return Err("record has no '='".into());
    };
    if eq == 0 {
        return Err("record has an empty keyword".into());
    }
    Ok((&kv[..eq], &kv[eq + 1..]))
}

/// A decimal PAX number; empty means unset.
fn number(key: &[u8], v: &[u8]) -> io::Result<Option<u64>> {
    if v.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(v)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            bad(format!(
                "PAX {} is not a decimal number: {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(v)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_by_length() {
        let v = b"a\nb\0c";
        let mut data = Vec::new();
        let body = [b"SCHILY.xattr.user.x=".as_slice(), v, b"\n"].concat();
        data.extend_from_slice(format!("{} ", body.len() + 3).as_bytes());
        data.extend_from_slice(&body);
        data.extend_from_slice(b"12 path=a/b\n");
        let mut ext = Ext::default();
        let mut xs = Xattrs::default();
        pax_records(&data, 0..data.len(), &mut ext, &mut xs).unwrap();
        assert_eq!(&data[ext.path.unwrap()], b"a/b");
        let got: Vec<_> = xs.iter().collect();
        assert_eq!(got, vec![(b"user.x".as_slice(), v.as_slice())]);
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [
            b"x path=a\n".as_slice(),
            b"99 path=a\n",
            b"5 path=a\n",
            b"10 path=ab\n",
            b"9 patha\n\n",
            b"10path=ab\n",
            b"9 =value\n",
            b"99999999999999999999 k=v\n",
        ] {
            let mut ext = Ext::default();
            let mut xs = Xattrs::default();
            assert!(
                pax_records(bad, 0..bad.len(), &mut ext, &mut xs).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn empty_values_unset_and_nul_padding_ends() {
        let data = b"8 path=\n12 uid=1000\n\0\0\0";
        let mut ext = Ext::default();
        let mut xs = Xattrs::default();
        pax_records(data, 0..data.len(), &mut ext, &mut xs).unwrap();
        assert_eq!(ext.path, None);
        assert_eq!(ext.uid, Some(1000));
    }
}
