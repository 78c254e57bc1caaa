//! What a WebSocket client sends after the handshake: frames, then operations.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::websocket_client(data));
