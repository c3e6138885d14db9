//! # driver-core: the storage-driver contract of layerctl
//!
//! Everything a storage driver shares: the object-safe [`Driver`] trait (moby's
//! graphdriver contract), validated ids ([`LayerId`]), the error type, whiteout
//! handling, the one model of a layer stack ([`stack::LayerStack`]: lookup, merged
//! listings, symlink resolution inside the root, for overlay, aufs and full-tree
//! branches) with copy-up ([`copyup`]), safe application of hostile layer tars onto the
//! merged tree below them, the one layer-tar exporter ([`export`]: changes, diff size
//! and diff tars of every driver, naive or native, in one fixed format), the naive diff
//! that any driver can fall back on, mount reference counting and the conformance suite
//! every driver runs (feature `conformance`).
//!
//! Union rules (what a stack of layers looks like: whiteouts, opaque directories,
//! implied parents, symlinked parents, same-layer whiteouts, copy-up) live here and
//! nowhere else; drivers and the layer store ask [`Driver::stack`] instead of reading
//! layer directories.
//!
//! ## On-disk layout
//! driver-core owns no tree of its own. Each driver lives in `<root>/<driver name>/`
//! and draws its own layout in its crate doc, for example:
//! ```text
//! <root>/
//!   vfs/dir/<layer id>/...        full copy of the layer's root filesystem
//!   overlay2/<layer id>/diff      the layer's own content
//!   overlay2/l/<short id> -> ../<layer id>/diff
//!   <driver>/refs/<layer id>      mount reference count (see refcount)
//!   <driver>/refs/.lock           flock for count updates
//! ```
//!
//! ## Locking rules
//! - A driver never takes the layer store's lock; the store holds it around calls that
//!   create, apply or remove, so those are serialised per store.
//! - Mount counts are updated under an exclusive flock of `<driver>/refs/.lock`, held
//!   across the mount/unmount syscall, so concurrent processes mount once and count right.
//! - Metadata files are written atomically ([`fsutil::write_atomic`]).

pub mod apply;
pub mod changes;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod copyup;
pub mod driver;
pub mod error;
pub mod escape;
pub mod export;
pub mod fsutil;
pub mod id;
pub mod mountinfo;
pub mod naive;
pub mod refcount;
pub mod registry;
pub mod stack;
pub mod union_ops;
pub mod whiteout;

pub use apply::{
    apply_layer_stream, apply_stream_to_stack, apply_tar, apply_to_stack, ApplyOptions, ApplyStats,
    ChunkedRead, LayerStream, SharedBytes,
};
pub use driver::{
    Change, ChangeKind, CreateOpts, Driver, DriverOptions, DriverStatus, LayerKind, MountOpts,
};
pub use error::{DriverError, IoContext, Result};
pub use id::LayerId;
pub use registry::{DriverEntry, DriverFactory, ProbeFn, Registry};
pub use stack::LayerStack;
pub use whiteout::WhiteoutFormat;

/// Whether tests that need root and real mounts must fail (not skip) when they cannot
/// run: true when `LAYERCTL_REQUIRE_PRIVILEGED=1` (CI sets it).
pub fn privileged_required() -> bool {
    std::env::var("LAYERCTL_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}
