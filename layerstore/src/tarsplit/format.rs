//! The tar-split metadata file format (`layerdb/sha256/<chain>/tar-split.zst`).
//!
//! A zstd stream (level 1: cheap enough for the import's hasher thread; gzip's fast
//! level cost ten times more there) of:
//! ```text
//! "layerctl-tar-split 1\n"                      magic line
//! record*                                       in tar order
//!   0x01 varint(N) <N bytes>                    raw tar bytes (headers, extension data,
//!                                               padding, end blocks, trailing bytes)
//!   0x02 varint(SIZE) CRC(4) varint(L) <path>   SIZE content bytes of the regular file
//!                                               named PATH in the tar (as written there:
//!                                               ustar prefix/name, GNU long name or PAX path);
//!                                               CRC = CRC-32 (IEEE) of the content, little
//!                                               endian: names a file whose bytes changed
//!   0x00 varint(TOTAL)                          end: the tar was TOTAL bytes
//! ```
//! Varints are LEB128 (7 bits a byte, low first).

use std::io::{self, Read};

/// First bytes of the (decompressed) metadata.
pub(crate) const MAGIC: &[u8] = b"layerctl-tar-split 1\n";
/// End record.
pub(crate) const TAG_END: u8 = 0;
/// Raw bytes record.
pub(crate) const TAG_RAW: u8 = 1;
/// File content record.
pub(crate) const TAG_FILE: u8 = 2;

/// Longest path a file record may carry (PATH_MAX-ish bound against corrupt metadata).
pub(crate) const MAX_PATH: u64 = 64 << 10;

/// Appends `v` as LEB128.
pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads one LEB128 value. Errors: EOF inside it, or more than 64 bits.
pub(crate) fn read_varint(r: &mut dyn Read) -> io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        v |= ((b[0] & 0x7f) as u64) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "varint longer than 64 bits",
    ))
}

/// One record of the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// `N` raw bytes follow in the stream (read them before the next record).
    Raw(u64),
    /// A file's content: its tar path, size and CRC-32.
    File { path: Vec<u8>, size: u64, crc: u32 },
    /// The end; the tar's total size.
    End(u64),
}

/// Reads the next record header (for `Raw`, the bytes themselves stay in `r`).
pub(crate) fn read_record(r: &mut dyn Read) -> io::Result<Record> {
    let mut tag = [0u8];
    r.read_exact(&mut tag)?;
    match tag[0] {
        TAG_RAW => Ok(Record::Raw(read_varint(r)?)),
        TAG_FILE => {
            let size = read_varint(r)?;
            let mut crc = [0u8; 4];
            r.read_exact(&mut crc)?;
            let crc = u32::from_le_bytes(crc);
            let len = read_varint(r)?;
            if len > MAX_PATH {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file record with a {len}-byte path"),
                ));
            }
            let mut path = vec![0u8; len as usize];
            r.read_exact(&mut path)?;
            Ok(Record::File { path, size, crc })
        }
        TAG_END => Ok(Record::End(read_varint(r)?)),
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown record tag {t}"),
        )),
    }
}
