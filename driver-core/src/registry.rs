//! Name -> constructor registry, so the CLI can pick a driver from config.toml.

use std::fmt;
use std::path::Path;

use crate::driver::{Driver, DriverOptions};
use crate::error::{DriverError, Result};

/// Builds a driver whose home is the given directory (`<root>/<name>`).
pub type DriverFactory = fn(home: &Path, options: &DriverOptions) -> Result<Box<dyn Driver>>;

/// Tells whether the driver can work on this kernel and filesystem; `Err(NotSupported)`
/// with the reason when it cannot. `home` is where it would live (probes may test-mount
/// below it).
pub type ProbeFn = fn(home: &Path) -> Result<()>;

/// One registered driver.
#[derive(Clone, Copy)]
pub struct DriverEntry {
    /// Registry name (`vfs`, `overlay2`, `aufs`).
    pub name: &'static str,
    /// Lower is preferred when picking the default driver.
    pub priority: u32,
    /// Constructor.
    pub factory: DriverFactory,
    /// Support probe.
    pub probe: ProbeFn,
}

impl fmt::Debug for DriverEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverEntry")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

/// The set of drivers compiled into a program.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    entries: Vec<DriverEntry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a driver; a later entry with the same name replaces the earlier one.
    pub fn register(&mut self, entry: DriverEntry) {
        self.entries.retain(|e| e.name != entry.name);
        self.entries.push(entry);
        self.entries.sort_by_key(|e| e.priority);
    }

    /// All entries, most preferred first.
    pub fn entries(&self) -> &[DriverEntry] {
        &self.entries
    }

    /// The names of all entries, most preferred first.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Result<&DriverEntry> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| DriverError::NotSupported {
                driver: name.to_owned(),
                reason: format!("no such driver; known drivers: {}", self.names().join(", ")),
            })
    }

    /// Probes every driver under `root/<name>`, most preferred first.
    pub fn probe_all(&self, root: &Path) -> Vec<(&'static str, Result<()>)> {
        self.entries
            .iter()
            .map(|e| (e.name, (e.probe)(&root.join(e.name))))
            .collect()
    }

    /// The most preferred driver whose probe succeeds under `root`.
    pub fn best(&self, root: &Path) -> Result<&DriverEntry> {
        let mut reasons = Vec::new();
        for e in &self.entries {
            match (e.probe)(&root.join(e.name)) {
                Ok(()) => return Ok(e),
                Err(err) => reasons.push(format!("{}: {err}", e.name)),
            }
        }
        Err(DriverError::NotSupported {
            driver: "any".into(),
            reason: reasons.join("; "),
        })
    }

    /// Builds driver `name` with home `root/<name>`.
    pub fn open(
        &self,
        name: &str,
        root: &Path,
        options: &DriverOptions,
    ) -> Result<Box<dyn Driver>> {
        let e = self.get(name)?;
        (e.factory)(&root.join(e.name), options)
    }
}
