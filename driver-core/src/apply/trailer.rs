//! The end of a layer tar.
//!
//! POSIX ends an archive with two 512-byte zero blocks, and writers pad the last
//! record with more zeros. Readers differ on what they insist on; we follow GNU tar
//! where it is safe and are stricter where it is not:
//! - a stream that ends at an entry boundary without any zero block is accepted (GNU
//!   tar, umoci and containers-storage accept it, and registries serve such layers);
//! - a stream cut inside a header or inside an entry's data (or its padding) is an
//!   error (the tar reader's, or the short-data check of the entry);
//! - after the first zero block only zeros may follow, up to the end of the stream. GNU
//!   tar stops at the marker and ignores the rest; we refuse non-zero bytes there,
//!   saying that they follow the marker: entries hidden behind a zero block would be
//!   part of the layer's DiffID yet invisible to us, and other readers (`tar -i`)
//!   would apply them.

use std::io::{self, Read};

use super::exthdr::Tape;

/// Reads the rest of the stream after the tar reader stopped and checks it is zeros.
/// `rest` must be the reader under the tar crate (so `tape` counts its position);
/// `buf` is scratch space.
///
/// Errors: the reader's own, or [`io::ErrorKind::InvalidData`] giving the offset of
/// the first non-zero byte and of the end-of-archive marker before it.
pub(super) fn check(tape: &Tape, rest: &mut dyn Read, buf: &mut [u8]) -> io::Result<()> {
    tape.stop();
    let marker = tape.zero_block_at();
    loop {
        let at = tape.pos();
        let n = match rest.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            let junk = at + i as u64;
            let msg = match marker {
                Some(m) => format!(
                    "non-zero data at byte {junk} after the end-of-archive marker at byte {m} \
                     (only zero padding may follow it)"
                ),
                None => format!("non-zero data at byte {junk} after the end of the archive"),
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
    }
}
