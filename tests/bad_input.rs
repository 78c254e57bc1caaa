//! Bad input of every kind gets a clear error, and nothing else is disturbed: no other
//! connection, no stored event.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const KEY: &str = "test-key-0123456789abcdef";

/// A WebSocket subscriber that must see exactly the valid events, before and after.
async fn witness(app: &TestApp) -> Ws {
    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=ok")).await;
    assert_eq!(ws.next().await["op"], "ready");
    ws
}

async fn assert_undisturbed(app: &TestApp, ws: &mut Ws, published_before: u64) {
    assert_eq!(
        app.status().await["counters"]["published"],
        published_before,
        "a refused request stored an event"
    );
    let ids = app
        .publish(json!({"topic": "ok", "type": "x", "data": {"n": 1}}))
        .await;
    assert_eq!(
        ws.events(1).await[0]["id"],
        ids[0].as_str(),
        "the witness still works"
    );
}

#[tokio::test]
async fn bad_query_parameters() {
    let app = spawn_app(|_| {}).await;
    let mut ws = witness(&app).await;
    let long = "a".repeat(201);
    let many = (0..101)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "".into(),
            "missing_topics",
            "the `topics` query parameter is required",
        ),
        (
            "topics=".into(),
            "invalid_topic",
            "must be 1 to 200 characters",
        ),
        (
            "topics=a,,b".into(),
            "invalid_topic",
            "must be 1 to 200 characters",
        ),
        ("topics=a%20b".into(), "invalid_topic", "contains ' '"),
        ("topics=caf%C3%A9".into(), "invalid_topic", "contains 'é'"),
        (
            format!("topics={long}"),
            "invalid_topic",
            "must be 1 to 200 characters",
        ),
        (
            format!("topics={many}"),
            "invalid_topic",
            "at most 100 topics",
        ),
        ("topics=a&cursor=nope".into(), "invalid_cursor", "malformed"),
        ("topics=a&topics=b".into(), "invalid_query", "duplicate"),
    ];
    for path in ["/v1/ws", "/v1/sse", "/v1/poll", "/v1/stream"] {
        for (query, code, words) in &cases {
            let (status, v) = app.get_json(&format!("{path}?{query}")).await;
            assert_eq!(status, 400, "{path}?{query}: {v}");
            assert_eq!(v["error"]["code"], *code, "{path}?{query}: {v}");
            let msg = v["error"]["message"].as_str().expect("message");
            assert!(
                msg.contains(words),
                "{path}?{query}: {msg:?} should say {words:?}"
            );
        }
    }
    for timeout in ["-1", "soon", "1.5", "99999999999999999999999"] {
        let (status, v) = app
            .get_json(&format!("/v1/poll?topics=a&timeout={timeout}"))
            .await;
        assert_eq!(status, 400, "timeout={timeout}");
        assert_eq!(v["error"]["code"], "invalid_timeout");
    }
    let (status, v) = app.get_json("/v1/negotiate?topics=a%20b").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_topic"))
    );
    // A plain GET on the WebSocket endpoint says what it is.
    let (status, v) = app.get_json("/v1/ws?topics=a").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("not_a_websocket"))
    );
    assert_undisturbed(&app, &mut ws, 0).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_publish_bodies() {
    let app = spawn_app(|_| {}).await;
    let mut ws = witness(&app).await;
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"topic":"ok","type":"x"}))
        .collect();
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("{".into(), 400, "invalid_json", "not valid JSON"),
        ("".into(), 400, "invalid_json", "not valid JSON"),
        ("42".into(), 400, "invalid_event", "expected struct"),
        ("[]".into(), 400, "invalid_event", "empty"),
        (r#"{"type":"x"}"#.into(), 400, "invalid_event", "missing field `topic`"),
        (r#"{"topic":"ok"}"#.into(), 400, "invalid_event", "missing field `type`"),
        (r#"{"topic":"ok","type":"x","colour":1}"#.into(), 400, "invalid_event", "unknown field `colour`"),
        (r#"{"topic":"a b","type":"x"}"#.into(), 400, "invalid_event", "contains ' '"),
        (r#"{"topic":"ok","type":""}"#.into(), 400, "invalid_event", "type \"\" must be 1 to 100"),
        (r#"{"topic":"ok","type":"a\nb"}"#.into(), 400, "invalid_event", "control characters"),
        (r#"{"topic":7,"type":"x"}"#.into(), 400, "invalid_event", "invalid type"),
        (
            r#"[{"topic":"ok","type":"x"},{"topic":"ok","type":"x"},{"topic":"bad topic","type":"x"}]"#.into(),
            400,
            "invalid_event",
            "event 2: topic",
        ),
        (serde_json::to_string(&too_many).expect("json"), 400, "too_many_events", "at most 1000"),
        (
            serde_json::to_string(&json!({"topic":"ok","type":"x","data":"y".repeat(1_100_000)})).expect("json"),
            413,
            "body_too_large",
            "larger than 1048576 bytes",
        ),
    ];
    for (body, status, code, words) in &cases {
        let resp = app
            .client
            .post(app.url("/v1/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("POST");
        assert_eq!(
            resp.status().as_u16(),
            *status,
            "{}",
            &body[..body.len().min(80)]
        );
        if *status == 413 {
            // The unread rest of the body ends the connection; a client must not reuse it.
            assert_eq!(
                resp.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "413 must close the connection"
            );
        }
        let v: Value = resp.json().await.expect("error is JSON");
        assert_eq!(v["error"]["code"], *code, "{v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(words), "{msg:?} should say {words:?}");
    }
    // A whole batch is refused when one event is bad: nothing of it is stored.
    assert_undisturbed(&app, &mut ws, 0).await;
    // A body not declared JSON is refused: a cross-site form or text/plain POST must not
    // be able to publish through a browser (no CORS preflight for those).
    for content_type in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        None,
    ] {
        let mut req = app
            .client
            .post(app.url("/v1/events"))
            .body(r#"{"topic":"ok","type":"x"}"#);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("POST");
        assert_eq!(resp.status(), 415, "{content_type:?}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "unsupported_media_type");
        assert!(
            v["error"]["message"]
                .as_str()
                .expect("m")
                .contains("application/json"),
            "{v}"
        );
    }
    assert_undisturbed(&app, &mut ws, 1).await;
    // `data` may be omitted (null); charset parameters are fine.
    let resp = app
        .client
        .post(app.url("/v1/events"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"topic":"ok","type":"x"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
    assert_eq!(ws.next().await["data"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn publishing_needs_the_key_when_one_is_set() {
    let app = spawn_app(|c| c.publish_key = Some(KEY.into())).await;
    let mut ws = witness(&app).await;
    let body = json!({"topic":"ok","type":"x"});
    for (auth, words) in [
        (None, "needs `Authorization: Bearer"),
        (Some("Basic abc".to_owned()), "must be `Bearer <key>`"),
        (
            Some("Bearer wrong-key-0123456789".to_owned()),
            "the publish key is wrong",
        ),
        (Some(format!("Bearer {KEY}x")), "the publish key is wrong"),
    ] {
        let mut req = app.client.post(app.url("/v1/events")).json(&body);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("POST");
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "unauthorized");
        assert!(
            v["error"]["message"].as_str().expect("m").contains(words),
            "{v}"
        );
    }
    assert_eq!(app.status().await["counters"]["published"], 0);
    // The scheme is case-insensitive (RFC 7235).
    let resp = app
        .client
        .post(app.url("/v1/events"))
        .header("authorization", format!("bearer {KEY}"))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
    assert_eq!(ws.events(1).await[0]["type"], "x");
    app.stop().await;
}

async fn expect_error_then_close(ws: &mut Ws, code: &str, close: CloseCode) {
    let v = ws.next().await;
    assert_eq!(v["op"], "error", "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = within(WAIT, "the close frame", ws.stream.next())
        .await
        .expect("a close frame, not the end")
        .expect("no error before the close frame");
    match msg {
        Message::Close(Some(frame)) => assert_eq!(frame.code, close),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_websocket_frames() {
    let app = spawn_app(|_| {}).await;
    let mut other = witness(&app).await;

    let cases: Vec<(Message, &str, CloseCode)> = vec![
        (
            Message::Text("not json".into()),
            "bad_frame",
            CloseCode::Policy,
        ),
        (
            Message::Text(r#"{"op":"dance"}"#.into()),
            "bad_frame",
            CloseCode::Policy,
        ),
        (
            Message::Text(r#"{"topics":["a"]}"#.into()),
            "bad_frame",
            CloseCode::Policy,
        ),
        (
            Message::Text(r#"{"op":"subscribe","topics":"a"}"#.into()),
            "bad_frame",
            CloseCode::Policy,
        ),
        (
            Message::Binary(vec![1, 2, 3].into()),
            "binary_frame",
            CloseCode::Policy,
        ),
        (
            Message::Text("x".repeat(20_000).into()),
            "frame_too_large",
            CloseCode::Size,
        ),
        (
            Message::Text("x".repeat(200_000).into()),
            "frame_too_large",
            CloseCode::Size,
        ),
        (
            Message::Ping(vec![0; 126].into()),
            "frame_too_large",
            CloseCode::Size,
        ),
    ];
    for (frame, code, close) in cases {
        let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=ok")).await;
        assert_eq!(ws.next().await["op"], "ready");
        ws.stream.send(frame).await.expect("send");
        expect_error_then_close(&mut ws, code, close).await;
    }

    // A well-formed request with a bad value: an error frame, and the session goes on.
    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=ok")).await;
    assert_eq!(ws.next().await["op"], "ready");
    ws.send_text(r#"{"op":"subscribe","topics":["bad topic"]}"#)
        .await;
    let v = ws.next().await;
    assert_eq!(
        (v["op"].as_str(), v["code"].as_str()),
        (Some("error"), Some("invalid_topic"))
    );
    ws.send_text(r#"{"op":"subscribe","topics":["b"],"cursor":"zz"}"#)
        .await;
    let v = ws.next().await;
    assert_eq!(
        (v["op"].as_str(), v["code"].as_str()),
        (Some("error"), Some("invalid_cursor"))
    );
    ws.send_text(r#"{"op":"ping"}"#).await;
    assert_eq!(ws.next().await["op"], "pong");
    // Protocol pings are answered too.
    ws.stream
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .expect("ping");
    let pong = within(WAIT, "a protocol pong", async {
        loop {
            match ws.stream.next().await.expect("open").expect("ok") {
                Message::Pong(p) => return p,
                Message::Text(t) if t.contains("heartbeat") => continue,
                other => panic!("expected pong, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(&pong[..], b"hi");
    // Subscribe, unsubscribe.
    ws.send_text(r#"{"op":"subscribe","topics":["b"]}"#).await;
    let v = ws.next().await;
    assert_eq!(v["op"], "subscribed");
    assert_eq!(v["topics"], json!(["b", "ok"]));
    ws.send_text(r#"{"op":"unsubscribe","topics":["ok"]}"#)
        .await;
    assert_eq!(ws.next().await["topics"], json!(["b"]));
    let ids = app.publish_n("ok", 0..1).await;
    let idb = app.publish_n("b", 0..1).await;
    assert_eq!(
        ws.events(1).await[0]["id"],
        idb[0].as_str(),
        "only b after unsubscribing ok"
    );
    assert_eq!(other.events(1).await[0]["id"], ids[0].as_str());

    // A client's close is answered with its own code (a clean close, not 1006).
    ws.stream
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .expect("close");
    let echoed = within(WAIT, "the server to echo the close", async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(echoed.map(|f| f.code), Some(CloseCode::Normal));

    assert_undisturbed(&app, &mut other, 2).await;
    app.stop().await;
}

#[tokio::test]
async fn reports_are_validated_counted_and_rate_limited() {
    // Per client as much as all clients together: this tests the global bucket.
    let app = spawn_app(|c| c.reports_per_client = 1000).await;
    for (body, words) in [
        (
            json!({"from":"websocket","to":"sse"}),
            "missing field `reason`",
        ),
        (
            json!({"from":"carrier","to":"sse","reason":"stalled"}),
            "from and to must",
        ),
        (
            json!({"from":"websocket","to":"sse","reason":"bored"}),
            "reason must be one of",
        ),
        (
            json!({"from":"websocket","to":"sse","reason":"stalled","x":1}),
            "unknown field",
        ),
    ] {
        let resp = app
            .client
            .post(app.url("/v1/reports"))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json().await.expect("json");
        assert!(
            v["error"]["message"].as_str().expect("m").contains(words),
            "{v}"
        );
    }
    let report = json!({"from":"websocket","to":"sse","reason":"upgrade_failed"});
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..80 {
        let resp = app
            .client
            .post(app.url("/v1/reports"))
            .json(&report)
            .send()
            .await
            .expect("POST");
        match resp.status().as_u16() {
            204 => accepted += 1,
            429 => limited += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(limited > 0, "80 reports at once must hit the 50/s limit");
    let status = app.status().await;
    assert_eq!(status["counters"]["fallbacks"]["upgrade_failed"], accepted);
    assert_eq!(status["counters"]["reports_dropped"], limited);
    app.stop().await;
}
