//! The stderr of an external runtime (`runc run`), relayed to ours without the
//! runtime's own failure line.
//!
//! runc writes a fatal error twice: first to its log (`--log FILE --log-format json`,
//! one `{"level":"error","msg":M}` line), then `M\n` to its stderr (runc 1.1
//! `utils.go` `fatalWithCode`: `logrus.Error(err)` then `fmt.Fprintln(os.Stderr,
//! err)`). Its stderr is also the container's stderr (without `-t`) and the only place
//! that fatal line can be stopped, so the runtime gets a pipe for stderr (as Docker
//! gives a container without `-t` pipes, not the caller's fds) and [`relay`] copies it
//! to ours byte for byte as it arrives, dropping only `M\n` once the log holds `M` as
//! an error: the failure then reaches the user once, as `layerctl`'s own line.

use std::io::{Read, Write};
use std::path::Path;

/// Copies `from` to `to` until end of file, each read as soon as it arrives, leaving
/// out the first `M\n` that follows the log `log` getting an error entry `M` (see the
/// module doc). Errors: a failed read or write ends the copy (logged; the container's
/// stderr must not stop the run).
pub fn relay(mut from: impl Read, mut to: impl Write, log: &Path) {
    let mut buf = vec![0u8; 64 * 1024];
    // The log is re-read only when its size changed (it is normally empty).
    let mut log_len = 0u64;
    let mut failure: Option<Vec<u8>> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the runtime's stderr failed");
                return;
            }
        };
        if let Ok(m) = std::fs::metadata(log) {
            if m.len() != log_len {
                log_len = m.len();
                failure = super::runtime_error(log).map(|m| format!("{m}\n").into_bytes());
            }
        }
        let chunk = &buf[..n];
        let written = match failure.as_deref().and_then(|f| find_last(chunk, f)) {
            Some(at) => {
                let end = at + failure.take().map_or(0, |f| f.len());
                to.write_all(&chunk[..at])
                    .and_then(|()| to.write_all(&chunk[end..]))
            }
            None => to.write_all(chunk),
        };
        if let Err(e) = written.and_then(|()| to.flush()) {
            tracing::warn!(error = %e, "writing the runtime's stderr failed");
            return;
        }
    }
}

/// Where the last occurrence of `needle` in `hay` starts.
fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns its chunks one read at a time, and appends `log_line` to
    /// `log` before returning chunk `at` (runc logs, then writes stderr).
    struct Chunks<'a> {
        chunks: Vec<&'a [u8]>,
        next: usize,
        log: &'a Path,
        at: usize,
        log_line: &'a str,
    }

    impl Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(c) = self.chunks.get(self.next) else {
                return Ok(0);
            };
            if self.next == self.at {
                let mut f = std::fs::OpenOptions::new().append(true).open(self.log)?;
                f.write_all(self.log_line.as_bytes())?;
            }
            self.next += 1;
            buf[..c.len()].copy_from_slice(c);
            Ok(c.len())
        }
    }

    fn relayed(chunks: Vec<&[u8]>, at: usize) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        std::fs::write(&log, "{\"level\":\"warning\",\"msg\":\"w\"}\n").unwrap();
        let r = Chunks {
            chunks,
            next: 0,
            log: &log,
            at,
            log_line: "{\"level\":\"error\",\"msg\":\"runc run failed: exec: nope\"}\n",
        };
        let mut out = Vec::new();
        relay(r, &mut out, &log);
        out
    }

    #[test]
    fn drops_only_the_logged_failure_line() {
        // The container's bytes (no newline, control bytes) pass unchanged; runc's
        // fatal line after its log entry goes.
        let out = relayed(
            vec![b"err\n\x01part", b"ial\n", b"runc run failed: exec: nope\n"],
            2,
        );
        assert_eq!(out, b"err\n\x01partial\n");
        // In the same read as the container's last bytes.
        let out = relayed(vec![b"x\nrunc run failed: exec: nope\n"], 0);
        assert_eq!(out, b"x\n");
    }

    #[test]
    fn keeps_the_line_when_the_log_has_no_such_error() {
        // Written by the container before the runtime logged anything: it stays.
        let out = relayed(
            vec![b"runc run failed: exec: nope\n", b"more\n"],
            usize::MAX,
        );
        assert_eq!(out, b"runc run failed: exec: nope\nmore\n");
        // Only once: a second copy after the dropped one is the container's.
        let out = relayed(
            vec![
                b"runc run failed: exec: nope\n",
                b"runc run failed: exec: nope\n",
            ],
            0,
        );
        assert_eq!(out, b"runc run failed: exec: nope\n");
    }
}
