//! Inputs of the `compression_detect`, `docker_save_manifest` and `oci_index` fuzz
//! targets (`fuzz/`), replayed by plain `cargo test` with the fuzz targets' own harness
//! (`fuzz/common/import.rs`): the seeds (`fuzz/seeds/<target>/`) and every input that
//! once failed (`fuzz/regressions/<target>/`, one file per finding).
//!
//! `LAYERCTL_FUZZ_WRITE_SEEDS=1 cargo test -p layerstore --test fuzz_regressions`
//! (re)writes the import seeds: valid documents whose digests match the harness's blobs.

#[path = "../../fuzz/common/import.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd {
                let p = e.unwrap().path();
                v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    v.sort();
    v
}

fn write_seeds(imp: &harness::Importer) {
    if std::env::var_os("LAYERCTL_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    for (target, name, data) in imp.seeds() {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
}

#[test]
fn import_seeds_and_regressions() {
    let imp = harness::Importer::new();
    write_seeds(&imp);
    let mut n = 0;
    for (name, data) in inputs("docker_save_manifest") {
        eprintln!("{name}");
        imp.docker_save(&data);
        n += 1;
    }
    for (name, data) in inputs("oci_index") {
        eprintln!("{name}");
        imp.oci(&data);
        n += 1;
    }
    assert!(n >= 6, "seeds missing: {n} inputs");
}

#[test]
fn compression_seeds_and_regressions() {
    let all = inputs("compression_detect");
    assert!(!all.is_empty(), "no inputs found");
    for (name, data) in all {
        eprintln!("{name}");
        harness::compression(&data);
    }
}

/// Every seed is an accepted import (the harness reaches the parsers past the digest
/// checks), and a broken document is refused.
#[test]
fn seeds_are_valid_imports() {
    let imp = harness::Importer::new();
    for (target, name, data) in imp.seeds() {
        let ok = match target {
            "docker_save_manifest" => imp.docker_save(&data),
            _ => imp.oci(&data),
        };
        assert!(ok, "seed {target}/{name} was refused");
    }
    assert!(!imp.oci(b"\0{}"));
    assert!(!imp.docker_save(b"\0[]"));
}
