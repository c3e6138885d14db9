//! `status()`: backing filesystem and layer count.

use std::fs;

use crate::VfsDriver;

pub(crate) fn status(d: &VfsDriver) -> driver_core::DriverStatus {
    let backing = driver_core::fsutil::filesystem_name(&d.home);
    let layers = fs::read_dir(&d.dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0);
    vec![
        ("Backing Filesystem".into(), backing),
        ("Layers".into(), layers.to_string()),
    ]
}
