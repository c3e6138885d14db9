//! The `layerctl` program (the same `main` as cli/src/main.rs), built as a binary of this
//! package so that cargo builds it, from the current sources, before it runs this
//! package's tests and benches: the end-to-end harness runs this binary
//! ([`layerctl_tests::harness::layerctl_bin`]), never a `target/debug/layerctl` that
//! `cargo test -p layerctl-tests` alone would leave stale. Its own name keeps it from
//! colliding with the `layerctl` package's binary in `target/<profile>/`.

fn main() {
    std::process::exit(layerctl::main_entry());
}
