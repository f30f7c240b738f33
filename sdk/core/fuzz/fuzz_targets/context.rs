//! See `flagd_core::fuzzing::context`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flagd_core::fuzzing::context(data));
