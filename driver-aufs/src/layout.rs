//! Paths of the driver's tree (Docker's `/var/lib/docker/aufs`) and the `layers/<id>`
//! ancestor files. Pure path arithmetic and small parsers; the only I/O is reading and
//! writing one `layers/<id>` file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use driver_core::error::{DriverError, IoContext, Result};
use driver_core::LayerId;

/// Prefix of a layer directory being created (`diff/.creating-<id>`).
pub const CREATING_PREFIX: &str = ".creating-";
/// Suffix of a layer directory being removed (`diff/.<id>-removing`).
pub const REMOVING_SUFFIX: &str = "-removing";

/// The paths of one driver home (`<root>/aufs`).
#[derive(Debug, Clone)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// Paths below `home`.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Layout { home: home.into() }
    }

    /// `<home>`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/diff`: one directory per layer, its own content in AUFS form.
    pub fn diff_root(&self) -> PathBuf {
        self.home.join("diff")
    }

    /// `<home>/layers`: one file per layer listing its ancestors.
    pub fn layers_root(&self) -> PathBuf {
        self.home.join("layers")
    }

    /// `<home>/mnt`: one mount point per layer.
    pub fn mnt_root(&self) -> PathBuf {
        self.home.join("mnt")
    }

    /// `<home>/refs`: mount reference counts (driver_core::refcount).
    pub fn refs(&self) -> PathBuf {
        self.home.join("refs")
    }

    /// `<home>/run`: `<id>.pid` and `<id>.log` of running userspace servers.
    pub fn run_root(&self) -> PathBuf {
        self.home.join("run")
    }

    /// `<home>/diff/<id>`.
    pub fn diff(&self, id: &LayerId) -> PathBuf {
        self.diff_root().join(id.as_str())
    }

    /// `<home>/layers/<id>`.
    pub fn layers_file(&self, id: &LayerId) -> PathBuf {
        self.layers_root().join(id.as_str())
    }

    /// `<home>/mnt/<id>`.
    pub fn mnt(&self, id: &LayerId) -> PathBuf {
        self.mnt_root().join(id.as_str())
    }

    /// `<home>/run/<id>.pid`: pid of the userspace server of `id`'s mount.
    pub fn pid_file(&self, id: &LayerId) -> PathBuf {
        self.run_root().join(format!("{}.pid", id.as_str()))
    }

    /// `<home>/run/<id>.log`: stderr of the userspace server of `id`'s mount.
    pub fn log_file(&self, id: &LayerId) -> PathBuf {
        self.run_root().join(format!("{}.log", id.as_str()))
    }

    /// `<home>/diff/.creating-<id>`: a layer being assembled.
    pub fn creating(&self, id: &LayerId) -> PathBuf {
        self.diff_root()
            .join(format!("{CREATING_PREFIX}{}", id.as_str()))
    }

    /// `<home>/diff/.<id>-removing`: a layer being deleted.
    pub fn removing(&self, id: &LayerId) -> PathBuf {
        self.diff_root()
            .join(format!(".{}{REMOVING_SUFFIX}", id.as_str()))
    }

    /// The ancestors of `id`, nearest first, from `layers/<id>`.
    ///
    /// Errors: [`DriverError::NotFound`] when the file is missing;
    /// [`DriverError::Corrupt`] when a line is not a valid layer id.
    pub fn read_ancestors(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let p = self.layers_file(id);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DriverError::NotFound { id: id.to_string() })
            }
            Err(e) => return Err(e).ctx("read", &p),
        };
        parse_ancestors(&text).map_err(|reason| DriverError::Corrupt {
            id: id.to_string(),
            reason: format!("{}: {reason}", p.display()),
        })
    }
}

/// Parses a `layers/<id>` file: one layer id a line, nearest ancestor first (Docker's
/// format; a trailing newline or blank lines are fine).
pub fn parse_ancestors(text: &str) -> std::result::Result<Vec<LayerId>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| LayerId::new(l).map_err(|e| format!("line {l:?}: {e}")))
        .collect()
}

/// Formats a `layers/<id>` file from ancestors, nearest first.
pub fn format_ancestors(ancestors: &[LayerId]) -> String {
    let mut s = String::new();
    for a in ancestors {
        s.push_str(a.as_str());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lid(s: &str) -> LayerId {
        LayerId::new(s).unwrap()
    }

    #[test]
    fn ancestors_round_trip() {
        let a = vec![lid("b-init"), lid("a1"), lid("base")];
        let text = format_ancestors(&a);
        assert_eq!(text, "b-init\na1\nbase\n");
        assert_eq!(parse_ancestors(&text).unwrap(), a);
        assert_eq!(parse_ancestors("").unwrap(), Vec::<LayerId>::new());
        assert_eq!(
            parse_ancestors("x\n\n y \n").unwrap(),
            vec![lid("x"), lid("y")]
        );
    }

    #[test]
    fn ancestors_refuse_paths() {
        for bad in ["../x", "a/b", ".hidden", "/abs"] {
            assert!(parse_ancestors(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        let l = Layout::new("/r/aufs");
        let id = lid("abc");
        assert_eq!(l.diff(&id), Path::new("/r/aufs/diff/abc"));
        assert_eq!(l.layers_file(&id), Path::new("/r/aufs/layers/abc"));
        assert_eq!(l.mnt(&id), Path::new("/r/aufs/mnt/abc"));
        assert_eq!(l.removing(&id), Path::new("/r/aufs/diff/.abc-removing"));
        assert_eq!(l.creating(&id), Path::new("/r/aufs/diff/.creating-abc"));
    }
}
