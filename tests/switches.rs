//! Operator switches and what gets through: enabled transports, stripped upgrades,
//! origins and the connection cap.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard::config::{AllowedOrigins, Transports};
use switchyard::transport::Transport;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Tries a WebSocket handshake; returns the HTTP status and JSON body of a refusal.
async fn ws_refused(url: &str, origin: Option<&str>) -> (u16, Value) {
    let mut req = url.into_client_request().expect("request");
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", o.parse().expect("origin"));
    }
    match within(
        WAIT,
        "WebSocket handshake",
        tokio_tungstenite::connect_async(req),
    )
    .await
    {
        Ok(_) => panic!("{url}: WebSocket was accepted but should be refused"),
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            (
                status,
                serde_json::from_slice(body).expect("refusal body is JSON"),
            )
        }
        Err(e) => panic!("{url}: unexpected handshake error {e}"),
    }
}

async fn get_with(app: &TestApp, path: &str, accept: &str) -> (u16, String, Value) {
    let resp = app
        .client
        .get(app.url(path))
        .header("accept", accept)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    let ct = resp.headers()["content-type"]
        .to_str()
        .expect("ct")
        .to_owned();
    if ct == "text/event-stream" {
        return (status, ct, Value::Null);
    }
    (status, ct, resp.json().await.expect("JSON"))
}

#[tokio::test]
async fn sse_and_longpoll_only() {
    let app =
        spawn_app(|c| c.transports = Transports(vec![Transport::Sse, Transport::LongPoll])).await;
    let (_, v) = app.get_json("/v1/negotiate?topics=a").await;
    assert_eq!(
        v["transports"],
        json!([{"name":"sse","url":"/v1/sse"},{"name":"longpoll","url":"/v1/poll"}])
    );
    assert_eq!(
        v["disabled"],
        json!([{"name":"websocket","reason":"disabled by operator (SWITCHYARD_TRANSPORTS)"}])
    );
    assert_eq!(v["mode"], "degraded");
    assert_eq!(v["heartbeat_ms"], 15000);
    assert_eq!(v["poll_timeout_ms"], 25000);

    for path in ["/v1/ws?topics=a", "/v1/stream?topics=a"] {
        let (status, v) = ws_refused(&app.ws_url(path), None).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(v["error"]["code"], "transport_disabled", "{path}");
        assert_eq!(v["error"]["enabled"], json!(["sse", "longpoll"]), "{path}");
        assert!(
            v["error"]["message"]
                .as_str()
                .expect("message")
                .contains("websocket transport is disabled"),
            "{v}"
        );
    }
    let (status, ct, _) = get_with(&app, "/v1/stream?topics=a", "text/event-stream").await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let (status, _, v) = get_with(&app, "/v1/stream?topics=a&timeout=0", "*/*").await;
    assert_eq!(status, 200);
    assert_eq!(v["events"], json!([]));
    let mut sse = Sse::connect(&app, "/v1/sse?topics=a", None).await;
    assert_eq!(sse.next().await.event, "ready");
    let status = app.status().await;
    assert_eq!(status["mode"], "degraded");
    assert_eq!(status["transports"]["websocket"]["enabled"], false);
    assert_eq!(
        status["transports"]["websocket"]["reason"],
        "disabled by operator (SWITCHYARD_TRANSPORTS)"
    );
    assert_eq!(status["transports"]["sse"]["open"], 1);
    app.stop().await;
}

/// The mode follows the operator's first choice.
#[tokio::test]
async fn mode_follows_the_first_transport() {
    for (order, mode) in [
        (vec![Transport::WebSocket, Transport::Sse], "live"),
        (vec![Transport::Sse, Transport::WebSocket], "degraded"),
    ] {
        let app = spawn_app(|c| c.transports = Transports(order.clone())).await;
        assert_eq!(
            app.get_json("/v1/negotiate").await.1["mode"],
            mode,
            "{order:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn longpoll_only() {
    let app = spawn_app(|c| c.transports = Transports(vec![Transport::LongPoll])).await;
    let (_, v) = app.get_json("/v1/negotiate").await;
    assert_eq!(
        v["transports"],
        json!([{"name":"longpoll","url":"/v1/poll"}])
    );
    let disabled: Vec<&str> = v["disabled"]
        .as_array()
        .expect("disabled")
        .iter()
        .map(|d| d["name"].as_str().expect("name"))
        .collect();
    assert_eq!(disabled, ["websocket", "sse"]);
    assert_eq!(v["mode"], "degraded");

    let (status, v) = ws_refused(&app.ws_url("/v1/ws?topics=a"), None).await;
    assert_eq!(
        (status, v["error"]["enabled"].clone()),
        (503, json!(["longpoll"]))
    );
    for (path, accept) in [
        ("/v1/sse?topics=a", "text/event-stream"),
        ("/v1/stream?topics=a", "text/event-stream"),
    ] {
        let (status, _, v) = get_with(&app, path, accept).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(v["error"]["code"], "transport_disabled");
        assert_eq!(v["error"]["enabled"], json!(["longpoll"]));
    }
    let ids = app.publish_n("a", 0..2).await;
    let epoch = app.status().await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let (status, _, v) = get_with(
        &app,
        &format!("/v1/stream?topics=a&cursor={epoch}-0"),
        "*/*",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(super_ids(&v), ids);
    app.stop().await;
}

fn super_ids(v: &Value) -> Vec<String> {
    ids(v["events"].as_array().expect("events"))
}

#[tokio::test]
async fn every_transport_off() {
    let app = spawn_app(|c| c.transports = Transports(vec![])).await;
    let (_, v) = app.get_json("/v1/negotiate").await;
    assert_eq!(v["transports"], json!([]));
    assert_eq!(v["mode"], "off");
    assert_eq!(v["disabled"].as_array().expect("disabled").len(), 3);
    for path in ["/v1/ws?topics=a", "/v1/stream?topics=a"] {
        let (status, v) = ws_refused(&app.ws_url(path), None).await;
        assert_eq!(status, 503);
        assert_eq!(v["error"]["code"], "live_updates_off");
        assert_eq!(
            v["error"]["message"],
            "live updates are switched off; refresh to see changes"
        );
    }
    for (path, accept) in [
        ("/v1/sse?topics=a", "text/event-stream"),
        ("/v1/poll?topics=a", "*/*"),
        ("/v1/stream?topics=a", "text/event-stream"),
        ("/v1/stream?topics=a", "*/*"),
    ] {
        let (status, _, v) = get_with(&app, path, accept).await;
        assert_eq!(status, 503, "{path} {accept}");
        assert_eq!(v["error"]["code"], "live_updates_off", "{path} {accept}");
        assert_eq!(v["error"]["enabled"], json!([]));
    }
    // Publishing still works: the log does not depend on a transport.
    app.publish_n("a", 0..1).await;
    let status = app.status().await;
    assert_eq!(status["mode"], "off");
    let m = app.text("/metrics").await;
    assert!(
        m.contains("switchyard_refused_streams_total{reason=\"disabled\"} 6"),
        "{m}"
    );
    app.stop().await;
}

/// `Sec-WebSocket-Key` without `Upgrade: websocket` means a proxy stripped the upgrade:
/// a clear JSON error, counted in status and metrics.
#[tokio::test]
async fn a_stripped_upgrade_is_explained_and_counted() {
    let app = spawn_app(|_| {}).await;
    for path in ["/v1/ws?topics=a", "/v1/stream?topics=a"] {
        let resp = app
            .client
            .get(app.url(path))
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("connection", "keep-alive")
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 426, "{path}");
        assert_eq!(resp.headers()["upgrade"], "websocket");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "upgrade_stripped");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains("stripped the WebSocket upgrade"), "{msg}");
        assert_eq!(
            v["error"]["enabled"],
            json!(["websocket", "sse", "longpoll"])
        );
    }
    assert_eq!(app.status().await["counters"]["upgrade_stripped"], 2);
    let m = app.text("/metrics").await;
    assert!(m.contains("switchyard_upgrade_stripped_total 2"), "{m}");
    // A real upgrade still works.
    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=a")).await;
    assert_eq!(ws.next().await["op"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn websocket_origins_are_checked() {
    let app = spawn_app(|_| {}).await;
    let (status, v) = ws_refused(&app.ws_url("/v1/ws?topics=a"), Some("http://evil.example")).await;
    assert_eq!(status, 403);
    assert_eq!(v["error"]["code"], "origin_not_allowed");
    // Same origin passes.
    let mut req = app
        .ws_url("/v1/ws?topics=a")
        .into_client_request()
        .expect("req");
    req.headers_mut()
        .insert("origin", app.base.parse().expect("origin"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("same origin");
    use futures::StreamExt;
    assert!(within(WAIT, "ready", ws.next()).await.is_some());
    app.stop().await;

    let app = spawn_app(|c| {
        c.allowed_origins = AllowedOrigins::List(vec!["https://app.example.com".into()])
    })
    .await;
    ws_refused(
        &app.ws_url("/v1/ws?topics=a"),
        Some("https://other.example.com"),
    )
    .await;
    let mut req = app
        .ws_url("/v1/ws?topics=a")
        .into_client_request()
        .expect("req");
    req.headers_mut()
        .insert("origin", "https://app.example.com".parse().expect("origin"));
    tokio_tungstenite::connect_async(req)
        .await
        .expect("listed origin");
    // CORS for polls from the same list.
    let resp = app
        .client
        .get(app.url("/v1/poll?topics=a&timeout=0"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    app.stop().await;
}

/// At `SWITCHYARD_MAX_CONNECTIONS` connections (every socket counts) new streams get
/// 503 `connection_limit` (they arrive on the reserve, which serves only health, status,
/// metrics and publishing); a freed slot is usable again.
#[tokio::test]
async fn the_connection_cap_refuses_clearly() {
    let app = spawn_app(|c| c.max_connections = 2).await;
    let a = Sse::connect(&app, "/v1/sse?topics=a", None).await;
    let mut b = Ws::connect(&app.ws_url("/v1/ws?topics=a")).await;
    assert_eq!(b.next().await["op"], "ready");
    let (status, _, v) = get_with(&app, "/v1/sse?topics=a", "text/event-stream").await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["code"], "connection_limit");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("SWITCHYARD_MAX_CONNECTIONS")
    );
    let (status, v) = ws_refused(&app.ws_url("/v1/ws?topics=a"), None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("connection_limit"))
    );
    drop(a);
    wait_until(
        Duration::from_secs(10),
        "the closed SSE stream to free its slot",
        || async { (app.status().await["connections"]["open"] == 1).then_some(()) },
    )
    .await;
    let mut c = Sse::connect(&app, "/v1/sse?topics=a", None).await;
    assert_eq!(c.next().await.event, "ready");
    app.stop().await;
}
