//! The one error type of every driver.

use std::io;
use std::path::PathBuf;

/// Result alias used by every driver operation.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// What went wrong in a driver operation. Every variant names the operation and the
/// object (layer id, path, mount target, tar entry) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A filesystem call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The layer does not exist in this driver.
    #[error("layer {id} does not exist")]
    NotFound { id: String },
    /// `create` was asked for an id that already exists.
    #[error("layer {id} already exists")]
    AlreadyExists { id: String },
    /// `create` named a parent that does not exist.
    #[error("parent layer {parent} of {id} does not exist")]
    ParentNotFound { id: String, parent: String },
    /// The layer is mounted or otherwise in use.
    #[error("layer {id} is busy: {reason}")]
    Busy { id: String, reason: String },
    /// The driver cannot work here (kernel, filesystem or capability missing).
    #[error("driver {driver} is not supported here: {reason}")]
    NotSupported { driver: String, reason: String },
    /// An id failed validation.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A tar entry was refused because applying it could leave the layer directory or
    /// corrupt the layer (`..`, absolute path, escaping link, bad whiteout name...).
    #[error("unsafe tar entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    /// The tar stream itself is unreadable: truncated, garbage, corrupt compression.
    #[error("reading layer tar{}: {source}", entry.as_ref().map(|e| format!(" at entry {e:?}")).unwrap_or_default())]
    Tar {
        entry: Option<String>,
        #[source]
        source: io::Error,
    },
    /// mount(2) / fsmount failed.
    #[error("mount {fstype} on {}: {source}", target.display())]
    Mount {
        target: PathBuf,
        fstype: String,
        #[source]
        source: io::Error,
    },
    /// umount(2) failed.
    #[error("unmount {}: {source}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The stack is deeper than the driver or kernel allows. `depth` is the image's
    /// own layer count (read-write layers such as a container's init layer are not
    /// counted) and `limit` the most image layers the driver can stack there.
    #[error("an image of {depth} layers exceeds the {driver} limit of {limit} layers")]
    TooDeep {
        driver: String,
        depth: usize,
        limit: usize,
    },
    /// A `[driver_options.NAME]` key is unknown or its value is bad.
    #[error("driver option {key}: {reason}")]
    InvalidOption { key: String, reason: String },
    /// The layer's on-disk state is inconsistent (missing file, bad content).
    #[error("layer {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
}

impl DriverError {
    /// Shorthand for [`DriverError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DriverError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for an [`DriverError::Io`] from a nix errno.
    pub fn errno(op: &'static str, path: impl Into<PathBuf>, errno: nix::errno::Errno) -> Self {
        Self::io(op, path, io::Error::from_raw_os_error(errno as i32))
    }
}

/// Adds operation and path context to `io::Result`s.
pub trait IoContext<T> {
    /// Wraps the error as [`DriverError::Io`].
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| DriverError::io(op, path, e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| DriverError::errno(op, path, e))
    }
}
