//! Hashing while streaming: a reader adapter that hands copies of every chunk to a
//! hasher thread over a bounded channel, so sha256 runs on the second core in parallel
//! with decompression and apply, in constant memory (at most [`CHANNEL_CHUNKS`] chunks
//! in flight; chunk buffers are recycled).

use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

/// Chunks queued to the hasher before the reader waits: bounds memory to a few MiB.
const CHANNEL_CHUNKS: usize = 16;

/// The result of hashing a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digested {
    /// Lowercase hex sha256.
    pub hex: String,
    /// Bytes hashed.
    pub size: u64,
}

/// A reader that forwards everything it reads to a hasher thread.
pub(crate) struct HashingReader<R> {
    inner: R,
    tx: SyncSender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
}

/// The tar-split recorder the DiffID hasher feeds (see [`crate::tarsplit`]).
pub(crate) type Splitter = crate::tarsplit::FileSplitter;

/// Joins the hasher thread once its [`HashingReader`] is dropped.
#[derive(Debug)]
pub(crate) struct HashJoin(JoinHandle<(Digested, Option<Splitter>)>);

impl HashJoin {
    /// Waits for the hasher; call after the reader is dropped.
    pub(crate) fn finish(self) -> Digested {
        self.finish_split().0
    }

    /// Waits for the hasher; returns the digest and the tar-split recorder it fed.
    pub(crate) fn finish_split(self) -> (Digested, Option<Splitter>) {
        match self.0.join() {
            Ok(d) => d,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

/// Wraps `inner`; the digest of everything read through it comes from the returned
/// [`HashJoin`] after the reader is dropped.
pub(crate) fn hashing<R: Read>(inner: R) -> (HashingReader<R>, HashJoin) {
    hashing_split(inner, None)
}

/// As [`hashing`], and every chunk is also fed to `splitter` on the hasher thread
/// (tar-split metadata of a layer tar; [`HashJoin::finish_split`] hands it back).
pub(crate) fn hashing_split<R: Read>(
    inner: R,
    mut splitter: Option<Splitter>,
) -> (HashingReader<R>, HashJoin) {
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (pool_tx, pool) = channel::<Vec<u8>>();
    let handle = std::thread::Builder::new()
        .name("sha256".into())
        .spawn(move || {
            let mut h = Sha256::new();
            let mut size = 0u64;
            for chunk in rx {
                h.update(&chunk);
                if let Some(sp) = splitter.as_mut() {
                    sp.feed(&chunk);
                }
                size += chunk.len() as u64;
                // The reader may be gone already; then the buffer is simply dropped.
                let _ = pool_tx.send(chunk);
            }
            let d = Digested {
                hex: hex::encode(h.finalize()),
                size,
            };
            (d, splitter)
        })
        .expect("spawning the sha256 thread");
    (HashingReader { inner, tx, pool }, HashJoin(handle))
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let mut chunk = self.pool.try_recv().unwrap_or_default();
            chunk.clear();
            chunk.extend_from_slice(&buf[..n]);
            self.tx
                .send(chunk)
                .map_err(|_| io::Error::other("sha256 thread stopped"))?;
        }
        Ok(n)
    }
}

/// Reads what the tar reader left of a layer stream (it stops after the end-of-archive
/// marker, or at the end of the last entry when the marker is missing, as GNU tar
/// accepts) and checks it is zeros: the rest of the marker and record padding. Returns
/// the bytes drained.
///
/// Errors: the reader's own, or [`io::ErrorKind::InvalidData`] naming the offset (from
/// the start of what was drained) of the first non-zero byte: data after the end of the
/// archive would be hashed into the DiffID but never applied.
pub(crate) fn drain_trailer(r: &mut dyn Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "non-zero data after the end of the tar archive (at byte {} of what \
                     follows its end-of-archive marker or last entry)",
                    total + i as u64
                ),
            ));
        }
        total += n as u64;
    }
}

/// Counts bytes read and reports the running total to a progress callback.
pub(crate) struct Counting<'a, R> {
    pub(crate) inner: R,
    pub(crate) total: &'a std::cell::Cell<u64>,
    pub(crate) progress: Option<&'a dyn Fn(u64)>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total.set(self.total.get() + n as u64);
        if let Some(p) = self.progress {
            p(self.total.get());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_passes_through() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, j) = hashing(&data[..]);
        let mut out = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        drop(r);
        let d = j.finish();
        assert_eq!(out, data);
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.hex, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn trailer_must_be_zeros() {
        assert_eq!(drain_trailer(&mut &[][..]).unwrap(), 0);
        assert_eq!(drain_trailer(&mut &[0u8; 9000][..]).unwrap(), 9000);
        let mut junk = vec![0u8; 70_000];
        junk[66_000] = b'j';
        let e = drain_trailer(&mut &junk[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("at byte 66000"), "{e}");
    }
}
