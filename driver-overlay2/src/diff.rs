//! Native diff: the layer's `diff/` over its ancestors' is handed to driver-core's one
//! exporter ([`driver_core::export`], source [`DiffSource::Top`]): only `diff/` is
//! walked, overlay whiteouts and opaque directories are read as the stack model says,
//! and the tar is byte for byte the one a naive comparison of the same trees gives
//! (opaque directories become per-name whiteouts of what they hid).

use std::io::Read;

use driver_core::export::{self, DiffSource};
use driver_core::{LayerStack, Result};

/// Streams the native diff of the layer whose stack (own `diff/` first) is `stack`.
pub(crate) fn native_diff(stack: LayerStack) -> Result<Box<dyn Read + Send>> {
    Ok(Box::new(export::diff(DiffSource::Top(stack))?))
}
