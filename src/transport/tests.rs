//! Unit tests of the admission path and the heartbeat timer.

use super::*;
use crate::config::{AllowedOrigins, Config, Transports};
use axum::http::{HeaderMap, Uri, header};
use std::time::Duration;

fn state(change: impl FnOnce(&mut Config)) -> Arc<AppState> {
    let mut config = Config::defaults();
    change(&mut config);
    AppState::new(config).expect("state")
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, value.parse().expect("header value"));
    }
    h
}

const WS: &[(&str, &str)] = &[
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn try_admit(
    state: &Arc<AppState>,
    path_and_query: &str,
    pairs: &[(&'static str, &str)],
) -> Result<Admitted, ApiError> {
    try_admit_from(
        state,
        crate::headers::Peer::default(),
        path_and_query,
        pairs,
    )
}

fn try_admit_from(
    state: &Arc<AppState>,
    peer: crate::headers::Peer,
    path_and_query: &str,
    pairs: &[(&'static str, &str)],
) -> Result<Admitted, ApiError> {
    let uri: Uri = path_and_query.parse().expect("uri");
    let route = Route::from_path(uri.path()).expect("a stream route");
    // In memory, admission never waits: run it to completion here.
    futures_util::FutureExt::now_or_never(admit(state, route, peer, &uri, &headers(pairs)))
        .expect("admission in memory does not wait")
}

/// The code of the error `admit` gives, or the transport it admitted.
fn outcome(
    state: &Arc<AppState>,
    path_and_query: &str,
    pairs: &[(&'static str, &str)],
) -> Result<Transport, String> {
    outcome_from(
        state,
        crate::headers::Peer::default(),
        path_and_query,
        pairs,
    )
}

fn outcome_from(
    state: &Arc<AppState>,
    peer: crate::headers::Peer,
    path_and_query: &str,
    pairs: &[(&'static str, &str)],
) -> Result<Transport, String> {
    try_admit_from(state, peer, path_and_query, pairs)
        .map(|a| a.transport)
        .map_err(|e| {
            let response = e.into_response();
            format!("{} {}", response.status().as_u16(), error_code(response))
        })
}

fn error_code(response: Response) -> String {
    let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
        response.into_body(),
        usize::MAX,
    ))
    .expect("body ready")
    .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    v["error"]["code"].as_str().unwrap_or("?").to_owned()
}

#[tokio::test]
async fn admission_picks_the_transport_of_the_request() {
    let s = state(|_| {});
    let sse = [("accept", "text/event-stream")];
    assert_eq!(
        outcome(&s, "/v1/stream?topics=a", WS),
        Ok(Transport::WebSocket)
    );
    assert_eq!(outcome(&s, "/v1/stream?topics=a", &sse), Ok(Transport::Sse));
    assert_eq!(
        outcome(&s, "/v1/stream?topics=a", &[]),
        Ok(Transport::LongPoll)
    );
    assert_eq!(outcome(&s, "/v1/ws?topics=a", WS), Ok(Transport::WebSocket));
    assert_eq!(outcome(&s, "/v1/sse?topics=a", &[]), Ok(Transport::Sse));
    assert_eq!(
        outcome(&s, "/v1/poll?topics=a", &[]),
        Ok(Transport::LongPoll)
    );
    let Admitted {
        cursor,
        topics,
        guard,
        ..
    } = try_admit(
        &s,
        "/v1/sse?topics=b,a&cursor=x-1",
        &[("last-event-id", "e-7")],
    )
    .expect("admitted");
    assert_eq!(cursor.map(|c| c.to_string()).as_deref(), Some("e-7"));
    assert_eq!(topics.len(), 2);
    assert_eq!(s.open_streams(), 1, "held");
    drop(guard);
    assert_eq!(s.open_streams(), 0, "dropped");
}

/// Each bad input gets its own code, and a refused request holds no slot.
#[tokio::test]
async fn every_bad_input_gets_its_code() {
    let s = state(|_| {});
    for (path, pairs, want) in [
        ("/v1/sse", &[][..], "400 missing_topics"),
        ("/v1/sse?topics=", &[], "400 invalid_topic"),
        ("/v1/sse?topics=a%20b", &[], "400 invalid_topic"),
        ("/v1/sse?topics=a&topics=b", &[], "400 invalid_query"),
        ("/v1/sse?topics=a&cursor=nope", &[], "400 invalid_cursor"),
        (
            "/v1/sse?topics=a",
            &[("last-event-id", "nope")],
            "400 invalid_cursor",
        ),
        ("/v1/ws?topics=a", &[], "400 not_a_websocket"),
        ("/v1/ws?topics=a", &WS[1..], "400 not_a_websocket"),
        (
            "/v1/ws?topics=a",
            &[WS[0], WS[1], WS[3]],
            "400 not_a_websocket",
        ),
        ("/v1/ws?topics=a", &WS[..3], "400 not_a_websocket"),
        ("/v1/ws?topics=a", &[WS[2], WS[3]], "426 upgrade_stripped"),
        ("/v1/stream?topics=a", &[WS[3]], "426 upgrade_stripped"),
        (
            "/v1/sse?topics=a",
            &[("origin", "https://evil.example"), ("host", "localhost")],
            "403 origin_not_allowed",
        ),
        (
            "/v1/sse?topics=a",
            &[("origin", "ftp://localhost"), ("host", "localhost")],
            "403 origin_not_allowed",
        ),
        (
            "/v1/sse?topics=a",
            &[("host", "evil.example")],
            "421 host_not_allowed",
        ),
    ] {
        assert_eq!(
            outcome(&s, path, pairs),
            Err(want.to_owned()),
            "{path} {pairs:?}"
        );
    }
    assert_eq!(s.open_streams(), 0);
    // The same origin passes.
    let same = [
        ("origin", "http://localhost:8080"),
        ("host", "localhost:3000"),
    ];
    assert_eq!(outcome(&s, "/v1/sse?topics=a", &same), Ok(Transport::Sse));
}

#[tokio::test]
async fn switches_origins_and_the_cap() {
    let s = state(|c| c.transports = Transports(vec![Transport::LongPoll]));
    assert_eq!(
        outcome(&s, "/v1/sse?topics=a", &[]),
        Err("503 transport_disabled".into())
    );
    assert_eq!(
        outcome(&s, "/v1/stream?topics=a", WS),
        Err("503 transport_disabled".into())
    );
    assert_eq!(
        outcome(&s, "/v1/stream?topics=a", &[]),
        Ok(Transport::LongPoll)
    );
    let off = state(|c| c.transports = Transports(vec![]));
    assert_eq!(
        outcome(&off, "/v1/poll?topics=a", &[]),
        Err("503 live_updates_off".into())
    );

    let listed = state(|c| {
        c.allowed_origins = AllowedOrigins::List(vec!["https://app.example.com".into()]);
    });
    let from = |o| [("origin", o)];
    assert_eq!(
        outcome(
            &listed,
            "/v1/sse?topics=a",
            &from("https://app.example.com")
        ),
        Ok(Transport::Sse)
    );
    assert_eq!(
        outcome(&listed, "/v1/sse?topics=a", &from("https://other.example")),
        Err("403 origin_not_allowed".into())
    );

    let capped = state(|c| c.max_streams_per_client = 1);
    let client = crate::headers::Peer(Some([192, 0, 2, 7].into()));
    let other = crate::headers::Peer(Some([192, 0, 2, 8].into()));
    let held = try_admit_from(&capped, client, "/v1/sse?topics=a", &[]).expect("first");
    assert_eq!(
        outcome_from(&capped, client, "/v1/poll?topics=a", &[]),
        Err("429 too_many_streams".into())
    );
    // Another client is not affected.
    assert_eq!(
        outcome_from(&capped, other, "/v1/poll?topics=a", &[]),
        Ok(Transport::LongPoll)
    );
    // A refusal for bad input does not count against the cap either.
    assert_eq!(
        outcome_from(&capped, client, "/v1/poll", &[]),
        Err("400 missing_topics".into())
    );
    drop(held);
    assert_eq!(
        outcome_from(&capped, client, "/v1/poll?topics=a", &[]),
        Ok(Transport::LongPoll)
    );
}

/// A heartbeat is due `every` after the last write, however many writes came before.
#[tokio::test(start_paused = true)]
async fn heartbeat_is_due_after_silence_only() {
    let start = tokio::time::Instant::now();
    let mut heartbeat = Heartbeat::new(Duration::from_secs(10));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        heartbeat.wrote();
    }
    heartbeat.due().await;
    let first = start.elapsed();
    assert!(
        first >= Duration::from_secs(22) && first < Duration::from_millis(22_010),
        "due at {first:?}, want 12 s + 10 s"
    );
    heartbeat.wrote();
    heartbeat.due().await;
    let second = start.elapsed() - first;
    assert!(
        second >= Duration::from_secs(10) && second < Duration::from_millis(10_010),
        "next due {second:?} later, want 10 s"
    );
}

fn accept(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, v.parse().expect("header"));
    h
}

#[test]
fn only_an_explicit_event_stream_accept_picks_sse() {
    assert!(accepts_event_stream(&accept("text/event-stream")));
    assert!(accepts_event_stream(&accept(
        "application/json, text/event-stream;q=0.5"
    )));
    assert!(!accepts_event_stream(&accept("*/*")));
    assert!(!accepts_event_stream(&accept("text/event-stream;q=0")));
    assert!(!accepts_event_stream(&HeaderMap::new()));
}
