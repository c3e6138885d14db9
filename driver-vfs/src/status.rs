//! `status()`: backing filesystem and layer count.

use std::fs;

use nix::sys::statfs::{self, FsType};

use crate::VfsDriver;

/// Human name of a filesystem magic number (the ones a driver home plausibly sits on).
pub fn fs_name(t: FsType) -> &'static str {
    const NAMES: &[(FsType, &str)] = &[
        (statfs::EXT4_SUPER_MAGIC, "ext4"),
        (statfs::XFS_SUPER_MAGIC, "xfs"),
        (statfs::BTRFS_SUPER_MAGIC, "btrfs"),
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlay"),
        (statfs::NFS_SUPER_MAGIC, "nfs"),
        (statfs::FUSE_SUPER_MAGIC, "fuse"),
        (statfs::REISERFS_SUPER_MAGIC, "reiserfs"),
        (statfs::F2FS_SUPER_MAGIC, "f2fs"),
    ];
    NAMES
        .iter()
        .find(|(m, _)| *m == t)
        .map_or("unknown", |(_, n)| n)
}

pub(crate) fn status(d: &VfsDriver) -> driver_core::DriverStatus {
    let backing = match statfs::statfs(&d.home) {
        Ok(s) => {
            let t = s.filesystem_type();
            match fs_name(t) {
                "unknown" => format!("unknown (0x{:x})", t.0),
                n => n.to_owned(),
            }
        }
        Err(e) => format!("unknown ({e})"),
    };
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
