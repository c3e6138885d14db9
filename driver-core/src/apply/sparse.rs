//! GNU sparse files: the old GNU `S` entry type and the three PAX encodings GNU tar
//! writes with `--format=posix -S` (GNU tar manual, "Storing Sparse Files", and
//! sparse.c / xheader.c of GNU tar 1.34):
//!
//! | version | map                                           | real size             | name                 |
//! |---------|-----------------------------------------------|-----------------------|----------------------|
//! | `S`     | GNU header + extension blocks (tar crate)     | header `realsize`     | header               |
//! | 0.0     | repeated `GNU.sparse.offset`/`numbytes` pairs | `GNU.sparse.size`     | header / `path`      |
//! | 0.1     | `GNU.sparse.map=off,len,off,len,...`          | `GNU.sparse.size`     | `GNU.sparse.name`    |
//! | 1.0     | decimal lines at the start of the data, padded to 512 (count, then offset and length of each region) | `GNU.sparse.realsize` | `GNU.sparse.name` |
//!
//! 0.1 and 1.0 members are named `<dir>/GNUSparseFile.<pid>/<name>` in the header; the
//! real name is `GNU.sparse.name`, which wins over `path` (as in GNU tar and Go). A
//! version is `GNU.sparse.major`/`minor` when present (1.0, or 0.0/0.1), else 0.1 when
//! a `GNU.sparse.map` record is there, else 0.0.
//!
//! The regions' data follows in order. GNU tar pads each region to 512 bytes in the
//! archive while other writers (libarchive) store them back to back; the two agree
//! when every region but the last holding data is a multiple of 512 bytes, which is
//! what file systems give (regions come from `SEEK_DATA`/`SEEK_HOLE`). A map where
//! they would disagree is refused, as is a map out of order, overlapping, running
//! past the real size, or listing more or fewer bytes than the entry holds: each is a
//! [`DriverError::Tar`] naming the entry, before anything is written.
//!
//! Files are written with holes: each region is written at its offset (seek), nothing
//! is written for a hole, and the length is set to the real size at the end. For `S`
//! entries the tar crate hands out the expanded content (zeros for holes); runs of
//! zeros it returns are seeked over.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;

use tar::EntryType;

use super::Applier;
use crate::error::{DriverError, Result};

/// Tar block size.
const BLOCK: u64 = 512;
/// Most regions in one sparse map: 16 bytes each in memory. Real maps have a handful;
/// a file with a million data regions is not a layer anyone builds.
pub(super) const MAX_REGIONS: usize = 1 << 20;
/// Longest decimal number in a sparse map (u64::MAX has 20 digits).
const MAX_DIGITS: usize = 20;

/// `GNU.sparse.*` PAX records of one entry. Ranges index the tape buffer.
#[derive(Debug, Default, Clone)]
pub(super) struct Records {
    /// Some `GNU.sparse.*` record was seen.
    pub any: bool,
    pub major: Option<u64>,
    pub minor: Option<u64>,
    /// `GNU.sparse.name`: the real member name (0.1, 1.0).
    pub name: Option<Range<usize>>,
    /// `GNU.sparse.size` (0.x real size).
    pub size: Option<u64>,
    /// `GNU.sparse.realsize` (1.0 real size).
    pub realsize: Option<u64>,
    pub numblocks: Option<u64>,
    /// `GNU.sparse.map` text (0.1), at most one PAX header's data.
    pub map: Option<Vec<u8>>,
    /// `GNU.sparse.offset` / `GNU.sparse.numbytes` pairs in record order (0.0).
    pub pairs: Vec<(u64, Option<u64>)>,
}

impl Records {
    /// Takes one `GNU.sparse.<key>` record; `v` is the value's range in `buf`.
    pub(super) fn record(&mut self, key: &[u8], buf: &[u8], v: Range<usize>) -> io::Result<()> {
        self.any = true;
        let value = &buf[v.clone()];
        match key {
            b"major" => self.major = Some(number(key, value)?),
            b"minor" => self.minor = Some(number(key, value)?),
            b"name" => self.name = (!value.is_empty()).then_some(v),
            b"size" => self.size = Some(number(key, value)?),
            b"realsize" => self.realsize = Some(number(key, value)?),
            b"numblocks" => self.numblocks = Some(number(key, value)?),
            b"map" => self.map = Some(value.to_vec()),
            b"offset" => {
                if self.pairs.len() >= MAX_REGIONS {
                    return Err(bad(format!("more than {MAX_REGIONS} sparse regions")));
                }
                if let Some((_, None)) = self.pairs.last() {
                    return Err(bad(
                        "GNU.sparse.offset follows an offset without its GNU.sparse.numbytes",
                    ));
                }
                self.pairs.push((number(key, value)?, None));
            }
            b"numbytes" => match self.pairs.last_mut() {
                Some((_, len @ None)) => *len = Some(number(key, value)?),
                _ => {
                    return Err(bad(
                        "GNU.sparse.numbytes without a GNU.sparse.offset before it",
                    ))
                }
            },
            // Unknown GNU.sparse keys are ignored, like unknown PAX keys.
            _ => {}
        }
        Ok(())
    }
}

/// How a regular file's content is laid out in the archive.
#[derive(Debug)]
pub(super) enum Layout {
    /// The data is the content.
    Plain,
    /// Old GNU `S`: the tar crate expands it; zero runs are seeked over.
    ExpandedByReader,
    /// PAX sparse: `regions` of the real file, their data back to back.
    Map {
        regions: Vec<(u64, u64)>,
        real_size: u64,
    },
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn number(key: &[u8], v: &[u8]) -> io::Result<u64> {
    parse_u64(v).ok_or_else(|| {
        bad(format!(
            "GNU.sparse.{} is not a decimal number: {:?}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(v)
        ))
    })
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > MAX_DIGITS || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a 0.1 `GNU.sparse.map` (`off,len,off,len,...`; empty means no regions).
fn parse_map_01(text: &[u8]) -> io::Result<Vec<(u64, u64)>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let nums: Vec<&[u8]> = text.split(|b| *b == b',').collect();
    if nums.len() % 2 != 0 {
        return Err(bad(format!(
            "GNU.sparse.map has an odd count of numbers ({})",
            nums.len()
        )));
    }
    if nums.len() / 2 > MAX_REGIONS {
        return Err(bad(format!("more than {MAX_REGIONS} sparse regions")));
    }
    nums.chunks(2)
        .map(|p| match (parse_u64(p[0]), parse_u64(p[1])) {
            (Some(o), Some(l)) => Ok((o, l)),
            _ => Err(bad(format!(
                "GNU.sparse.map entry {:?},{:?} is not two decimal numbers",
                String::from_utf8_lossy(p[0]),
                String::from_utf8_lossy(p[1])
            ))),
        })
        .collect()
}

/// Reads a 1.0 map from the start of the entry's data: decimal numbers one per line
/// (region count, then offset and length of each), padded with NULs to 512 bytes.
/// Returns the regions and the bytes the map took (a multiple of 512).
fn read_map_10(data: &mut dyn Read) -> io::Result<(Vec<(u64, u64)>, u64)> {
    let mut block = [0u8; BLOCK as usize];
    let mut used = 0u64;
    // The current block and the read position in it.
    let mut at = BLOCK as usize;
    let mut next_number = |block: &mut [u8; BLOCK as usize], at: &mut usize, used: &mut u64| {
        let mut digits = Vec::new();
        loop {
            if *at == block.len() {
                read_block(data, block)
                    .map_err(|e| bad(format!("GNU sparse 1.0 map cut short: {e}")))?;
                *used += BLOCK;
                *at = 0;
            }
            let b = block[*at];
            *at += 1;
            match b {
                b'\n' => break,
                b'0'..=b'9' if digits.len() < MAX_DIGITS => digits.push(b),
                _ => {
                    return Err(bad(format!(
                        "GNU sparse 1.0 map is not decimal lines (byte {:?} after {:?})",
                        char::from(b),
                        String::from_utf8_lossy(&digits)
                    )))
                }
            }
        }
        parse_u64(&digits).ok_or_else(|| bad("GNU sparse 1.0 map has an empty line"))
    };
    let count = next_number(&mut block, &mut at, &mut used)?;
    if count > MAX_REGIONS as u64 {
        return Err(bad(format!(
            "GNU sparse 1.0 map lists {count} regions (limit {MAX_REGIONS})"
        )));
    }
    let mut regions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let off = next_number(&mut block, &mut at, &mut used)?;
        let len = next_number(&mut block, &mut at, &mut used)?;
        regions.push((off, len));
    }
    Ok((regions, used))
}

fn read_block(data: &mut dyn Read, block: &mut [u8]) -> io::Result<()> {
    let mut n = 0;
    while n < block.len() {
        match data.read(&mut block[n..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ends inside the map",
                ))
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Checks a map against the real size and the bytes of data the entry holds.
fn validate(regions: &[(u64, u64)], real_size: u64, data_len: u64) -> io::Result<()> {
    let mut end = 0u64;
    let mut total = 0u64;
    let last_data = regions.iter().rposition(|r| r.1 > 0);
    for (i, &(off, len)) in regions.iter().enumerate() {
        if off < end {
            return Err(bad(format!(
                "sparse map region {i} at offset {off} is out of order or overlaps the \
                 region before it (which ends at {end})"
            )));
        }
        end = off
            .checked_add(len)
            .filter(|e| *e <= real_size)
            .ok_or_else(|| {
                bad(format!(
                    "sparse map region {i} ({len} bytes at offset {off}) runs past the real \
                     size {real_size}"
                ))
            })?;
        if len % BLOCK != 0 && Some(i) != last_data {
            return Err(bad(format!(
                "sparse map region {i} ({len} bytes) is not a multiple of 512 bytes and is \
                 not the last region: its data layout is ambiguous"
            )));
        }
        total += len;
    }
    if total != data_len {
        return Err(bad(format!(
            "sparse map lists {total} bytes of data but the entry holds {data_len}"
        )));
    }
    Ok(())
}

impl Applier<'_> {
    /// How the current entry's content is stored, reading a 1.0 map from the start of
    /// `data`. `data_len` is the entry's data size in the archive.
    ///
    /// Errors ([`DriverError::Tar`] naming the entry): sparse records on a non-regular
    /// entry or on an `S` entry, an unknown version, no real size, a bad map.
    pub(super) fn layout(
        &self,
        ty: EntryType,
        is_file: bool,
        rec: &Records,
        data: &mut dyn Read,
        data_len: u64,
    ) -> Result<Layout> {
        if !rec.any {
            return Ok(if ty.is_gnu_sparse() {
                Layout::ExpandedByReader
            } else {
                Layout::Plain
            });
        }
        let err = |msg: String| self.tar_err(bad(msg));
        if !is_file || ty.is_gnu_sparse() {
            return Err(err(format!(
                "GNU.sparse PAX records on a {:?} entry (only regular files can be sparse)",
                char::from(ty.as_byte())
            )));
        }
        let v10 = match (rec.major, rec.minor) {
            (Some(1), Some(0)) => true,
            (Some(0), Some(0 | 1)) | (None, None) => false,
            (major, minor) => {
                return Err(err(format!(
                    "unsupported GNU sparse version {}.{}",
                    major.map_or("?".into(), |v| v.to_string()),
                    minor.map_or("?".into(), |v| v.to_string())
                )))
            }
        };
        let real_size = if v10 {
            rec.realsize.or(rec.size)
        } else {
            rec.size.or(rec.realsize)
        }
        .ok_or_else(|| err("GNU sparse records without a real size".into()))?;
        let (regions, data_len) = if v10 {
            let (regions, map_len) = read_map_10(data).map_err(|e| self.tar_err(e))?;
            let Some(rest) = data_len.checked_sub(map_len) else {
                return Err(err(format!(
                    "GNU sparse 1.0 map ({map_len} bytes) is larger than the entry's data \
                     ({data_len} bytes)"
                )));
            };
            (regions, rest)
        } else {
            let regions = match (&rec.map, rec.pairs.is_empty()) {
                (Some(_), false) => {
                    return Err(err(
                        "both GNU.sparse.map and GNU.sparse.offset records".into()
                    ))
                }
                (Some(text), true) => parse_map_01(text).map_err(|e| self.tar_err(e))?,
                (None, _) => {
                    let mut v = Vec::with_capacity(rec.pairs.len());
                    for &(off, len) in &rec.pairs {
                        let len = len.ok_or_else(|| {
                            err("GNU.sparse.offset without its GNU.sparse.numbytes".into())
                        })?;
                        v.push((off, len));
                    }
                    if v.is_empty() && rec.numblocks.is_none() {
                        return Err(err(
                            "GNU sparse 0.x records without a map or a block count".into()
                        ));
                    }
                    v
                }
            };
            if let Some(n) = rec.numblocks {
                if n != regions.len() as u64 {
                    return Err(err(format!(
                        "GNU.sparse.numblocks is {n} but the map has {} regions",
                        regions.len()
                    )));
                }
            }
            (regions, data_len)
        };
        validate(&regions, real_size, data_len).map_err(|e| self.tar_err(e))?;
        Ok(Layout::Map { regions, real_size })
    }

    /// Writes the content of the current entry into `file` (just created, empty) and
    /// returns the file's length.
    ///
    /// Errors: [`DriverError::Tar`] naming the entry when the stream ends early or a
    /// read fails, [`DriverError::Io`] for a failed write, seek or truncate.
    pub(super) fn write_content(
        &mut self,
        file: &mut File,
        data: &mut dyn Read,
        size: u64,
        layout: &Layout,
    ) -> Result<u64> {
        match layout {
            Layout::Plain if self.input.borrow().lends() => {
                // Written from the stream's chunks (`shared.rs`).
                let mut n = 0;
                while n < size {
                    let Some(b) = self.take_shared(size - n)? else {
                        break;
                    };
                    file.write_all(b.as_slice())
                        .map_err(|e| DriverError::io("write file", self.abs(&self.path), e))?;
                    n += b.len() as u64;
                }
                self.expect_len(n, size)?;
                Ok(n)
            }
            Layout::Plain => {
                let n = self.copy(file, data, false)?;
                self.expect_len(n, size)?;
                Ok(n)
            }
            Layout::ExpandedByReader => {
                let n = self.copy(file, data, true)?;
                // A trailing hole was only seeked over.
                file.set_len(n)
                    .map_err(|e| DriverError::io("truncate file", self.abs(&self.path), e))?;
                self.expect_len(n, size)?;
                Ok(n)
            }
            Layout::Map { regions, real_size } => {
                for &(off, len) in regions {
                    if len == 0 {
                        continue;
                    }
                    file.seek(SeekFrom::Start(off))
                        .map_err(|e| DriverError::io("seek in file", self.abs(&self.path), e))?;
                    let n = self.copy(file, &mut Read::take(&mut *data, len), false)?;
                    if n != len {
                        return Err(self.tar_err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "sparse file data truncated: region at offset {off} expected \
                                 {len} bytes, got {n}"
                            ),
                        )));
                    }
                }
                file.set_len(*real_size)
                    .map_err(|e| DriverError::io("truncate file", self.abs(&self.path), e))?;
                Ok(*real_size)
            }
        }
    }

    /// The tar crate's reader just stops at the end of the stream: a short count is a
    /// truncated archive.
    pub(super) fn expect_len(&self, got: u64, want: u64) -> Result<()> {
        if got != want {
            return Err(self.tar_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file data truncated: expected {want} bytes, got {got}"),
            )));
        }
        Ok(())
    }

    /// Copies `data` to `file` at its position until EOF; with `holes`, chunks of zeros
    /// are seeked over. Returns the bytes read.
    fn copy(&mut self, file: &mut File, data: &mut dyn Read, holes: bool) -> Result<u64> {
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.tar_err(e)),
            };
            let chunk = &self.buf[..n];
            let r = if holes && chunk.iter().all(|b| *b == 0) {
                file.seek(SeekFrom::Current(n as i64)).map(|_| ())
            } else {
                file.write_all(chunk)
            };
            r.map_err(|e| DriverError::io("write file", self.abs(&self.path), e))?;
            copied += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_01() {
        assert_eq!(
            parse_map_01(b"0,4096,299008,8192,1049000,0").unwrap(),
            vec![(0, 4096), (299008, 8192), (1049000, 0)]
        );
        assert_eq!(parse_map_01(b"").unwrap(), vec![]);
        for bad in [&b"0,1,2"[..], b"0,x", b"0,,", b"-1,2", b"1,2,"] {
            assert!(
                parse_map_01(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn padded(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn map_10() {
        let data = [padded("2\n0\n512\n4096\n10\n"), b"rest".to_vec()].concat();
        let mut r = &data[..];
        assert_eq!(
            read_map_10(&mut r).unwrap(),
            (vec![(0, 512), (4096, 10)], 512)
        );
        assert_eq!(r, b"rest", "the data after the map is left to read");
        // A map spanning blocks.
        let mut text = String::from("100\n");
        for i in 0..100 {
            text.push_str(&format!("{}\n512\n", i * 100_000));
        }
        let data = padded(&text);
        let (regions, used) = read_map_10(&mut &data[..]).unwrap();
        assert_eq!(regions.len(), 100);
        assert_eq!(regions[99], (9_900_000, 512));
        assert_eq!(used, data.len() as u64);
        assert!(used > 512);
        for bad in [
            "1\n0\n",
            "1\n0\nx\n",
            "2\n0\n\n",
            "1\n0 \n5\n",
            "99999999999999999999999\n",
        ] {
            assert!(read_map_10(&mut &padded(bad)[..]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation() {
        let ok = [(0, 4096), (8192, 512), (20_000, 7), (30_000, 0)];
        validate(&ok, 30_000, 4096 + 512 + 7).unwrap();
        for (regions, real, data, why) in [
            (&[(512, 512), (0, 512)][..], 4096, 1024, "out of order"),
            (&[(0, 1024), (512, 512)][..], 4096, 1536, "overlaps"),
            (
                &[(0, 512), (4000, 512)][..],
                4096,
                1024,
                "runs past the real size",
            ),
            (
                &[(u64::MAX, 512)][..],
                u64::MAX,
                512,
                "runs past the real size",
            ),
            (
                &[(0, 512)][..],
                4096,
                1024,
                "lists 512 bytes of data but the entry holds 1024",
            ),
            (&[(0, 1024)][..], 4096, 512, "lists 1024 bytes"),
            (
                &[(0, 100), (512, 512)][..],
                4096,
                612,
                "not a multiple of 512",
            ),
        ] {
            let e = validate(regions, real, data).unwrap_err().to_string();
            assert!(e.contains(why), "{regions:?}: {e}");
        }
    }
}
