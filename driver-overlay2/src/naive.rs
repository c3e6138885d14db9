//! Naive diff/changes/size (mount both trees and compare) for when native diff is not
//! valid: the probe found redirect_dir/metacopy on, or `parent` is not the direct parent.
//! TEMPORARY until driver_core::changes lands.

use std::io::Read;

use driver_core::{Change, DriverError, LayerId, Result};

use crate::Overlay2Driver;

fn todo_err() -> DriverError {
    DriverError::NotSupported {
        driver: "overlay2".into(),
        reason: "naive diff not available yet".into(),
    }
}

pub(crate) fn diff(
    _d: &Overlay2Driver,
    _id: &LayerId,
    _parent: Option<&LayerId>,
) -> Result<Box<dyn Read + Send>> {
    Err(todo_err())
}

pub(crate) fn changes(
    _d: &Overlay2Driver,
    _id: &LayerId,
    _parent: Option<&LayerId>,
) -> Result<Vec<Change>> {
    Err(todo_err())
}

pub(crate) fn diff_size(_d: &Overlay2Driver, _id: &LayerId, _parent: Option<&LayerId>) -> Result<u64> {
    Err(todo_err())
}
