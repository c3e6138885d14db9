//! Layer compression, detected by magic bytes: gzip `1f 8b`, zstd `28 b5 2f fd`,
//! anything else is read as a plain tar.

use std::io::{self, BufRead, Read};

/// A layer's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

/// Classifies the first bytes of a stream.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Peeks at `r` and wraps it in the matching decoder.
pub(crate) fn decoder<'a, R: BufRead + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let c = detect(r.fill_buf()?);
    let d: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    };
    Ok((c, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_table() {
        for (head, want) in [
            (&[0x1f, 0x8b, 8, 0][..], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd][..], Compression::Zstd),
            (&b"etc/"[..], Compression::None),
            (&[][..], Compression::None),
            (&[0x28, 0xb5][..], Compression::None),
        ] {
            assert_eq!(detect(head), want, "{head:?}");
        }
    }
}
