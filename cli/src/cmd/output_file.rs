//! Where `export` and `save` write their archive (`-o FILE|-`).
//!
//! - `-`: standard output.
//! - an existing FILE that is no regular file (`/dev/null`, `/dev/stdout`, a FIFO): written
//!   in place, as tar does; a rename would replace the device node or pipe itself.
//! - a directory: refused before anything is written.
//! - otherwise FILE (a symlink is followed: its target is replaced, the link stays) is
//!   written next to itself under a temporary name, fsynced and renamed into place, so a
//!   failed write leaves no partial FILE.
//!
//! A write that fails on the output itself (a closed pipe, a full disk) is reported as
//! `write <output>: <error>`, naming standard output or FILE, not the entry being
//! written when it happened.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;

/// Output buffer: archives are written in large sequential pieces.
const BUF: usize = 256 << 10;

/// A writer that keeps the first error of its inner writer, so that a failure of the
/// output is told apart from a failure of what was being read when it happened.
struct Recording<W> {
    inner: W,
    failed: Option<String>,
}

impl<W: Write> Recording<W> {
    fn new(inner: W) -> Self {
        Recording {
            inner,
            failed: None,
        }
    }

    fn keep<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if self.failed.is_none() && e.kind() != io::ErrorKind::Interrupted {
                self.failed = Some(e.to_string());
            }
        }
        r
    }
}

impl<W: Write> Write for Recording<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

/// Runs `write` into `out` and flushes it; an error of the output itself becomes
/// `write <name>: <error>`.
fn write_through<W: Write>(
    out: &mut BufWriter<Recording<W>>,
    name: &str,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let result = write(out).and_then(|()| Ok(out.flush()?));
    match (result, &out.get_ref().failed) {
        (Err(_), Some(e)) => Err(anyhow::anyhow!("write {name}: {e}")),
        (r, _) => r,
    }
}

/// Runs `write` with the writer for `output` (see the module doc) and completes the
/// file. `what` names the command for the warning when a partial file cannot be removed.
pub fn write_output(
    output: &str,
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if output == "-" {
        let mut out = BufWriter::with_capacity(BUF, Recording::new(std::io::stdout().lock()));
        return write_through(&mut out, "standard output", write);
    }
    let mut dest = PathBuf::from(output);
    match std::fs::metadata(&dest) {
        Ok(md) if md.is_dir() => anyhow::bail!("output {}: is a directory", dest.display()),
        Ok(md) if !md.is_file() => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&dest)
                .with_context(|| format!("open {}", dest.display()))?;
            let mut out = BufWriter::with_capacity(BUF, Recording::new(f));
            return write_through(&mut out, &dest.display().to_string(), write);
        }
        Ok(_) => {
            dest = std::fs::canonicalize(&dest)
                .with_context(|| format!("resolve {}", dest.display()))?;
        }
        Err(_) => {}
    }
    let name = dest
        .file_name()
        .with_context(|| format!("output {output:?} names no file"))?;
    let tmp = dest.with_file_name(format!(
        ".{}.layerctl-{}",
        name.to_string_lossy(),
        driver_core::id::random_hex(6)
    ));
    let result = (|| -> anyhow::Result<()> {
        // Named by the output the user gave (the temp file sits next to it).
        let f = File::create(&tmp).with_context(|| format!("create {}", dest.display()))?;
        let mut out = BufWriter::with_capacity(BUF, Recording::new(f));
        write_through(&mut out, &dest.display().to_string(), write)?;
        let f = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("write {}", tmp.display()))?
            .inner;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        if let Err(e) = std::fs::remove_file(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %tmp.display(), error = %e, "removing the partial {what} failed");
            }
        }
    }
    result
}
