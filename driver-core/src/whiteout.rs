//! Whiteouts: how a layer says "this path from below is gone".
//!
//! Tar (AUFS/OCI) format: a file `.wh.<name>` deletes `<name>` from lower layers;
//! `.wh..wh..opq` in a directory hides everything below it in lower layers; any other
//! `.wh..wh.*` name is AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`) and is skipped.
//! Overlay format: a 0/0 character device `<name>`, and the xattr
//! `trusted.overlay.opaque=y` on an opaque directory.

/// Prefix of a whiteout file name.
pub const WH_PREFIX: &str = ".wh.";
/// Prefix of AUFS metadata names (`.wh..wh.*`).
pub const WH_META_PREFIX: &str = ".wh..wh.";
/// Name of the opaque-directory marker.
pub const WH_OPAQUE: &str = ".wh..wh..opq";
/// Overlay's opaque xattr name.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Overlay's opaque xattr value.
pub const OVERLAY_OPAQUE_VALUE: &[u8] = b"y";

/// Whether `.wh.<name>` fits in a directory entry (`NAME_MAX`, 255 bytes), i.e. whether
/// an AUFS-form whiteout of `name` can exist at all. A name of 252-255 bytes has none:
/// a lookup of it must not ask for its whiteout (that `lstat` fails with
/// `ENAMETOOLONG`), and it can be neither whited out nor, on aufs, created
/// (driver-aufs `fs`: kernel aufs' own limit, `AUFS_MAX_NAMELEN`, is 242).
pub fn whiteout_fits(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    WH_PREFIX.len() + name.as_bytes().len() <= 255
}

/// The AUFS/OCI whiteout file name of `name`: `.wh.<name>`.
pub fn whiteout_of(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut w = std::ffi::OsString::from(WH_PREFIX);
    w.push(name);
    w
}

/// How a driver represents whiteouts on its disk when a tar is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// The layer is a full copy of its parent (vfs): delete the whited-out path; for an
    /// opaque dir delete every child not written by this same tar.
    Delete,
    /// Overlay: `.wh.x` -> char device 0/0 `x` (owner kept); opaque ->
    /// `trusted.overlay.opaque=y` on the directory.
    Overlay,
    /// AUFS: keep `.wh.` files as they are (the union filesystem reads them).
    Aufs,
}

/// What a file name in a tar means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutName<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh.<target>`: delete `target` from lower layers.
    Whiteout(&'a str),
    /// `.wh..wh..opq`: the containing directory is opaque.
    Opaque,
    /// Other `.wh..wh.*` AUFS metadata: skip.
    Meta,
    /// `.wh.`, `.wh..`, `.wh...`: a whiteout of nothing, of `.` or of `..`. Always refused
    /// (an old moby bug let `.wh...` delete the parent directory).
    Invalid,
}

/// Classifies one path component.
pub fn classify(name: &str) -> WhiteoutName<'_> {
    if name == WH_OPAQUE {
        return WhiteoutName::Opaque;
    }
    if name.starts_with(WH_META_PREFIX) {
        return WhiteoutName::Meta;
    }
    match name.strip_prefix(WH_PREFIX) {
        None => WhiteoutName::Plain,
        Some("") | Some(".") | Some("..") => WhiteoutName::Invalid,
        Some(t) if t.contains('/') => WhiteoutName::Invalid,
        Some(t) => WhiteoutName::Whiteout(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases = [
            ("file", WhiteoutName::Plain),
            (".whx", WhiteoutName::Plain),
            (".wh.file", WhiteoutName::Whiteout("file")),
            (".wh..hidden", WhiteoutName::Whiteout(".hidden")),
            (".wh..wh..opq", WhiteoutName::Opaque),
            (".wh..wh.plnk", WhiteoutName::Meta),
            (".wh..wh.aufs", WhiteoutName::Meta),
            (".wh.", WhiteoutName::Invalid),
            (".wh..", WhiteoutName::Invalid),
            (".wh...", WhiteoutName::Invalid),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{name}");
        }
    }
}
