//! Numeric header fields read from the raw header bytes.
//!
//! A field is octal ASCII (POSIX ustar), or GNU base-256 when the first byte has its
//! high bit set: the remaining bits of the field are a big-endian two's complement
//! number, so a first byte of `0x80` starts a positive value and `0xff` a negative one
//! (GNU tar writes negative times this way, e.g. -315619200 for 1960-01-01). The tar
//! crate (0.4) reads base-256 as unsigned and only the last 8 bytes of a 12-byte field,
//! so a negative mtime comes out as a date in the 25th century and a negative size
//! frames the stream wrongly; we read mtime, uid, gid and size here instead (the
//! decoding is Go's `archive/tar` `parseNumeric`).

use std::fmt;

/// Why a numeric field could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BadNumber {
    /// Octal text with a non-octal character.
    NotOctal(String),
    /// Base-256 value wider than 64 bits.
    Overflow,
}

impl fmt::Display for BadNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadNumber::NotOctal(s) => write!(f, "not an octal number: {s:?}"),
            BadNumber::Overflow => f.write_str("base-256 value does not fit in 64 bits"),
        }
    }
}

/// Decodes one numeric field (octal or GNU base-256 two's complement).
pub(super) fn parse(field: &[u8]) -> Result<i64, BadNumber> {
    match field.first() {
        Some(first) if first & 0x80 != 0 => base256(field),
        _ => octal(field),
    }
}

/// GNU base-256: the marker bit cleared, the rest is two's complement; bit 6 of the
/// first byte is the sign.
fn base256(field: &[u8]) -> Result<i64, BadNumber> {
    // Negative numbers: invert every byte, read as unsigned `a`, the value is `!a`.
    let inv: u8 = if field[0] & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, b) in field.iter().enumerate() {
        let mut c = b ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return Err(BadNumber::Overflow);
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 != 0 {
        return Err(BadNumber::Overflow);
    }
    let x = x as i64;
    Ok(if inv == 0xff { !x } else { x })
}

/// Octal ASCII, NUL- or space-terminated, surrounding spaces allowed; empty is 0.
fn octal(field: &[u8]) -> Result<i64, BadNumber> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let text = &field[..end];
    let trimmed = text.trim_ascii();
    if trimmed.is_empty() {
        return Ok(0);
    }
    let bad = || BadNumber::NotOctal(String::from_utf8_lossy(text).into_owned());
    if !trimmed.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(bad());
    }
    // 12 octal digits are 36 bits: no overflow, but a field without its terminator
    // could be longer in a hand-made header.
    std::str::from_utf8(trimmed)
        .ok()
        .and_then(|s| i64::from_str_radix(s, 8).ok())
        .ok_or_else(bad)
}

/// The numeric fields of a header we read ourselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Numbers {
    pub uid: i64,
    pub gid: i64,
    /// Seconds since the epoch, may be negative.
    pub mtime: i64,
    /// The size field (data bytes in the archive; for GNU `S` entries the condensed size).
    pub size: i64,
}

/// A field that failed to decode: its name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadField {
    pub field: &'static str,
    pub why: BadNumber,
}

impl fmt::Display for BadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "header field {}: {}", self.field, self.why)
    }
}

/// Reads uid, gid, mtime and size from a raw 512-byte header.
pub(super) fn numbers(h: &tar::Header) -> Result<Numbers, BadField> {
    let o = h.as_old();
    let get = |field: &'static str, raw: &[u8]| parse(raw).map_err(|why| BadField { field, why });
    Ok(Numbers {
        uid: get("uid", &o.uid)?,
        gid: get("gid", &o.gid)?,
        mtime: get("mtime", &o.mtime)?,
        size: get("size", &o.size)?,
    })
}

/// Explains why the tar reader refused the header `block` (the last block it read)
/// when that header carries a negative size: the tar crate reads it as a huge unsigned
/// number and fails with "size overflow", without naming the entry. Returns the
/// entry's name (the header's own name field) and the reason.
pub(super) fn negative_size(block: &[u8]) -> Option<(String, String)> {
    if block.len() != 512 {
        return None;
    }
    let h = tar::Header::from_byte_slice(block);
    match parse(&h.as_old().size) {
        Ok(size) if size < 0 => Some((
            String::from_utf8_lossy(&h.path_bytes()).into_owned(),
            format!("negative size {size} in the header"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GNU base-256 of `v` in a field of `len` bytes.
    fn b256(v: i64, len: usize) -> Vec<u8> {
        let mut out = vec![if v < 0 { 0xff } else { 0 }; len];
        let bytes = v.to_be_bytes();
        out[len - 8..].copy_from_slice(&bytes);
        out[0] |= 0x80;
        out
    }

    #[test]
    fn table() {
        for (field, want) in [
            (b"0000644\0".to_vec(), Ok(0o644)),
            (b" 1750 \0\0".to_vec(), Ok(0o1750)),
            (b"\0\0\0\0\0\0\0\0".to_vec(), Ok(0)),
            (b"00000000009\0".to_vec(), Err(())),
            (b256(-315_619_200, 12), Ok(-315_619_200)),
            (b256(-1, 12), Ok(-1)),
            (b256(-1, 8), Ok(-1)),
            (b256(1_600_000_000, 12), Ok(1_600_000_000)),
            (b256(1 << 40, 8), Ok(1 << 40)),
            (b256(i64::MIN, 12), Ok(i64::MIN)),
            (b256(i64::MAX, 12), Ok(i64::MAX)),
            // 0x80 then bits in the upper 4 bytes of a 12-byte field: wider than 64 bits
            // (the tar crate silently drops them).
            ([&[0x80, 0, 0, 1][..], &[0; 8]].concat(), Err(())),
            ([&[0xff, 0xff, 0xff, 0xfe][..], &[0; 8]].concat(), Err(())),
        ] {
            assert_eq!(parse(&field).map_err(|_| ()), want, "{field:02x?}");
        }
    }

    #[test]
    fn negative_size_is_explained() {
        let mut h = tar::Header::new_gnu();
        h.set_path("bad").unwrap();
        h.as_old_mut().size.copy_from_slice(&b256(-1, 12));
        let (name, why) = negative_size(h.as_bytes()).unwrap();
        assert_eq!(name, "bad");
        assert!(why.contains("-1"), "{why}");
        h.set_size(5);
        assert_eq!(negative_size(h.as_bytes()), None);
    }
}
