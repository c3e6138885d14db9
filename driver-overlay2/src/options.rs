//! `[driver_options.overlay2]` from config.toml.

use driver_core::{DriverError, DriverOptions, Result};

/// Which mount syscalls to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountApiChoice {
    /// The new API when the probe found it, else classic.
    #[default]
    Auto,
    /// Force fsopen/fsconfig (fails where the kernel lacks `lowerdir+`).
    New,
    /// Force classic mount(2) (one-page option limit).
    Classic,
}

/// Parsed driver options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay2Options {
    /// Extra overlay options (`mountopt = "volatile,nodev"`), appended to every mount.
    pub mountopt: Vec<String>,
    /// overlay's inode index (`index = on|off`), default off like Docker.
    pub index: bool,
    /// `mount_api = auto|new|classic` (default auto); mainly for tests and benchmarks.
    pub mount_api: MountApiChoice,
}

fn bad(key: &str, reason: impl Into<String>) -> DriverError {
    DriverError::InvalidOption {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(bad(key, format!("expected on/off, got {other:?}"))),
    }
}

impl Overlay2Options {
    /// Parses the option table; unknown keys and bad values are
    /// [`DriverError::InvalidOption`].
    pub fn parse(opts: &DriverOptions) -> Result<Self> {
        let mut out = Overlay2Options::default();
        for (k, v) in opts {
            // Docker spells them `overlay2.mountopt`; accept both.
            let key = k.strip_prefix("overlay2.").unwrap_or(k);
            match key {
                "mountopt" => {
                    for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                        if o.starts_with("lowerdir")
                            || o.starts_with("upperdir")
                            || o.starts_with("workdir")
                        {
                            return Err(bad(k, format!("{o:?} is managed by the driver")));
                        }
                        if o.contains(':') && !o.starts_with("context=") {
                            return Err(bad(k, format!("{o:?}: ':' is not allowed")));
                        }
                        out.mountopt.push(o.to_owned());
                    }
                }
                "index" => out.index = parse_bool(k, v)?,
                "mount_api" => {
                    out.mount_api = match v.trim() {
                        "auto" => MountApiChoice::Auto,
                        "new" => MountApiChoice::New,
                        "classic" => MountApiChoice::Classic,
                        other => {
                            return Err(bad(
                                k,
                                format!("expected auto, new or classic, got {other:?}"),
                            ))
                        }
                    }
                }
                _ => {
                    return Err(bad(
                        k,
                        "unknown overlay2 option (known: mountopt, index, mount_api)",
                    ))
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> DriverOptions {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_known_and_rejects_unknown() {
        let o = Overlay2Options::parse(&opts(&[
            ("mountopt", "volatile, nodev"),
            ("index", "on"),
            ("mount_api", "classic"),
        ]))
        .unwrap();
        assert_eq!(o.mountopt, vec!["volatile", "nodev"]);
        assert!(o.index);
        assert_eq!(o.mount_api, MountApiChoice::Classic);
        assert_eq!(
            Overlay2Options::parse(&DriverOptions::new()).unwrap(),
            Overlay2Options::default()
        );
        for bad in [
            ("size", "10G"),
            ("index", "maybe"),
            ("mount_api", "x"),
            ("mountopt", "upperdir=/x"),
        ] {
            match Overlay2Options::parse(&opts(&[bad])) {
                Err(DriverError::InvalidOption { key, .. }) => assert_eq!(key, bad.0),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
