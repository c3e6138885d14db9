//! Compression detection and decoding (see common/import.rs).
#![no_main]

#[path = "../common/import.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::compression(data);
});
