//! Output helpers: tables and sizes.

use std::io::{self, Write};

/// Prints `rows` as left-aligned columns under `header`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let mut out = io::stdout().lock();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = width[i]));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Prints a JSON value, pretty.
pub fn json(v: &serde_json::Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).map_err(io::Error::other)?
    )
}

/// Prints one line on stdout.
pub fn line(s: impl std::fmt::Display) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{s}")
}

/// Prints a path on one stdout line as its exact bytes (a root named by non-UTF-8
/// bytes must come out usable: `cd "$(layerctl mount c)"`), not `Path::display`'s
/// U+FFFD replacement.
pub fn path_line(p: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = io::stdout().lock();
    out.write_all(p.as_os_str().as_bytes())?;
    out.write_all(b"\n")
}

/// Bytes in a human unit (decimal, like docker): `4.2MB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + UNITS[u]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_215_000), "4.215MB");
    }
}
