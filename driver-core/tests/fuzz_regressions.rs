//! Inputs of the `tar_apply` fuzz target (`fuzz/`), replayed by plain `cargo test`
//! with the fuzz target's own harness and invariants (`fuzz/common/tar_apply.rs`):
//! the seeds (`fuzz/seeds/tar_apply/`) and every input that once failed
//! (`fuzz/regressions/tar_apply/`, one file per finding).

#[path = "../../fuzz/common/tar_apply.rs"]
mod harness;

use std::path::Path;

fn inputs(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir);
    let mut v: Vec<(String, Vec<u8>)> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn tar_apply_seeds_and_regressions() {
    let sb = harness::Sandbox::new();
    let all: Vec<_> = inputs("seeds/tar_apply")
        .into_iter()
        .chain(inputs("regressions/tar_apply"))
        .collect();
    assert!(!all.is_empty(), "no inputs found");
    for (name, data) in all {
        eprintln!("{name}");
        sb.run(&data);
    }
}

/// The structured form really builds hostile tars (a check that cannot pass vacuously):
/// a tar through the `esc` symlink to outside/ applies, and nothing escapes.
#[test]
fn structured_input_reaches_the_escape_paths() {
    let sb = harness::Sandbox::new();
    // mode 1 (structured, vfs form); entry: kind 0 (file), names picking "esc/..."
    for a in 0..=255u8 {
        sb.run(&[1, 0, a, 0, 0, 3]);
        sb.run(&[3, 2, a, 9, 0, 3]);
        sb.run(&[5, 3, a, 13, 0, 3]);
    }
}

/// The first finding, as a plain test: an entry below a directory with a whiteout
/// name (`.wh.x/y`) is refused on every format, and nothing is made.
#[test]
fn whiteout_name_as_directory_is_refused() {
    use driver_core::{apply_tar, ApplyOptions, DriverError, WhiteoutFormat};
    for name in [".wh.a/y", ".wh./y", "d/.wh.c/.wh.c/f", ".wh..wh..opq/x/y"] {
        for format in [
            WhiteoutFormat::Delete,
            WhiteoutFormat::Overlay,
            WhiteoutFormat::Aufs,
        ] {
            let t = tempfile::tempdir().unwrap();
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
            let data = b.into_inner().unwrap();
            let r = apply_tar(t.path(), &mut &data[..], &ApplyOptions::new(format));
            let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
            if name.starts_with(".wh..wh.") {
                // AUFS metadata at the top (`.wh..wh.plnk/...`) is skipped, as Docker does.
                assert!(r.is_ok() && left.is_empty(), "{name} {format:?}: {r:?}");
            } else {
                assert!(
                    matches!(r, Err(DriverError::UnsafeEntry { .. })),
                    "{name} {format:?}: {r:?}"
                );
                let made: Vec<_> = left.iter().map(|e| e.as_ref().unwrap().path()).collect();
                assert!(
                    made.iter()
                        .all(|p| !p.ends_with(".wh.a") && !p.ends_with(".wh.")),
                    "{name} {format:?}: {made:?}"
                );
            }
        }
    }
}
