//! Recording tar-split metadata while a layer tar streams in.
//!
//! [`TarSplitter`] is fed every chunk of the uncompressed layer tar on the DiffID hasher
//! thread (so the apply thread pays nothing but the channel it already has). It follows
//! the tar's block structure only as far as needed to tell file content from everything
//! else: it reads each 512-byte header, the size (octal, base-256 or a PAX `size`), the
//! type and the name (ustar name + prefix, GNU `L` long name, PAX `path`), and then
//!
//! - for a regular file (`0`, NUL, `7`) with content: one `File` record (path, size,
//!   CRC-32 of the content, so a changed file can be named) instead of the content;
//! - for everything else (headers, PAX / GNU long-name data, GNU old-sparse extension
//!   blocks, sparse files' stored data, padding, end-of-archive blocks, trailing zeros
//!   or a final partial block): the raw bytes.
//!
//! Sparse files (GNU `S`, PAX `GNU.sparse.*`) keep their stored data segments in the
//! metadata (they are mostly holes; a sparse map of the file on disk would also do, at
//! the cost of another parser). A malformed header is recorded raw (the apply refuses
//! the layer anyway). Memory is constant: raw bytes are coalesced up to
//! [`RAW_FLUSH`] bytes and streamed into the zstd-compressed metadata file; PAX and
//! long-name data are kept only up to [`MAX_EXT_DATA`] bytes for parsing.

use std::io::{self, Write};

use super::format::{write_varint, MAGIC, TAG_END, TAG_FILE, TAG_RAW};

/// Raw bytes buffered before they are written as one record.
const RAW_FLUSH: usize = 64 << 10;

/// Largest PAX / GNU long-name payload parsed for a name or size (larger ones are
/// recorded raw but not parsed: the apply refuses such headers anyway).
const MAX_EXT_DATA: usize = 1 << 20;

/// Tar block size.
const BLOCK: usize = 512;

/// Where a data area's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Regular file content: not recorded (a `File` record names it).
    File,
    /// Recorded raw.
    Raw,
    /// PAX extended header: recorded raw and parsed for the next entry.
    Pax,
    /// GNU long name (`L`): recorded raw and kept as the next entry's name.
    LongName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// GNU old-sparse extension blocks follow (raw, not counted in the size).
    SparseExt,
    /// `left` bytes of an entry's data, then `pad` bytes of padding.
    Data { left: u64, pad: u64, kind: Data },
    /// `left` bytes of padding.
    Pad { left: u64 },
}

/// What a PAX header or GNU long name says about the next entry.
#[derive(Debug, Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    sparse: bool,
}

/// Streams tar-split records of one layer tar into `out` (normally a zstd encoder over
/// a temp file). Errors of `out` are kept and reported by [`TarSplitter::finish`].
pub(crate) struct TarSplitter<W: Write> {
    out: W,
    raw: Vec<u8>,
    hdr: [u8; BLOCK],
    hdr_len: usize,
    state: State,
    ext: Vec<u8>,
    pending: Pending,
    /// Data size and padding of a GNU old-sparse entry while its extension blocks pass.
    sparse_data: (u64, u64),
    /// The regular file whose content is passing: tar path, size, CRC-32 so far.
    file: Option<(Vec<u8>, u64, crc32fast::Hasher)>,
    total: u64,
    files: u64,
    err: Option<io::Error>,
}

impl<W: Write> std::fmt::Debug for TarSplitter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarSplitter")
            .field("state", &self.state)
            .field("total", &self.total)
            .field("files", &self.files)
            .finish()
    }
}

impl<W: Write> TarSplitter<W> {
    /// Starts the metadata (writes the magic line).
    pub(crate) fn new(mut out: W) -> Self {
        let err = out.write_all(MAGIC).err();
        TarSplitter {
            out,
            raw: Vec::with_capacity(RAW_FLUSH + BLOCK),
            hdr: [0; BLOCK],
            hdr_len: 0,
            state: State::Header,
            ext: Vec::new(),
            pending: Pending::default(),
            sparse_data: (0, 0),
            file: None,
            total: 0,
            files: 0,
            err,
        }
    }

    /// Feeds the next bytes of the tar.
    pub(crate) fn feed(&mut self, mut buf: &[u8]) {
        self.total += buf.len() as u64;
        while !buf.is_empty() {
            match self.state {
                State::Header | State::SparseExt => {
                    let n = (BLOCK - self.hdr_len).min(buf.len());
                    self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&buf[..n]);
                    self.hdr_len += n;
                    buf = &buf[n..];
                    if self.hdr_len == BLOCK {
                        self.hdr_len = 0;
                        self.raw_bytes_of_hdr();
                        if self.state == State::SparseExt {
                            // Byte 504 of an extension block: another one follows.
                            if self.hdr[504] == 0 {
                                let (left, pad) = self.sparse_data;
                                self.state = data_state(left, pad, Data::Raw);
                            }
                        } else {
                            self.header();
                        }
                    }
                }
                State::Data { left, pad, kind } => {
                    let n = (left.min(buf.len() as u64)) as usize;
                    let (chunk, rest) = buf.split_at(n);
                    match kind {
                        Data::File => {
                            if let Some((_, _, crc)) = self.file.as_mut() {
                                crc.update(chunk);
                            }
                        }
                        Data::Raw => self.raw(chunk),
                        Data::Pax | Data::LongName => {
                            self.raw(chunk);
                            if self.ext.len() + chunk.len() <= MAX_EXT_DATA {
                                self.ext.extend_from_slice(chunk);
                            }
                        }
                    }
                    buf = rest;
                    let left = left - n as u64;
                    if left == 0 {
                        self.end_of_data(kind);
                        self.state = if pad > 0 {
                            State::Pad { left: pad }
                        } else {
                            State::Header
                        };
                    } else {
                        self.state = State::Data { left, pad, kind };
                    }
                }
                State::Pad { left } => {
                    let n = (left.min(buf.len() as u64)) as usize;
                    let (chunk, rest) = buf.split_at(n);
                    self.raw(chunk);
                    buf = rest;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Pad { left }
                    };
                }
            }
        }
    }

    fn raw_bytes_of_hdr(&mut self) {
        let hdr = self.hdr;
        self.raw(&hdr);
    }

    fn raw(&mut self, b: &[u8]) {
        self.raw.extend_from_slice(b);
        if self.raw.len() >= RAW_FLUSH {
            self.flush_raw();
        }
    }

    fn flush_raw(&mut self) {
        if self.raw.is_empty() || self.err.is_some() {
            self.raw.clear();
            return;
        }
        let mut rec = Vec::with_capacity(11);
        rec.push(TAG_RAW);
        write_varint(&mut rec, self.raw.len() as u64);
        if let Err(e) = self
            .out
            .write_all(&rec)
            .and_then(|_| self.out.write_all(&self.raw))
        {
            self.err = Some(e);
        }
        self.raw.clear();
    }

    /// A full header block is in `self.hdr` (already recorded raw).
    fn header(&mut self) {
        let h = &self.hdr;
        if h.iter().all(|b| *b == 0) {
            // End-of-archive block (or padding after it): raw, stay in Header.
            return;
        }
        let Some(hdr_size) = parse_numeric(&h[124..136]) else {
            // Malformed: the apply refuses it; keep recording raw blocks.
            self.pending = Pending::default();
            return;
        };
        let typeflag = h[156];
        let padding = |n: u64| (BLOCK as u64 - n % BLOCK as u64) % BLOCK as u64;
        // Extension headers carry their own size; a PAX `size` applies to the entry.
        let size = match typeflag {
            b'x' | b'g' | b'L' | b'K' => hdr_size,
            _ => self.pending.pax_size.unwrap_or(hdr_size),
        };
        let pad = padding(size);
        match typeflag {
            b'x' | b'L' => {
                let kind = if typeflag == b'x' {
                    Data::Pax
                } else {
                    Data::LongName
                };
                self.ext.clear();
                self.state = data_state(size, pad, kind);
                if self.state == State::Header {
                    self.end_of_data(kind);
                }
            }
            b'S' => {
                self.pending = Pending::default();
                if h[482] != 0 {
                    self.sparse_data = (size, pad);
                    self.state = State::SparseExt;
                } else {
                    self.state = data_state(size, pad, Data::Raw);
                }
            }
            b'0' | 0 | b'7' if size > 0 && !self.pending.sparse => {
                let pending = std::mem::take(&mut self.pending);
                let path = pending
                    .long_name
                    .or(pending.pax_path)
                    .unwrap_or_else(|| ustar_name(h));
                // The header goes out now; the file record when its content has passed
                // (with its CRC), which is the same place in the record stream.
                self.flush_raw();
                self.file = Some((path, size, crc32fast::Hasher::new()));
                self.files += 1;
                self.state = data_state(size, pad, Data::File);
            }
            _ => {
                // Other types (and global PAX, GNU long link names): data raw.
                if typeflag != b'g' && typeflag != b'K' {
                    self.pending = Pending::default();
                }
                self.state = data_state(size, pad, Data::Raw);
            }
        }
    }

    fn end_of_data(&mut self, kind: Data) {
        match kind {
            Data::Pax => {
                let ext = std::mem::take(&mut self.ext);
                for (k, v) in pax_records(&ext) {
                    match k {
                        b"path" => self.pending.pax_path = Some(v.to_vec()),
                        b"size" => {
                            self.pending.pax_size =
                                std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
                        }
                        _ if k.starts_with(b"GNU.sparse.") => self.pending.sparse = true,
                        _ => {}
                    }
                }
            }
            Data::LongName => {
                let mut ext = std::mem::take(&mut self.ext);
                if let Some(i) = ext.iter().position(|b| *b == 0) {
                    ext.truncate(i);
                }
                self.pending.long_name = Some(ext);
            }
            Data::File => {
                if let Some((path, size, crc)) = self.file.take() {
                    if self.err.is_none() {
                        let mut rec = Vec::with_capacity(path.len() + 25);
                        rec.push(TAG_FILE);
                        write_varint(&mut rec, size);
                        rec.extend_from_slice(&crc.finalize().to_le_bytes());
                        write_varint(&mut rec, path.len() as u64);
                        rec.extend_from_slice(&path);
                        if let Err(e) = self.out.write_all(&rec) {
                            self.err = Some(e);
                        }
                    }
                }
            }
            Data::Raw => {}
        }
    }

    /// Ends the metadata: flushes raw bytes (a final partial block included) and writes
    /// the end record with the tar's total size. Returns the writer, the total size and
    /// the number of file records.
    ///
    /// Errors: the first write error of the metadata.
    pub(crate) fn finish(mut self) -> io::Result<(W, u64, u64)> {
        if self.hdr_len > 0 {
            let n = self.hdr_len;
            let part = self.hdr;
            self.raw(&part[..n]);
        }
        self.flush_raw();
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        let mut rec = vec![TAG_END];
        write_varint(&mut rec, self.total);
        self.out.write_all(&rec)?;
        Ok((self.out, self.total, self.files))
    }
}

fn data_state(left: u64, pad: u64, kind: Data) -> State {
    if left > 0 {
        State::Data { left, pad, kind }
    } else if pad > 0 {
        State::Pad { left: pad }
    } else {
        State::Header
    }
}

/// The ustar name of a header: `prefix/name` when the magic is POSIX ustar and the
/// prefix is set, else `name` (up to the first NUL).
fn ustar_name(h: &[u8; BLOCK]) -> Vec<u8> {
    let cstr = |b: &[u8]| -> Vec<u8> {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        b[..end].to_vec()
    };
    let name = cstr(&h[0..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix;
            p.push(b'/');
            p.extend_from_slice(&name);
            return p;
        }
    }
    name
}

/// A numeric header field: octal (space/NUL terminated) or GNU base-256 (high bit
/// set; negative values give `None`).
pub(crate) fn parse_numeric(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        if f[0] & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = (f[0] & 0x3f) as u64;
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

/// The `key=value` records of a PAX extended header (`"<len> <key>=<value>\n"`);
/// stops at the first malformed record.
fn pax_records(mut d: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let Some(sp) = d.iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&d[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > d.len() {
            break;
        }
        let rec = &d[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|b| *b == b'=') {
            out.push((&rec[..eq], &rec[eq + 1..]));
        }
        d = &d[len..];
    }
    out
}
