//! Error -> exit code and one-line message.
//!
//! 0 ok; 1 other; 2 usage (clap); 3 not found; 4 conflict; 5 invalid input; 6 not
//! supported; 7 config error; 8 check found problems (the store is damaged); 9 `check
//! --repair` found problems and fixed them all (the store is consistent now). `run`: 125 the runtime could not
//! start the process (or an error that is 1 elsewhere stopped the run first, see `main_entry`),
//! else the process's own status.

use std::fmt;

use driver_core::DriverError;
use layerstore::{ErrorKind, StoreError};

/// A process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub i32);

/// A configuration error (exit 7).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// `check` found problems (exit 8).
#[derive(Debug)]
pub struct CheckFailed(pub usize);

impl fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store check found {} problem(s)", self.0)
    }
}
impl std::error::Error for CheckFailed {}

/// `check --repair` fixed every problem it found (exit 9).
#[derive(Debug)]
pub struct CheckRepaired(pub usize);

impl fmt::Display for CheckRepaired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store repaired: {} problem(s) fixed, the store is consistent now",
            self.0
        )
    }
}
impl std::error::Error for CheckRepaired {}

fn kind_code(k: ErrorKind) -> i32 {
    match k {
        ErrorKind::NotFound => 3,
        ErrorKind::Conflict => 4,
        ErrorKind::InvalidInput => 5,
        ErrorKind::NotSupported => 6,
        ErrorKind::Config => 7,
        ErrorKind::Other => 1,
    }
}

/// The exit code for an error: the first error of the chain we know decides.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return ExitCode(kind_code(s.kind()));
        }
        if let Some(d) = cause.downcast_ref::<DriverError>() {
            return ExitCode(kind_code(layerstore::error::driver_kind(d)));
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return ExitCode(7);
        }
        if cause.downcast_ref::<CheckFailed>().is_some() {
            return ExitCode(8);
        }
        if cause.downcast_ref::<CheckRepaired>().is_some() {
            return ExitCode(9);
        }
        if let Some(r) = cause.downcast_ref::<crate::runtime::RunError>() {
            return ExitCode(r.exit_code());
        }
    }
    ExitCode(1)
}

/// The message chain joined with ": ", skipping causes a message already shows.
pub fn message_of(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    // One line, and no terminal control bytes from hostile input (tar names, garbage).
    msg.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => " ".to_owned(),
            c if c.is_control() || c == '\u{fffd}' => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = anyhow::Error::new(StoreError::ContainerNotFound { name: "x".into() });
        assert_eq!(exit_code(&e), ExitCode(3));
        let e = anyhow::Error::new(DriverError::Busy {
            id: "a".into(),
            reason: "mounted".into(),
        })
        .context("removing");
        assert_eq!(exit_code(&e), ExitCode(4));
        assert_eq!(
            exit_code(&anyhow::Error::new(ConfigError("k".into()))),
            ExitCode(7)
        );
        assert_eq!(exit_code(&anyhow::Error::new(CheckFailed(2))), ExitCode(8));
        assert_eq!(
            exit_code(&anyhow::Error::new(CheckRepaired(2))),
            ExitCode(9)
        );
        assert_eq!(exit_code(&anyhow::anyhow!("x")), ExitCode(1));
    }

    #[test]
    fn message_joins_without_repeats() {
        let io = std::io::Error::other("boom");
        let e = anyhow::Error::new(StoreError::io("read", "/x", io)).context("importing");
        assert_eq!(message_of(&e), "importing: read /x: boom");
        let e = anyhow::anyhow!("bad\u{1b}[31m\nname");
        assert_eq!(message_of(&e), "bad\\u{1b}[31m name");
    }
}
