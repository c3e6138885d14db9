//! Naive diff/changes/size (mount both trees and compare, driver_core::naive) for when
//! native diff is not valid: the probe found redirect_dir/metacopy on, or `parent` is
//! not the layer's direct parent (then `diff/` is not the change set).

use std::io::Read;

use driver_core::naive::{naive_changes, naive_diff, naive_diff_size};
use driver_core::{Change, LayerId, Result};

use crate::Overlay2Driver;

pub(crate) fn diff(
    d: &Overlay2Driver,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<Box<dyn Read + Send>> {
    tracing::debug!(%id, ?parent, "naive diff");
    naive_diff(d, id, parent)
}

pub(crate) fn changes(
    d: &Overlay2Driver,
    id: &LayerId,
    parent: Option<&LayerId>,
) -> Result<Vec<Change>> {
    tracing::debug!(%id, ?parent, "naive changes");
    naive_changes(d, id, parent)
}

pub(crate) fn diff_size(d: &Overlay2Driver, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
    naive_diff_size(d, id, parent)
}
