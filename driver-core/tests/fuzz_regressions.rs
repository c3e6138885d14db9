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
