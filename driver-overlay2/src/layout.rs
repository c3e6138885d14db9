//! Paths of the driver's tree and the small per-layer metadata files (`link`, `lower`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::fsutil::read_trimmed;
use driver_core::LayerId;

/// Directory of short links, relative to home.
pub const LINK_DIR: &str = "l";
/// Length of a short link name, as Docker makes them (base32 of 128 random bits, cut).
pub const SHORT_ID_LEN: usize = 26;
/// Suffix of a layer directory being removed (`.<id>-removing`).
pub const REMOVING_SUFFIX: &str = "-removing";
/// Prefix of a layer directory being created (`.creating-<id>-<rand>`).
pub const CREATING_PREFIX: &str = ".creating-";

/// The paths of one driver home. Pure path arithmetic, no I/O.
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// Paths below `home` (`<root>/overlay2`).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Layout { home: home.into() }
    }

    /// `<home>`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/l`.
    pub fn links(&self) -> PathBuf {
        self.home.join(LINK_DIR)
    }

    /// `<home>/l/<short>`.
    pub fn link_path(&self, short: &str) -> PathBuf {
        self.links().join(short)
    }

    /// `<home>/refs`, the mount counts.
    pub fn refs(&self) -> PathBuf {
        self.home.join("refs")
    }

    /// `<home>/<id>`.
    pub fn dir(&self, id: &LayerId) -> PathBuf {
        self.home.join(id.as_str())
    }

    /// `<home>/<id>/diff`.
    pub fn diff(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("diff")
    }

    /// `<home>/<id>/work` (read-write layers only).
    pub fn work(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("work")
    }

    /// `<home>/<id>/merged`.
    pub fn merged(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("merged")
    }

    /// `<home>/<id>/lower-merged`: mount point of the internal mount keyed by `id` (the
    /// top layer of a group of a deep stack, see [`crate::plan::InternalMount`]).
    pub fn lower_merged(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join(crate::plan::LOWER_MERGED)
    }

    /// `<home>/<id>/lower-wh`: the whiteout summary of the group keyed by `id`.
    pub fn lower_whiteouts(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join(crate::plan::LOWER_WHITEOUTS)
    }

    /// The layer a short link points to (`l/<short> -> ../<id>/diff`).
    pub fn id_of_link(&self, short: &str) -> Result<LayerId> {
        let p = self.link_path(short);
        let t = fs::read_link(&p).ctx("read short link", &p)?;
        let mut c = t.components();
        match (c.next(), c.next(), c.next(), c.next()) {
            (Some(std::path::Component::ParentDir), Some(id), Some(d), None)
                if d.as_os_str() == "diff" =>
            {
                LayerId::new(id.as_os_str().to_string_lossy().into_owned())
            }
            _ => Err(DriverError::Corrupt {
                id: short.to_owned(),
                reason: format!(
                    "short link {} points to {}, not ../<id>/diff",
                    p.display(),
                    t.display()
                ),
            }),
        }
    }

    /// `<home>/<id>/link`: the layer's short link name.
    pub fn link_file(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("link")
    }

    /// `<home>/<id>/lower`: `l/A:l/B:...`, the ancestors' short links, nearest first.
    pub fn lower_file(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("lower")
    }

    /// Reads the layer's short link name and checks its syntax.
    pub fn read_link(&self, id: &LayerId) -> Result<String> {
        let p = self.link_file(id);
        let s = read_trimmed(&p)?;
        if !is_short_id(&s) {
            return Err(DriverError::Corrupt {
                id: id.to_string(),
                reason: format!("{} holds {s:?}, not a short link name", p.display()),
            });
        }
        Ok(s)
    }

    /// Reads the layer's ancestors' short links, nearest first (empty for a base layer).
    pub fn read_lowers(&self, id: &LayerId) -> Result<Vec<String>> {
        let p = self.lower_file(id);
        match fs::read_to_string(&p) {
            Ok(s) => parse_lower(&s).map_err(|reason| DriverError::Corrupt {
                id: id.to_string(),
                reason: format!("{}: {reason}", p.display()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).ctx("read", p),
        }
    }
}

/// Whether `s` looks like a short link name we made: 26 of `[A-Z0-9]`.
pub fn is_short_id(s: &str) -> bool {
    s.len() == SHORT_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A fresh short link name: 26 characters of base32 (RFC 4648 alphabet) from 130
/// random bits, like Docker's `generateID`.
pub fn new_short_id() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hex = driver_core::id::random_hex(SHORT_ID_LEN);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let v = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("00"), 16).unwrap_or(0);
            ALPHABET[(v & 31) as usize] as char
        })
        .collect()
}

/// Parses a `lower` file: `l/A:l/B`, each entry `l/<short id>`.
pub fn parse_lower(s: &str) -> std::result::Result<Vec<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(':')
        .map(|part| {
            let short = part
                .strip_prefix("l/")
                .ok_or_else(|| format!("entry {part:?} does not start with l/"))?;
            if !is_short_id(short) {
                return Err(format!("entry {part:?} is not a short link"));
            }
            Ok(short.to_owned())
        })
        .collect()
}

/// Formats a `lower` file from short links, nearest first.
pub fn format_lower(shorts: &[String]) -> String {
    shorts
        .iter()
        .map(|s| format!("{LINK_DIR}/{s}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_valid_and_distinct() {
        let a = new_short_id();
        let b = new_short_id();
        assert!(is_short_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_short_id("abc"));
        assert!(!is_short_id(&"a".repeat(26)));
    }

    #[test]
    fn lower_round_trip_and_rejects() {
        let a = "A".repeat(26);
        let b = "B".repeat(26);
        let s = format_lower(&[a.clone(), b.clone()]);
        assert_eq!(s, format!("l/{a}:l/{b}"));
        assert_eq!(parse_lower(&s).unwrap(), vec![a, b]);
        assert_eq!(parse_lower("").unwrap(), Vec::<String>::new());
        assert!(parse_lower("l/../x").is_err());
        assert!(parse_lower("/abs").is_err());
    }
}
