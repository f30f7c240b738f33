//! See `flagd_core::fuzzing::wire_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flagd_core::fuzzing::wire_frame(data));
