//! # layerctl-tests: end-to-end tests of the real `layerctl` binary
//!
//! The library holds what the tests in `tests/` share:
//! - [`fixtures`]: images built in memory from layer descriptions (docker-save archives,
//!   OCI layouts and archives, gzip/zstd layers) and the EXPECTED root filesystem they
//!   produce under OCI whiteout semantics; DiffIDs/ChainIDs computed independently.
//! - [`fidelity_inputs`]: one small image per kind of layer a driver can get wrong
//!   (implied parents, usrmerge symlinks, same-layer whiteouts, GNU sparse files from the
//!   system GNU tar, base-256 numbers, no end-of-archive blocks, zstd skippable frames,
//!   hard-linked symlinks, deleted init dirs) and a builder for written-out expected trees.
//! - [`hostile`]: tars from raw header bytes (`../x`, `/abs`, symlink and hard-link
//!   escapes, bad whiteout names, truncated, garbage, corrupt gzip/zstd, duplicates).
//! - [`mutations`]: issue 8's changes through a container mount and the `diff` they give.
//! - [`small_disk`]: a size-limited tmpfs that a test fills, for full-disk paths.
//! - [`tree`]: snapshots of real trees and entry-by-entry comparison.
//! - [`harness`]: the table of drivers every end-to-end test iterates
//!   ([`harness::DRIVERS`]: one row per driver); runs `layerctl` against a private `--root` in a temp dir and unmounts
//!   everything below it on drop (also when a test panics).
//!
//! The tests run `src/bin/layerctl-e2e.rs`, this package's build of the `layerctl`
//! program, which cargo builds fresh for them ([`harness::layerctl_bin`]). Privileged tests (root, overlayfs) skip with
//! a message unless `LAYERCTL_REQUIRE_PRIVILEGED=1`, which turns a skip into a failure.
//!
//! ## On-disk layout used by a test
//! ```text
//! $TMPDIR (or /var/tmp)/layerctl-e2e-XXXX/
//!   root/      the store (--root)
//!   work/      fixtures written by the test, the empty config file
//! ```
//! ## Locking
//! Each test owns its temp dir, so tests run in parallel without sharing a store.

pub mod fidelity_inputs;
pub mod fixtures;
pub mod harness;
pub mod hostile;
pub mod mutations;
pub mod small_disk;
pub mod tree;
