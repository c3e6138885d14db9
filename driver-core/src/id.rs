//! Validated identifiers. Strings travel only at the edges; inside, ids are newtypes.

use std::fmt;
use std::str::FromStr;

use crate::error::{DriverError, Result};

/// Longest id we accept. Long enough for a 64-hex id plus `-init`, short enough that
/// `<root>/<driver>/<id>/...` paths stay far from PATH_MAX.
pub const MAX_ID_LEN: usize = 128;

/// A driver-level layer id (Docker's "cache id"): the name of the layer's directory in
/// the driver's tree. ASCII letters, digits, `-`, `_` and `.`, not starting with `.`
/// or `-`, at most [`MAX_ID_LEN`] bytes. So it is one path component: no `/`, no `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerId(String);

impl LayerId {
    /// Validates `s` as a layer id.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        validate_component("layer id", &s)?;
        Ok(LayerId(s))
    }

    /// A fresh random id: 64 lowercase hex characters, as Docker makes them.
    pub fn random() -> Self {
        LayerId(random_hex(32))
    }

    /// The id of the init layer that sits under a container's read-write layer.
    pub fn init_of(&self) -> LayerId {
        LayerId(format!("{}-init", self.0))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `s` is a safe single path component made of `[A-Za-z0-9._-]`.
pub fn validate_component(kind: &'static str, s: &str) -> Result<()> {
    let bad = |reason| {
        Err(DriverError::InvalidId {
            kind,
            value: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > MAX_ID_LEN {
        return bad("longer than 128 bytes");
    }
    if s.starts_with('.') || s.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// `n` random bytes as lowercase hex, from the kernel's getrandom.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: getrandom writes at most `n - filled` bytes into the live buffer tail.
        #[allow(unsafe_code)]
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r > 0 {
            filled += r as usize;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerId({})", self.0)
    }
}

impl FromStr for LayerId {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self> {
        LayerId::new(s)
    }
}

impl AsRef<str> for LayerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "abc-init", &"f".repeat(64), "x.y_z-1"] {
            assert!(LayerId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "-x",
            ".hidden",
            "a b",
            "é",
            &"f".repeat(129),
        ] {
            assert!(LayerId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn random_is_64_hex_and_distinct() {
        let a = LayerId::random();
        let b = LayerId::random();
        assert_eq!(a.as_str().len(), 64);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a.init_of().as_str(), format!("{a}-init"));
    }
}
