//! The error type of the layer store.

use std::io;
use std::path::{Path, PathBuf};

use driver_core::DriverError;

/// Result alias of the layer store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Broad class of an error, for exit codes and callers that branch on meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Image, container, layer or file does not exist.
    NotFound,
    /// Exists already, in use, mounted, busy.
    Conflict,
    /// Bad, corrupt or truncated input; digest mismatch; unsafe entry; unknown format.
    InvalidInput,
    /// Driver, kernel or depth limit not supported.
    NotSupported,
    /// Bad driver option (from the configuration).
    Config,
    /// Anything else (I/O, mount failures, corrupt store).
    Other,
}

/// What went wrong in a layer-store operation. Variants name the object concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A storage-driver call failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A filesystem call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An id or name failed validation.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    /// No image matches the reference.
    #[error("image {reference:?} not found")]
    ImageNotFound { reference: String },
    /// Several images match an id prefix.
    #[error("image reference {reference:?} is ambiguous: {count} images match")]
    AmbiguousImage { reference: String, count: usize },
    /// No such container.
    #[error("container {name} not found")]
    ContainerNotFound { name: String },
    /// No such layer in the layer database.
    #[error("layer {chain} not found")]
    LayerNotFound { chain: String },
    /// The input file does not exist.
    #[error("input {} not found", path.display())]
    InputNotFound { path: PathBuf },
    /// A container of that name exists.
    #[error("container {name} already exists")]
    ContainerExists { name: String },
    /// The image is used by containers.
    #[error("image {image} is used by container(s) {}", containers.join(", "))]
    ImageInUse {
        image: String,
        containers: Vec<String>,
    },
    /// The container is mounted.
    #[error("container {name} is mounted ({count} reference(s)); unmount it or use --force")]
    ContainerMounted { name: String, count: u32 },
    /// A live `layerctl run` runs the container (its process uses the mounted root):
    /// `rm`, even `--force`, refuses it (removing its layers would pull the root
    /// filesystem from under the process; Docker's `rm` refuses a running container too).
    #[error("container {name} is running (layerctl run, pid {pid}); stop that run first (rm --force only drops mount references)")]
    ContainerRunning { name: String, pid: u32 },
    /// `--root` names something that is not a directory (or lies below a file).
    #[error("store root {} is not a directory", root.display())]
    RootNotDirectory { root: PathBuf },
    /// The root holds records (layers, images or containers) but its `driver` file is
    /// missing or empty (truncated by a crash or a full disk): picking the best driver
    /// would adopt another driver's root, and `check --repair` then removed every
    /// record as "driver layer missing". The user names the driver.
    #[error("root {} holds layers but records no driver (its driver file is missing or empty; driver directories here: {homes}); name it with --driver", root.display())]
    DriverUnrecorded { root: PathBuf, homes: String },
    /// `--root` is a symlink whose target does not exist (the store cannot be made
    /// there: `create_dir_all` answered "File exists").
    #[error("store root {} is a symlink to {}, which does not exist", root.display(), target.display())]
    RootDanglingSymlink { root: PathBuf, target: PathBuf },
    /// `untag` was given an image id: ids are not names.
    #[error("untag {reference:?}: that is image {id}'s id, not a name (its names: {names}); untag takes a name, rmi removes an image")]
    NotAName {
        reference: String,
        id: String,
        names: String,
    },
    /// An image config for another operating system (`os` other than `linux`): its
    /// layers are not Linux root filesystems (`docker load` refuses them too).
    #[error("{}: image config is for os {os:?}; only linux images can be stored", file.display())]
    UnsupportedPlatform { file: PathBuf, os: String },
    /// The root was created with another driver.
    #[error("root {} holds layers of driver {recorded}; cannot open it with driver {requested}", root.display())]
    DriverMismatch {
        root: PathBuf,
        recorded: String,
        requested: String,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A blob's size differs from its descriptor.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// An image archive or layout is malformed.
    #[error("{}: {reason}", file.display())]
    BadArchive { file: PathBuf, reason: String },
    /// A JSON document of an archive could not be parsed.
    #[error("{}: {what}: {source}", file.display())]
    BadJson {
        file: PathBuf,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A multi-image archive failed after some of its images were stored. Those stay,
    /// as `docker load` keeps the images it loaded before an error; `stored` names them
    /// (`<short id> (<names>)`, comma-separated).
    #[error("{source}; the archive's images stored before the failure are kept: {stored}")]
    PartlyImported {
        stored: String,
        #[source]
        source: Box<StoreError>,
    },
    /// Applying or reading one layer failed.
    #[error("layer {what}: {source}")]
    Layer {
        what: String,
        #[source]
        source: Box<StoreError>,
    },
    /// An input stream could not be read or decompressed (truncated, corrupt).
    #[error("reading {what}: {source}")]
    Stream {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A layer's decompressed stream went past a configured limit (a decompression
    /// bomb, or a limit set too low): `key` names the `[limits]` setting.
    #[error("layer exceeds the import limit {key} = {limit} ([limits] in config.toml)")]
    LimitExceeded { key: &'static str, limit: u64 },
    /// A writing operation was called on a store opened with the shared lock.
    #[error("{op} needs the store opened with the exclusive lock")]
    NeedsExclusiveLock { op: &'static str },
    /// A stored layer's content no longer hashes to its DiffID (changed on disk), or its
    /// tar-split metadata is damaged.
    #[error("layer {layer} changed on disk: {}{reason}", entry.as_ref().map(|e| format!("entry {e:?}: ")).unwrap_or_default())]
    LayerChanged {
        layer: String,
        entry: Option<String>,
        reason: String,
    },
    /// The store's own metadata is inconsistent.
    #[error("store metadata {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

impl StoreError {
    /// The same error with `spool` (a temp copy of a stream) named as `name` where it
    /// is the file the error names: a user who piped a layer in never saw the spool.
    pub fn naming_input(self, spool: &Path, name: &str) -> StoreError {
        let fix = |p: PathBuf| if p == spool { PathBuf::from(name) } else { p };
        match self {
            StoreError::BadArchive { file, reason } => StoreError::BadArchive {
                file: fix(file),
                reason,
            },
            StoreError::BadJson { file, what, source } => StoreError::BadJson {
                file: fix(file),
                what,
                source,
            },
            StoreError::Io { op, path, source } => StoreError::Io {
                op,
                path: fix(path),
                source,
            },
            other => other,
        }
    }

    /// Shorthand for [`StoreError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        use StoreError::*;
        match self {
            Driver(d) => driver_kind(d),
            Io { .. } | Corrupt { .. } | NeedsExclusiveLock { .. } => ErrorKind::Other,
            InvalidId { .. } => ErrorKind::InvalidInput,
            ImageNotFound { .. }
            | ContainerNotFound { .. }
            | LayerNotFound { .. }
            | InputNotFound { .. }
            | NotAName { .. } => ErrorKind::NotFound,
            RootNotDirectory { .. } | RootDanglingSymlink { .. } => ErrorKind::Config,
            AmbiguousImage { .. } => ErrorKind::InvalidInput,
            ContainerExists { .. }
            | ImageInUse { .. }
            | ContainerMounted { .. }
            | ContainerRunning { .. } => ErrorKind::Conflict,
            DriverMismatch { .. } | DriverUnrecorded { .. } | UnsupportedPlatform { .. } => {
                ErrorKind::NotSupported
            }
            DigestMismatch { .. }
            | SizeMismatch { .. }
            | BadArchive { .. }
            | BadJson { .. }
            | Stream { .. }
            | LimitExceeded { .. }
            | LayerChanged { .. } => ErrorKind::InvalidInput,
            Layer { source, .. } | PartlyImported { source, .. } => source.kind(),
        }
    }
}

/// The broad class of a driver error.
pub fn driver_kind(e: &DriverError) -> ErrorKind {
    match e {
        DriverError::NotFound { .. } | DriverError::ParentNotFound { .. } => ErrorKind::NotFound,
        DriverError::AlreadyExists { .. } | DriverError::Busy { .. } => ErrorKind::Conflict,
        DriverError::NotSupported { .. } | DriverError::TooDeep { .. } => ErrorKind::NotSupported,
        DriverError::InvalidId { .. }
        | DriverError::UnsafeEntry { .. }
        | DriverError::Tar { .. } => ErrorKind::InvalidInput,
        DriverError::InvalidOption { .. } => ErrorKind::Config,
        _ => ErrorKind::Other,
    }
}

/// Adds operation and path context to `io::Result`s.
pub(crate) trait IoCtx<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoCtx<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| StoreError::io(op, path, e))
    }
}

impl<T> IoCtx<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| StoreError::io(op, path, io::Error::from_raw_os_error(e as i32)))
    }
}
