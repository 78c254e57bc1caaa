//! A publish body (POST /v1/events).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::publish_body(data));
