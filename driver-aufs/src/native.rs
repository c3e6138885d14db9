//! Native diff, changes and size: a layer's `diff/<id>` holds exactly its changes in
//! AUFS form, so only it is walked: it is handed, over the stack below it, to
//! driver-core's one exporter ([`driver_core::export`], source [`DiffSource::Top`]),
//! which reads `.wh.<name>` and `.wh..wh..opq` as the stack model says, leaves aufs'
//! internals (`.wh..wh.plnk`, `.wh..wh.aufs`, `.wh..wh.orph`) out, and gives the same tar
//! bytes, changes and size as every other driver for the same changes (an opaque
//! directory becomes one whiteout per name it hid).
//!
//! These are valid only when `parent` is the layer's direct parent; otherwise the
//! driver falls back to driver_core's naive mount-and-compare.

use std::io::Read;

use driver_core::export::{self, DiffSource};
use driver_core::{Change, LayerStack, Result};

/// Streams the native diff of the layer whose stack (own `diff/` first) is `stack`.
pub(crate) fn native_diff(stack: LayerStack) -> Result<Box<dyn Read + Send>> {
    Ok(Box::new(export::diff(DiffSource::Top(stack))?))
}

/// The changes recorded in the top branch of `stack` relative to the branches below.
pub(crate) fn native_changes(stack: LayerStack) -> Result<Vec<Change>> {
    export::changes(&DiffSource::Top(stack))
}

/// Bytes of regular-file content the native diff exports, hard links counted once.
pub(crate) fn native_size(stack: LayerStack) -> Result<u64> {
    export::size(&DiffSource::Top(stack))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use driver_core::WhiteoutFormat;

    use super::*;

    #[test]
    fn changes_and_diff_from_an_aufs_branch() {
        let t = tempfile::tempdir().unwrap();
        let (top, low) = (t.path().join("top"), t.path().join("low"));
        for d in ["a", "b", "o"] {
            fs::create_dir_all(low.join(d)).unwrap();
        }
        fs::write(low.join("a/f"), "1").unwrap();
        fs::write(low.join("b/x"), "x").unwrap();
        fs::write(low.join("o/hidden"), "h").unwrap();
        fs::write(low.join("c"), "c").unwrap();
        for d in ["a", "b", "o", ".wh..wh.plnk"] {
            fs::create_dir_all(top.join(d)).unwrap();
        }
        fs::write(top.join("a/f"), "22").unwrap();
        fs::write(top.join("b/.wh.x"), "").unwrap();
        fs::write(top.join("o/.wh..wh..opq"), "").unwrap();
        fs::write(top.join("o/new"), "n").unwrap();
        fs::write(top.join("new"), "abc").unwrap();
        fs::write(top.join(".wh.c"), "").unwrap();
        fs::write(top.join(".wh..wh.plnk/123.456"), "internal").unwrap();
        let stack = || LayerStack::new(vec![top.clone(), low.clone()], WhiteoutFormat::Aufs);
        let got: Vec<String> = native_changes(stack())
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        for want in [
            "C /a/f",
            "D /b/x",
            "D /c",
            "A /new",
            "A /o/new",
            "D /o/hidden",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} missing: {got:?}");
        }
        assert!(!got.iter().any(|g| g.contains("plnk")), "{got:?}");
        assert_eq!(native_size(stack()).unwrap(), 2 + 1 + 3);
        let mut tar = Vec::new();
        native_diff(stack()).unwrap().read_to_end(&mut tar).unwrap();
        let names: Vec<PathBuf> = ::tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().into_owned())
            .collect();
        for want in [".wh.c", "b/.wh.x", "o/.wh.hidden", "o/new", "a/f", "new"] {
            assert!(
                names.iter().any(|n| n == &PathBuf::from(want)),
                "{want} missing: {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.to_string_lossy().contains("plnk")),
            "internals exported: {names:?}"
        );
    }
}
