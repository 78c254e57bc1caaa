//! The first bytes of a connection: strict head check and the direct-path parse.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::request_head(data));
