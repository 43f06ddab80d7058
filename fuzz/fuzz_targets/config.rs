//! libFuzzer entry for `portcullis::fuzzing::config` (the harness and its invariants live
//! in the library, so `cargo test` replays this target's corpus without libFuzzer).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::config(data));
