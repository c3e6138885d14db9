//! Layer compression, detected from the content of the first bytes:
//!
//! - gzip: `1f 8b 08` and a flags byte with the reserved bits clear (RFC 1952 §2.3);
//!   every member of a multi-member stream is decoded (`pigz`, concatenated gzips);
//! - zstd: a frame `28 b5 2f fd`, or one or more skippable frames `5X 2a 4d 18` + 4-byte
//!   little-endian length (RFC 8878 §3.1.2, written first by pzstd and seekable zstd)
//!   followed by a frame (or running past the bytes looked at); libzstd skips skippable
//!   frames and decodes every frame of the stream;
//! - plain tar: a 512-byte header block with a valid checksum, or an all-zero block (the
//!   end marker of an empty tar), or an empty stream.
//!
//! Anything else is [`UnknownFormat`]: the error names the formats tried and shows the
//! first bytes, instead of letting the tar reader fail later with a misleading message.

use std::io::{self, BufRead, Read};

/// A layer's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames, possibly skippable frames).
    Zstd,
}

/// Bytes looked at to recognise a stream: enough for a tar header and for the
/// skippable frames pzstd and seekable zstd put first (a few bytes each).
pub const SNIFF_LEN: usize = 64 << 10;

/// Tar block size.
const BLOCK: usize = 512;
/// Bytes shown in the [`UnknownFormat`] message.
const SHOWN: usize = 16;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The only compression method gzip defines (deflate).
const GZIP_DEFLATE: u8 = 8;
/// FLG bits 5..7 are reserved and must be zero.
const GZIP_RESERVED_FLAGS: u8 = 0xe0;
/// A zstd frame: magic 0xFD2FB528, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Skippable frames: magic 0x184D2A50..=0x184D2A5F little-endian, so byte 0 is 0x5X.
const ZSTD_SKIPPABLE_TAIL: [u8; 3] = [0x2a, 0x4d, 0x18];

/// The first bytes of a stream matched none of the formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat {
    /// Up to the first 16 bytes seen.
    pub head: Vec<u8>,
    /// How many bytes were looked at.
    pub looked_at: usize,
}

impl std::fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown format: not a plain tar (no valid header in the first 512 bytes), \
             gzip (1f 8b 08) or zstd (28 b5 2f fd, or skippable frame 5X 2a 4d 18); \
             first bytes:"
        )?;
        for b in &self.head {
            write!(f, " {b:02x}")?;
        }
        if self.looked_at < BLOCK {
            write!(f, " (stream is only {} bytes)", self.looked_at)?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownFormat {}

/// Classifies the first bytes of a stream (up to [`SNIFF_LEN`] of them; `head` shorter
/// than that means the stream is that short).
pub fn detect(head: &[u8]) -> Result<Compression, UnknownFormat> {
    if is_gzip(head) {
        return Ok(Compression::Gzip);
    }
    if is_zstd(head) {
        return Ok(Compression::Zstd);
    }
    if head.is_empty() || is_tar_block(head) {
        return Ok(Compression::None);
    }
    Err(UnknownFormat {
        head: head[..head.len().min(SHOWN)].to_vec(),
        looked_at: head.len(),
    })
}

fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 4
        && head[..2] == GZIP_MAGIC
        && head[2] == GZIP_DEFLATE
        && head[3] & GZIP_RESERVED_FLAGS == 0
}

/// A zstd frame, possibly after skippable frames; a skippable frame running past `head`
/// is taken as zstd (nothing else starts with one).
fn is_zstd(head: &[u8]) -> bool {
    let mut at = 0usize;
    loop {
        let rest = &head[at..];
        if rest.starts_with(&ZSTD_MAGIC) {
            return true;
        }
        let skippable =
            rest.len() >= 4 && rest[0] & 0xf0 == 0x50 && rest[1..4] == ZSTD_SKIPPABLE_TAIL;
        if !skippable {
            return false;
        }
        let Some(len) = rest.get(4..8) else {
            // Magic seen, length cut off: the stream is shorter than a frame header.
            return false;
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        match at.checked_add(8 + len) {
            Some(next) if next < head.len() => at = next,
            // The frame goes past what we looked at (or ends the stream exactly: a
            // stream of skippable frames only decodes to nothing, like libzstd says).
            _ => return head.len() >= SNIFF_LEN || at + 8 + len == head.len(),
        }
    }
}

/// Whether `block` is a tar header block with a valid checksum (or an all-zero block,
/// the end marker of an empty tar).
fn is_tar_block(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let block = &block[..512];
    if block.iter().all(|b| *b == 0) {
        return true;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                0x20
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

/// Reads the first [`SNIFF_LEN`] bytes of `r` (fewer if it ends first), classifies
/// them and wraps the whole stream in the matching decoder.
///
/// Errors: the reader's own, or [`io::ErrorKind::InvalidData`] carrying
/// [`UnknownFormat`] when the bytes match no format.
pub fn decoder<'a, R: BufRead + 'a>(mut r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut r).take(SNIFF_LEN as u64).read_to_end(&mut head)?;
    let c = detect(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let whole = io::Cursor::new(head).chain(r);
    let d: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(whole)?),
    };
    Ok((c, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_block() -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("etc/").unwrap();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn skippable(nibble: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x50 | nibble, 0x2a, 0x4d, 0x18];
        v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn content_table() {
        let zstd_frame = zstd::encode_all(&b"x"[..], 1).unwrap();
        let skip_then_frame = [skippable(0, b"meta"), zstd_frame.clone()].concat();
        let two_skips = [skippable(0xf, &[]), skippable(7, &[1; 300]), zstd_frame].concat();
        let long_skip = skippable(0, &vec![0; SNIFF_LEN + 10])[..SNIFF_LEN].to_vec();
        for (what, head, want) in [
            (
                "gzip",
                &[0x1f, 0x8b, 8, 0, 0, 0][..],
                Some(Compression::Gzip),
            ),
            ("gzip bad method", &[0x1f, 0x8b, 7, 0][..], None),
            ("gzip reserved flag", &[0x1f, 0x8b, 8, 0x20][..], None),
            (
                "zstd",
                &[0x28, 0xb5, 0x2f, 0xfd, 0][..],
                Some(Compression::Zstd),
            ),
            (
                "skippable + zstd",
                &skip_then_frame[..],
                Some(Compression::Zstd),
            ),
            (
                "two skippables + zstd",
                &two_skips[..],
                Some(Compression::Zstd),
            ),
            (
                "skippable past the look",
                &long_skip[..],
                Some(Compression::Zstd),
            ),
            (
                "skippable + junk",
                &[skippable(0, b"m"), b"junk".to_vec()].concat()[..],
                None,
            ),
            ("skippable cut", &[0x50, 0x2a, 0x4d, 0x18, 1][..], None),
            ("tar", &tar_block()[..], Some(Compression::None)),
            ("empty tar", &[0u8; 1024][..], Some(Compression::None)),
            ("empty stream", &[][..], Some(Compression::None)),
            ("text", &b"etc/passwd is not a tar"[..], None),
            ("bzip2", &b"BZh91AY&SY"[..], None),
            ("half zstd magic", &[0x28, 0xb5][..], None),
        ] {
            assert_eq!(detect(head).ok(), want, "{what}");
        }
    }

    #[test]
    fn unknown_format_names_the_formats_and_the_bytes() {
        let e = detect(b"BZh91AY&SY").unwrap_err().to_string();
        for want in ["plain tar", "gzip", "zstd", "42 5a 68 39", "only 10 bytes"] {
            assert!(e.contains(want), "{want:?} in {e}");
        }
    }

    fn decode(data: &[u8]) -> Vec<u8> {
        let (_, mut d) = decoder(io::BufReader::new(data)).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn skippable_frames_are_skipped_and_every_frame_decoded() {
        let a: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second frame".to_vec();
        let stream = [
            skippable(0, &[0xaa; 12]),
            zstd::encode_all(&a[..], 3).unwrap(),
            skippable(0xe, b"between"),
            zstd::encode_all(&b[..], 3).unwrap(),
            skippable(5, b"trailing"),
        ]
        .concat();
        assert_eq!(
            decoder(io::BufReader::new(&stream[..])).unwrap().0,
            Compression::Zstd
        );
        assert_eq!(decode(&stream), [a, b].concat());
    }

    #[test]
    fn every_gzip_member_is_decoded() {
        let gz = |d: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(d).unwrap();
            e.finish().unwrap()
        };
        let stream = [gz(b"one "), gz(b"two "), gz(b"three")].concat();
        assert_eq!(decode(&stream), b"one two three");
    }

    #[test]
    fn plain_streams_pass_through_whole() {
        let mut data = tar_block();
        data.extend((0..200_000u32).map(|i| i as u8));
        assert_eq!(decode(&data), data);
        let e = match decoder(io::BufReader::new(&b"garbage"[..])) {
            Err(e) => e,
            Ok(_) => panic!("garbage accepted"),
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("67 61 72 62"), "{e}");
    }
}
