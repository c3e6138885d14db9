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
    /// Whether the stream ends with a whole 512-byte block of zeros (a tar's
    /// end-of-archive marker), so truncation at an entry boundary is detected.
    pub ends_with_zero_block: bool,
}

/// Size of a tar block.
const BLOCK: usize = 512;

/// A reader that forwards everything it reads to a hasher thread.
pub(crate) struct HashingReader<R> {
    inner: R,
    tx: SyncSender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
}

/// Joins the hasher thread once its [`HashingReader`] is dropped.
#[derive(Debug)]
pub(crate) struct HashJoin(JoinHandle<Digested>);

impl HashJoin {
    /// Waits for the hasher; call after the reader is dropped.
    pub(crate) fn finish(self) -> Digested {
        match self.0.join() {
            Ok(d) => d,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

/// Wraps `inner`; the digest of everything read through it comes from the returned
/// [`HashJoin`] after the reader is dropped.
pub(crate) fn hashing<R: Read>(inner: R) -> (HashingReader<R>, HashJoin) {
    let (tx, rx) = sync_channel::<Vec<u8>>(CHANNEL_CHUNKS);
    let (pool_tx, pool) = channel::<Vec<u8>>();
    let handle = std::thread::Builder::new()
        .name("sha256".into())
        .spawn(move || {
            let mut h = Sha256::new();
            let mut size = 0u64;
            let mut tail: Vec<u8> = Vec::with_capacity(2 * BLOCK);
            for chunk in rx {
                h.update(&chunk);
                size += chunk.len() as u64;
                if chunk.len() >= BLOCK {
                    tail.clear();
                    tail.extend_from_slice(&chunk[chunk.len() - BLOCK..]);
                } else {
                    tail.extend_from_slice(&chunk);
                    if tail.len() > BLOCK {
                        tail.drain(..tail.len() - BLOCK);
                    }
                }
                // The reader may be gone already; then the buffer is simply dropped.
                let _ = pool_tx.send(chunk);
            }
            Digested {
                hex: hex::encode(h.finalize()),
                size,
                ends_with_zero_block: size % BLOCK as u64 == 0
                    && tail.len() == BLOCK
                    && tail.iter().all(|b| *b == 0),
            }
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
        assert!(!d.ends_with_zero_block);
    }

    #[test]
    fn sees_the_end_of_archive_marker() {
        for (data, want) in [
            (
                vec![1u8; 512]
                    .into_iter()
                    .chain(vec![0u8; 1024])
                    .collect::<Vec<_>>(),
                true,
            ),
            (vec![1u8; 1024], false),
            (vec![0u8; 511], false),
            (vec![0u8; 10240], true),
        ] {
            let (mut r, j) = hashing(&data[..]);
            let mut buf = [0u8; 100]; // small reads: the tail spans chunks
            while r.read(&mut buf).unwrap() > 0 {}
            drop(r);
            assert_eq!(j.finish().ends_with_zero_block, want, "{}", data.len());
        }
    }
}
