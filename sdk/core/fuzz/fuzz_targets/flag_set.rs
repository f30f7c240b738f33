//! See `flagd_core::fuzzing::flag_set`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flagd_core::fuzzing::flag_set(data));
