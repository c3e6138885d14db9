//! Hashing while streaming, in constant memory.
//!
//! - [`hashing`]: a reader adapter that hands copies of every chunk to a hasher thread
//!   over a bounded channel (at most [`CHANNEL_CHUNKS`] chunks in flight, buffers
//!   recycled); used for the compressed blob digest.
//! - [`pump`] + [`ChunkReader`]: the decoded layer stream (the DiffID side). The
//!   calling thread reads the stream (file reads, decompression) into reference-counted
//!   chunks of [`STREAM_CHUNK`] bytes; each chunk goes, without a copy, both to a
//!   sha256 thread and to the applying thread, which reads it through a
//!   [`ChunkReader`]. A chunk's buffer comes back to the pump once both have dropped
//!   it, so at most [`POOL_CHUNKS`] buffers (16 MiB) exist at any time. The apply
//!   writes regular files straight from the chunks ([`ChunkReader`] lends them).
use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
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

/// Bytes per chunk of the decoded layer stream: one `read` of a plain file, a few
/// hundred tar headers or one mid-sized file per hand-over.
pub(crate) const STREAM_CHUNK: usize = 1 << 20;
/// Chunks queued to each consumer (applier, hasher) before the reader waits.
const QUEUE_CHUNKS: usize = 4;

/// Chunks the apply's file writer may hold at once: file content is written from the
/// chunks themselves (driver-core `apply/shared.rs`), and the writer's queue holds
/// about 4 MiB of content (driver-core `writer.rs`: 4 queued batches, one being filled
/// and one being written, of 512 KiB plus one job of at most 128 KiB each).
const WRITER_CHUNKS: usize = 5;

/// Chunk buffers one [`pump`] allocates at most: what the two queues, the two
/// consumers, the file writer and the reader can hold at once.
const POOL_CHUNKS: usize = 2 * (QUEUE_CHUNKS + 1) + WRITER_CHUNKS + 1;

/// A filled chunk of the stream: `buf[..len]` is data (the rest is stale bytes of an
/// earlier use, kept initialized so a reused chunk is never zeroed again). When the
/// last reference is dropped the buffer goes back to the pump (`home`): buffers are
/// never freed and reallocated during a stream (with several threads, every free of
/// a 1 MiB buffer would be an `munmap` and its TLB shootdown across CPUs).
#[derive(Debug)]
pub(crate) struct Chunk {
    buf: Vec<u8>,
    len: usize,
    home: Sender<Vec<u8>>,
}

impl Chunk {
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The pump may be gone (end of stream): the buffer is then simply freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

/// What the applying thread receives: a chunk, or the error that ended the stream.
pub(crate) type ChunkMsg = io::Result<Arc<Chunk>>;

/// The queue from [`pump`] to a [`ChunkReader`].
pub(crate) fn chunk_queue() -> (SyncSender<ChunkMsg>, Receiver<ChunkMsg>) {
    sync_channel(QUEUE_CHUNKS)
}

/// Reads the chunks [`pump`] sends, as one stream. A read error of the source is
/// returned once, in order, then the stream ends; the stream also ends when the pump
/// stops.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    rx: Receiver<ChunkMsg>,
    cur: Option<Arc<Chunk>>,
    pos: usize,
    done: bool,
}

impl ChunkReader {
    pub(crate) fn new(rx: Receiver<ChunkMsg>) -> Self {
        ChunkReader {
            rx,
            cur: None,
            pos: 0,
            done: false,
        }
    }
}

impl ChunkReader {
    /// Makes `cur` a chunk with bytes left at `pos` (receiving the next one when it is
    /// used up); false at the end of the stream.
    fn current(&mut self) -> io::Result<bool> {
        loop {
            if self.cur.as_ref().is_some_and(|c| self.pos < c.len) {
                return Ok(true);
            }
            // Dropping our reference lets the pump reuse the chunk.
            self.cur = None;
            if self.done {
                return Ok(false);
            }
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = Some(c);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || !self.current()? {
            return Ok(0);
        }
        let c = self.cur.as_ref().expect("current chunk");
        let rest = &c.data()[self.pos..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Regular files' content is written from the shared chunks themselves, by the apply
/// or its writer thread (driver-core `apply/shared.rs`): no copy on the applying
/// thread. A chunk lent out stays out of the pool until its file is written.
impl driver_core::ChunkedRead for ChunkReader {
    fn read_shared(&mut self, max: usize) -> io::Result<Option<driver_core::SharedBytes>> {
        if max == 0 || !self.current()? {
            return Ok(None);
        }
        let c = self.cur.clone().expect("current chunk");
        let n = (c.len - self.pos).min(max);
        let bytes = driver_core::SharedBytes::new(c, self.pos, n);
        self.pos += n;
        Ok(Some(bytes))
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

/// Reads `src` to its end (or until the [`ChunkReader`] behind `to_apply` is dropped)
/// in chunks shared by a sha256 thread and `to_apply`, and returns the digest of
/// everything read and `splitter`, which this thread fed every chunk (tar-split) while
/// the consumers worked on it. A read error of `src` is sent to `to_apply` and ends the
/// stream.
pub(crate) fn pump(
    src: &mut dyn Read,
    to_apply: SyncSender<ChunkMsg>,
    mut splitter: Option<Splitter>,
) -> (Digested, Option<Splitter>) {
    let (tx, rx) = sync_channel::<Arc<Chunk>>(QUEUE_CHUNKS);
    let handle = std::thread::Builder::new()
        .name("sha256".into())
        .spawn(move || {
            let mut h = Sha256::new();
            let mut size = 0u64;
            for chunk in rx {
                h.update(chunk.data());
                size += chunk.len as u64;
            }
            Digested {
                hex: hex::encode(h.finalize()),
                size,
            }
        })
        .expect("spawning the sha256 thread");
    // Buffers come back (Chunk::drop) once both consumers are done with them.
    let (home, back) = channel::<Vec<u8>>();
    let mut made = 0;
    loop {
        let mut buf = match back.try_recv() {
            Ok(b) => b,
            Err(_) if made < POOL_CHUNKS => {
                made += 1;
                vec![0; STREAM_CHUNK]
            }
            // Every buffer is queued or being read: wait for one (the consumers
            // drain their queues whatever we do; we hold `home`, so this returns).
            Err(_) => match back.recv() {
                Ok(b) => b,
                Err(_) => break,
            },
        };
        let mut len = 0;
        let mut eof = false;
        let mut failed = None;
        while len < buf.len() {
            match src.read(&mut buf[len..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if len > 0 {
            let chunk = Arc::new(Chunk {
                buf,
                len,
                home: home.clone(),
            });
            if tx.send(chunk.clone()).is_err() {
                break; // the hasher is gone (it panicked): join says why
            }
            if to_apply.send(Ok(chunk.clone())).is_err() {
                break; // the applier stopped (its error is the answer)
            }
            // Tar-split on this thread, while the hasher and the applier work on the
            // chunk: the sha256 thread is the busiest one of a plain-tar import.
            if let Some(sp) = splitter.as_mut() {
                sp.feed(chunk.data());
            }
        }
        if let Some(e) = failed {
            let _ = to_apply.send(Err(e));
            break;
        }
        if eof {
            break;
        }
    }
    drop(tx);
    drop(to_apply);
    let d = match handle.join() {
        Ok(d) => d,
        Err(p) => std::panic::resume_unwind(p),
    };
    (d, splitter)
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
    fn pump_hashes_and_passes_every_byte() {
        let data: Vec<u8> = (0..(3 * STREAM_CHUNK + 12_345) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let (tx, rx) = chunk_queue();
        let reader = std::thread::spawn(move || {
            let mut r = ChunkReader::new(rx);
            let mut out = Vec::new();
            let mut buf = [0u8; 777];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        });
        // A source handing out odd-sized reads.
        let mut src = std::io::Read::chain(&data[..1000], &data[1000..]);
        let (d, _) = pump(&mut src, tx, None);
        assert_eq!(reader.join().unwrap(), data);
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.hex, hex::encode(Sha256::digest(&data)));
    }

    /// Lent and copied reads mixed give the stream in order; lent bytes keep their
    /// chunk alive after the reader moved on (the pump reuses it only once they are
    /// dropped).
    #[test]
    fn chunk_reader_lends_and_reads_the_same_stream() {
        use driver_core::ChunkedRead;
        let data: Vec<u8> = (0..(2 * STREAM_CHUNK + 999) as u32)
            .map(|i| (i % 241) as u8)
            .collect();
        let (tx, rx) = chunk_queue();
        let expect = data.clone();
        let reader = std::thread::spawn(move || {
            let mut r = ChunkReader::new(rx);
            let mut out = Vec::new();
            let mut lent = Vec::new();
            let mut buf = [0u8; 3000];
            for i in 0.. {
                let before = out.len();
                if i % 2 == 0 {
                    match r.read_shared(70_000 + i).unwrap() {
                        Some(b) => {
                            assert!(!b.is_empty() && b.len() <= 70_000 + i);
                            out.extend_from_slice(b.as_slice());
                            lent.push((before, b));
                        }
                        None => break,
                    }
                } else {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            }
            assert_eq!(r.read_shared(1).unwrap().map(|b| b.len()), None);
            // Every lent range still holds its bytes.
            for (at, b) in &lent {
                assert_eq!(b.as_slice(), &expect[*at..*at + b.len()]);
            }
            out
        });
        let mut src = &data[..];
        pump(&mut src, tx, None);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn pump_forwards_the_source_error_and_stops_when_the_reader_leaves() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt gzip"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let (tx, rx) = chunk_queue();
        let reader = std::thread::spawn(move || {
            let mut r = ChunkReader::new(rx);
            let mut out = Vec::new();
            let e = r.read_to_end(&mut out).unwrap_err();
            (out.len(), e.to_string())
        });
        pump(&mut Failing(5000), tx, None);
        assert_eq!(reader.join().unwrap(), (5000, "corrupt gzip".to_string()));

        // A reader that stops early: the pump returns instead of reading forever.
        let (tx, rx) = chunk_queue();
        drop(rx);
        let (d, _) = pump(&mut io::repeat(0).take(1 << 40), tx, None);
        assert!(d.size <= STREAM_CHUNK as u64, "{}", d.size);
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
