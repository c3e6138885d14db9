//! The end-to-end harness runs the `layerctl` program cargo built for these tests from
//! the current sources (tests/src/bin/layerctl-e2e.rs), not whatever
//! `target/debug/layerctl` was left by the last `cargo build -p layerctl`. Before:
//! `cargo test -p layerctl-tests` alone ran that stale binary after a source change.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use layerctl_tests::harness::layerctl_bin;

/// The newest mtime of the `.rs` files below `dir`, with the file.
fn newest_source(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            newest_source(&p, newest);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let t = md.modified().unwrap();
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                *newest = Some((t, p));
            }
        }
    }
}

#[test]
fn the_harness_runs_the_binary_cargo_built_from_the_current_sources() {
    if std::env::var_os("LAYERCTL_BIN").is_some() {
        eprintln!("SKIP: $LAYERCTL_BIN chooses the binary");
        return;
    }
    let bin = layerctl_bin();
    assert_eq!(
        bin.canonicalize().unwrap(),
        Path::new(env!("CARGO_BIN_EXE_layerctl-e2e"))
            .canonicalize()
            .unwrap(),
        "the harness runs the binary cargo built for this package's tests"
    );
    // Built after the last change to any source it is made of.
    let built = std::fs::metadata(&bin).unwrap().modified().unwrap();
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest = None;
    for crate_src in [
        "cli/src",
        "layerstore/src",
        "driver-core/src",
        "driver-vfs/src",
        "driver-overlay2/src",
        "driver-aufs/src",
        "tests/src/bin",
    ] {
        newest_source(&ws.join(crate_src), &mut newest);
    }
    let (t, file) = newest.expect("sources");
    assert!(
        t <= built,
        "{} is older than {} (stale binary)",
        bin.display(),
        file.display()
    );
    // And it is the layerctl program.
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("layerctl "),
        "{out:?}"
    );
}
