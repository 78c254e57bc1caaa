//! A stream request's query string (topics, cursor, ticket, timeout) and Last-Event-ID.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first line is the query, the rest the Last-Event-ID header's bytes.
    let (query, last_event_id) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(query) = std::str::from_utf8(query) {
        switchyard::fuzzing::query(query, last_event_id);
    }
});
