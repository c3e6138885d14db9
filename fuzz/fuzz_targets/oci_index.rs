//! Import of an archive whose one fuzzed document is this input (see common/import.rs).
#![no_main]

#[path = "../common/import.rs"]
#[allow(dead_code)]
mod harness;

thread_local! {
    static IMPORTER: harness::Importer = harness::Importer::new();
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    IMPORTER.with(|i| {
        i.oci(data);
    });
});
