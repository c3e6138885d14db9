//! Tar apply with whiteouts into a sandbox: nothing may escape (see common/tar_apply.rs).
#![no_main]

#[path = "../common/tar_apply.rs"]
mod harness;

use std::sync::OnceLock;

static SANDBOX: OnceLock<harness::Sandbox> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    SANDBOX.get_or_init(harness::Sandbox::new).run(data);
});
