//! Configuration: `--config`, then `$LAYERCTL_CONFIG`, then `/etc/layerctl/config.toml`
//! (a missing default file is fine, a missing named file is an error). Flags override
//! the file. Unknown keys and bad values are errors naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driver_core::DriverOptions;
use serde::Deserialize;

use crate::exit::ConfigError;
use crate::Cli;

/// Default store root.
pub const DEFAULT_ROOT: &str = "/var/lib/layerctl";
/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/layerctl/config.toml";
/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "LAYERCTL_CONFIG";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    root: Option<PathBuf>,
    driver: Option<String>,
    #[serde(default)]
    driver_options: BTreeMap<String, BTreeMap<String, toml::Value>>,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    store: StoreTable,
    #[serde(default)]
    run: RunConfig,
}

/// `[limits]`: bounds on each imported layer (decompression bombs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsConfig {
    /// Largest decompressed layer, bytes (>= 1).
    max_layer_size: Option<u64>,
    /// Most tar entries in one layer (>= 1).
    max_layer_entries: Option<u64>,
}

/// `[store]`: how the layer store behaves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    /// `sync = "filesystem" | "none"` ([`layerstore::SyncMode`]; default filesystem).
    sync: Option<String>,
}

/// `[run]`: how `layerctl run` starts processes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunConfig {
    /// `libcontainer` (in-process, default) or a runc-compatible binary.
    runtime: Option<String>,
}

/// The effective settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Store root.
    pub root: PathBuf,
    /// Driver named by flag or file (None: recorded or best).
    pub driver: Option<String>,
    /// `[driver_options.NAME]` tables, values as strings.
    pub driver_options: BTreeMap<String, DriverOptions>,
    /// `--json`.
    pub json: bool,
    /// `[limits]`: bounds on each imported layer.
    pub limits: layerstore::ImportLimits,
    /// `[store] sync`.
    pub sync: layerstore::SyncMode,
    /// `[run] runtime` (None: libcontainer in-process).
    pub runtime: Option<String>,
}

impl Settings {
    /// Loads the configuration file and applies the flags.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        let (path, explicit) = match (&cli.config, std::env::var_os(CONFIG_ENV)) {
            (Some(p), _) => (p.clone(), true),
            (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), true),
            _ => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let file = read_config(&path, explicit)?;
        let mut driver_options = BTreeMap::new();
        let known = crate::open::registry().names();
        for (driver, table) in file.driver_options {
            // A table for no driver (`[driver_options.overlay]`) would be ignored
            // silently: an unknown key, named like the others (exit 7).
            if !known.contains(&driver.as_str()) {
                return Err(ConfigError(format!(
                    "{}: driver_options.{driver}: no such driver (known: {})",
                    path.display(),
                    known.join(", ")
                )));
            }
            let mut opts = DriverOptions::new();
            for (k, v) in table {
                let s = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Integer(i) => i.to_string(),
                    other => {
                        return Err(ConfigError(format!(
                            "{}: driver_options.{driver}.{k}: expected a string, bool or integer, got {}",
                            path.display(),
                            other.type_str()
                        )))
                    }
                };
                opts.insert(k, s);
            }
            driver_options.insert(driver, opts);
        }
        let root = cli
            .root
            .clone()
            .or(file.root)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        if root.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "{}: root: must not be empty",
                path.display()
            )));
        }
        let sync = match &file.store.sync {
            None => layerstore::SyncMode::default(),
            Some(s) => s
                .parse()
                .map_err(|e| ConfigError(format!("{}: store.sync: {e}", path.display())))?,
        };
        let mut limits = layerstore::ImportLimits::default();
        for (key, value, slot) in [
            (
                "max_layer_size",
                file.limits.max_layer_size,
                &mut limits.max_layer_size,
            ),
            (
                "max_layer_entries",
                file.limits.max_layer_entries,
                &mut limits.max_layer_entries,
            ),
        ] {
            match value {
                Some(0) => {
                    return Err(ConfigError(format!(
                        "{}: limits.{key}: must be at least 1",
                        path.display()
                    )))
                }
                Some(v) => *slot = v,
                None => {}
            }
        }
        Ok(Settings {
            limits,
            sync,
            root,
            driver: cli.driver.clone().or(file.driver),
            driver_options,
            json: cli.json,
            runtime: file.run.runtime,
        })
    }

    /// The options for driver `name` (empty when the file has none).
    pub fn options_for(&self, name: &str) -> DriverOptions {
        self.driver_options.get(name).cloned().unwrap_or_default()
    }
}

fn read_config(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileConfig::default())
        }
        Err(e) => return Err(ConfigError(format!("config file {}: {e}", path.display()))),
    };
    toml::from_str(&text).map_err(|e| {
        // toml's message names unknown keys (`unknown field `x``); for bad values add
        // the offending line, which names the key. Keep it all on one line.
        let msg = e.message().replace('\n', " ");
        let at = e
            .span()
            .and_then(|sp| {
                let line_no = text[..sp.start.min(text.len())].matches('\n').count();
                text.lines()
                    .nth(line_no)
                    .map(|l| (line_no + 1, l.trim().to_owned()))
            })
            .map(|(n, l)| format!("line {n} `{l}`: "))
            .unwrap_or_default();
        ConfigError(format!("config file {}: {at}{msg}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn unknown_key_is_named() {
        let e = toml::from_str::<FileConfig>("rooot = \"/x\"").unwrap_err();
        assert!(e.message().contains("rooot"), "{}", e.message());
        let e = toml::from_str::<FileConfig>("root = 3").unwrap_err();
        assert!(!e.message().is_empty());
    }

    #[test]
    fn driver_options_parse() {
        let c: FileConfig = toml::from_str(
            "driver = \"vfs\"\n[driver_options.overlay2]\nmount_api = \"new\"\nx = true\n",
        )
        .unwrap();
        assert_eq!(c.driver.as_deref(), Some("vfs"));
        assert_eq!(c.driver_options["overlay2"].len(), 2);
    }

    #[test]
    fn options_of_an_unknown_driver_are_refused() {
        let dir = std::env::temp_dir().join(format!("layerctl-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, "[driver_options.overlay]\nindex = \"on\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "layerctl".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
            "images".as_ref(),
        ])
        .unwrap();
        let e = Settings::load(&cli).unwrap_err();
        assert!(
            e.0.contains("driver_options.overlay: no such driver"),
            "{e}"
        );
        std::fs::write(&file, "[driver_options.overlay2]\nindex = \"on\"\n").unwrap();
        let cfg = Settings::load(&cli).unwrap();
        assert_eq!(cfg.options_for("overlay2").len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn store_sync_parses() {
        let c: FileConfig = toml::from_str("[store]\nsync = \"none\"\n").unwrap();
        assert_eq!(c.store.sync.as_deref(), Some("none"));
        assert_eq!(
            "none".parse::<layerstore::SyncMode>(),
            Ok(layerstore::SyncMode::None)
        );
        assert_eq!(
            "filesystem".parse::<layerstore::SyncMode>(),
            Ok(layerstore::SyncMode::Filesystem)
        );
        assert!("fs".parse::<layerstore::SyncMode>().is_err());
        assert!(toml::from_str::<FileConfig>("[store]\nsnyc = 1\n").is_err());
    }
}
