//! Native changes and size: driver-core's exporter walk over the layer's `diff/` (one
//! stack lookup per entry tells Add from Modify from an unchanged copy-up; an opaque
//! directory deletes each name the lower stack listed there), so `changes` and
//! `diff_size` agree with the tar [`crate::diff::native_diff`] streams.

use driver_core::export::{self, DiffSource};
use driver_core::{Change, LayerStack, Result};

/// The changes recorded in the top branch of `stack` relative to the branches below.
pub(crate) fn native_changes(stack: LayerStack) -> Result<Vec<Change>> {
    export::changes(&DiffSource::Top(stack))
}

/// Bytes of regular-file content the native diff exports, hard links counted once.
pub(crate) fn native_size(stack: LayerStack) -> Result<u64> {
    export::size(&DiffSource::Top(stack))
}
