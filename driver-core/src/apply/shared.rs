//! Layer streams whose bytes can be lent out without a copy.
//!
//! A caller that already holds the layer tar in reference-counted chunks (layerstore's
//! import: one chunk is shared by the DiffID hasher and the apply) passes a
//! [`ChunkedRead`]; regular files' content then goes from those chunks straight to
//! `write(2)` (on the writer thread or inline, `writer.rs`, `entry.rs`), instead of
//! being copied into the apply's buffers first. Headers, extension headers, sparse
//! files and files with xattrs are still read through [`Read`], byte for byte as from a
//! plain reader, so the tree is the same whichever kind of stream was given (test
//! `chunked_streams_give_the_same_tree`).
//!
//! How the tar reader keeps its place: the file's bytes taken from the stream directly
//! are counted as a credit in the apply's [`Tap`](super::exthdr::Tap); when the tar
//! reader then reads (skips) the entry's data it is served from that credit without
//! touching the stream, so its position and the tape stay exact.

use std::io::{self, BufReader, Read};
use std::sync::Arc;

/// A byte range of a reference-counted buffer, shareable between threads. The buffer
/// lives until the last `SharedBytes` of it (and its other owners) are gone.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    start: usize,
    len: usize,
}

impl SharedBytes {
    /// `owner`'s bytes `start..start + len`.
    ///
    /// Panics when the range is not inside `owner`'s bytes (a caller's bug).
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, start: usize, len: usize) -> Self {
        let total = (*owner).as_ref().len();
        assert!(
            start.checked_add(len).is_some_and(|end| end <= total),
            "SharedBytes {start}+{len} outside a buffer of {total} bytes"
        );
        SharedBytes { owner, start, len }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.start..self.start + self.len]
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

/// A layer stream that can also hand out its next bytes as [`SharedBytes`].
pub trait ChunkedRead: Read {
    /// The next bytes of the stream, at most `max` (> 0) of them, without a copy; the
    /// stream moves past them as if they had been read. `None` at the end of the
    /// stream. A read error of the stream is returned here as by [`Read::read`].
    fn read_shared(&mut self, max: usize) -> io::Result<Option<SharedBytes>>;
}

/// A layer stream as the apply takes it.
pub enum LayerStream<'a> {
    /// Any reader (buffered by the apply).
    Read(&'a mut dyn Read),
    /// A chunked stream: regular files' content is written from its chunks.
    Chunked(&'a mut dyn ChunkedRead),
}

impl std::fmt::Debug for LayerStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayerStream::Read(_) => "LayerStream::Read(..)",
            LayerStream::Chunked(_) => "LayerStream::Chunked(..)",
        })
    }
}

/// What the tar reader reads from, under the [`Tap`](super::exthdr::Tap).
pub(super) enum Input<'a> {
    /// A plain reader behind a small read-ahead buffer (tar headers are 512-byte reads).
    Buffered(BufReader<&'a mut dyn Read>),
    /// A chunked stream, already buffered in its chunks.
    Chunked(&'a mut dyn ChunkedRead),
}

impl Input<'_> {
    /// Up to `max` next bytes without a copy, or `None` when this input cannot lend
    /// them (a plain reader) or is at its end.
    pub(super) fn read_shared(&mut self, max: usize) -> io::Result<Option<SharedBytes>> {
        match self {
            Input::Buffered(_) => Ok(None),
            Input::Chunked(c) => c.read_shared(max),
        }
    }

    pub(super) fn lends(&self) -> bool {
        matches!(self, Input::Chunked(_))
    }
}

impl Read for Input<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Buffered(b) => b.read(out),
            Input::Chunked(c) => c.read(out),
        }
    }
}
