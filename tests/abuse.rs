//! Under abuse (issue 16): head, idle and request time-outs, the connection budget and
//! its reserve, per-client connection limits, strict request heads. Each with the real
//! server and raw sockets, and a witness subscriber that must not notice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Connects to `addr` (host:port).
async fn connect(addr: &str) -> TcpStream {
    within(
        WAIT,
        "a TCP connection to the server",
        TcpStream::connect(addr),
    )
    .await
    .expect("connect")
}

/// Reads until the server closes the connection (or resets it); what it sent.
async fn read_to_close(stream: &mut TcpStream, limit: Duration, what: &str) -> String {
    let mut out = Vec::new();
    within(limit, what, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` on a new connection and returns the whole answer (the server closes
/// the connection after it).
async fn exchange(addr: &str, request: &str) -> String {
    let mut s = connect(addr).await;
    s.write_all(request.as_bytes()).await.expect("write");
    read_to_close(&mut s, WAIT, "the answer to a raw request").await
}

/// The JSON body of a raw HTTP answer.
fn body_json(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {answer}"))
}

/// Checks an error body: its `code`, and a message that names the variable to change.
fn assert_refusal(v: &Value, code: &str, variable: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(variable)),
        "the message names {variable}: {v}"
    );
}

/// Publishes one event on `topic` and checks that the witness `sse` gets exactly it.
async fn witness_gets_the_next_event(app: &TestApp, sse: &mut Sse, topic: &str) {
    let sent = app
        .publish(json!({"topic": topic, "type": "t", "data": {}}))
        .await;
    assert_eq!(
        ids(&sse.events(1).await),
        sent,
        "the witness got the next event, exactly"
    );
}

/// The server with no trusted proxy, so that loopback clients are limited per client
/// (loopback is a trusted proxy by default, and those are not), configured by `f`.
async fn spawn_untrusting(f: impl FnOnce(&mut switchyard::config::Config)) -> TestApp {
    spawn_app(|c| {
        c.trusted_proxies = switchyard::config::TrustedProxies(Vec::new());
        f(c);
    })
    .await
}

/// A witness: an SSE subscriber on `topic` opened before the abuse, which must get the
/// event published after it, with the expected cursor order.
async fn witness(app: &TestApp, topic: &str) -> Sse {
    let mut sse = Sse::connect(app, &format!("/v1/sse?topics={topic}"), None).await;
    let ready = sse.next().await;
    assert_eq!(ready.event, "ready", "{ready:?}");
    sse
}

#[tokio::test]
async fn slow_and_silent_heads_are_closed_at_the_head_timeout_while_everyone_else_is_served() {
    let app = spawn_app(|c| {
        c.head_timeout = switchyard::config::HumanDuration(Duration::from_secs(2));
    })
    .await;
    let addr = app.addr.to_string();
    let mut sse = witness(&app, "w").await;
    // Thousands of connections: half send nothing, half a partial head.
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut partial = Vec::new();
    for i in 0..2000 {
        let mut s = connect(&addr).await;
        if i % 2 == 1 {
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .expect("partial head");
            partial.push(s);
        } else {
            silent.push(s);
        }
    }
    // Meanwhile health, publishing and the witness work.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let sent = app
        .publish(json!({"topic": "w", "type": "t", "data": {"n": 1}}))
        .await;
    let got = sse.events(1).await;
    assert_eq!(ids(&got), sent, "the witness got the event, with its id");
    let sockets = app.status().await["connections"]["sockets"].as_u64();
    assert!(
        sockets >= Some(2002),
        "every accepted socket counts: 2,000 + the witness + the status request: {sockets:?}"
    );
    // Each is closed at the limit: not before 2 s, and soon after.
    for s in partial.iter_mut() {
        let answer = read_to_close(s, Duration::from_secs(15), "a partial head to be cut").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_eq!(body_json(&answer)["error"]["code"], "head_timeout");
    }
    for s in silent.iter_mut() {
        let answer = read_to_close(
            s,
            Duration::from_secs(15),
            "a silent connection to be closed",
        )
        .await;
        assert_eq!(
            answer, "",
            "nothing is said to a connection that said nothing"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "closed before the limit: {took:?}"
    );
    let status = app.status().await;
    assert_eq!(
        status["connections"]["refused"]["head_timeout"], 2000,
        "{status}"
    );
    // The witness is still there and exact.
    witness_gets_the_next_event(&app, &mut sse, "w").await;
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let app = spawn_app(|c| {
        c.idle_timeout = switchyard::config::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let mut s = connect(&app.addr.to_string()).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    // The answer, then the connection stays open (keep-alive) until the idle limit.
    let mut buf = vec![0u8; 4096];
    let n = within(WAIT, "the health answer", s.read(&mut buf))
        .await
        .expect("read");
    let answered = Instant::now();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let rest = read_to_close(
        &mut s,
        Duration::from_secs(10),
        "the idle connection to be closed",
    )
    .await;
    let idle = answered.elapsed();
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest}"
    );
    assert!(
        idle >= Duration::from_millis(900),
        "closed after {idle:?}, before the 1 s limit"
    );
    assert!(idle < Duration::from_secs(8), "closed after {idle:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_body_that_never_arrives_gets_408_and_stores_nothing() {
    let app = spawn_app(|c| {
        c.request_timeout = switchyard::config::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let mut s = connect(&app.addr.to_string()).await;
    s.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"topic\":",
    )
    .await
    .expect("partial body");
    let started = Instant::now();
    let answer = read_to_close(&mut s, Duration::from_secs(10), "the 408 for a slow body").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(body_json(&answer)["error"]["code"], "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(app.status().await["counters"]["published"], 0);
    app.stop().await;
}

#[tokio::test]
async fn one_client_is_held_to_its_share_of_connections() {
    let app = spawn_untrusting(|c| {
        c.max_connections_per_client = 5;
    })
    .await;
    let addr = app.addr.to_string();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect(&addr).await);
    }
    // The server has counted them once it refuses the sixth.
    let answer = wait_until(WAIT, "the sixth connection to be refused", || async {
        let answer = exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        answer.starts_with("HTTP/1.1 429").then_some(answer)
    })
    .await;
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let v = body_json(&answer);
    assert_refusal(
        &v,
        "too_many_connections",
        "SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT",
    );
    // One closed: the next is served.
    drop(held.pop());
    let answer = wait_until(WAIT, "a connection to be served again", || async {
        let answer = exchange(
            &addr,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        answer.starts_with("HTTP/1.1 200").then_some(answer)
    })
    .await;
    assert!(answer.contains("ok") || answer.contains("200"), "{answer}");
    drop(held);
    let status = wait_until(WAIT, "the held connections to be given back", || async {
        let s = app.status().await;
        (s["connections"]["sockets"] == 1).then_some(s)
    })
    .await;
    assert!(
        status["connections"]["refused"]["per_client"].as_u64() >= Some(1),
        "{status}"
    );
    app.stop().await;
}

#[tokio::test]
async fn past_the_budget_health_status_and_publishing_still_answer_on_the_reserve() {
    // 512 files: a budget of 512 - 256 = 256 connections, whatever was configured.
    let server = spawn_binary_nofile(&[("SWITCHYARD_HEAD_TIMEOUT", "60s")], 512).await;
    let base = server.base();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let status =
        |client: reqwest::Client, base: String| async move { status_at(&client, &base).await };
    let v = status(client.clone(), base.clone()).await;
    assert_eq!(
        v["connections"]["max"], 256,
        "clamped to the open-file limit: {v}"
    );
    assert_eq!(v["connections"]["configured_max"], 100000);
    // A witness stream, then the rest of the budget filled with silent connections.
    let mut witness = client
        .get(format!("{base}/v1/sse?topics=w"))
        .send()
        .await
        .expect("witness");
    assert_eq!(witness.status(), 200);
    let mut silent = Vec::new();
    for _ in 0..255 {
        silent.push(connect(&server.addr).await);
    }
    wait_until(WAIT, "the budget to be full", || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let v = status(client, base).await;
            // 256 of the budget + this status request on the reserve.
            (v["connections"]["sockets"] == 257).then_some(())
        }
    })
    .await;
    // Past the budget: anything but health, status, metrics and publishing is refused.
    let answer = exchange(&server.addr, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(body_json(&answer)["error"]["code"], "connection_limit");
    let answer = exchange(
        &server.addr,
        "GET /v1/sse?topics=w HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let published = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"topic": "w", "type": "t", "data": {"n": 1}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 201);
    let id = published.json::<Value>().await.expect("ids")["ids"][0]
        .as_str()
        .expect("id")
        .to_owned();
    // The witness gets it.
    let mut text = String::new();
    within(WAIT, "the witness to get the event", async {
        while !text.contains(&id) {
            let chunk = witness.chunk().await.expect("chunk").expect("open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    // Even the reserve full: refused at once, and the server never runs out of files.
    let mut extra = Vec::new();
    for _ in 0..80 {
        extra.push(connect(&server.addr).await);
    }
    let answer = wait_until(WAIT, "a refusal past the reserve", || async {
        let answer = exchange(
            &server.addr,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .await;
        answer.starts_with("HTTP/1.1 503").then_some(answer)
    })
    .await;
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    drop(extra);
    let v = wait_until(WAIT, "the reserve to be free again", || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let v = status(client, base).await;
            (v["connections"]["sockets"] == 257).then_some(v)
        }
    })
    .await;
    assert!(
        v["connections"]["refused"]["connection_limit"].as_u64() >= Some(3),
        "{v}"
    );
    drop(silent);
    drop(witness);
}

#[tokio::test]
async fn heads_that_are_not_strict_http_are_refused_and_nothing_else_notices() {
    let app = spawn_app(|_| {}).await;
    let addr = app.addr.to_string();
    let mut sse = witness(&app, "w").await;
    for (head, what) in [
        ("GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", "CRLF"),
        ("GET /healthz HTTP/1.1\r\n\r\n", "needs a Host"),
        (
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
            "more than one Host",
        ),
        (
            "GET /v1/sse?topics=w HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n",
            "more than one Host",
        ),
        (
            "GET /\u{1} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "malformed",
        ),
    ] {
        let answer = exchange(&addr, head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        let v = body_json(&answer);
        assert_eq!(v["error"]["code"], "bad_request_head", "{head:?}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{head:?}: {message}");
    }
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = exchange(&addr, &big).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(app.status().await["connections"]["refused"]["bad_head"], 6);
    witness_gets_the_next_event(&app, &mut sse, "w").await;
    app.stop().await;
}

#[tokio::test]
async fn sigterm_exits_within_the_drain_limit_whatever_the_clients_do() {
    let mut server = spawn_binary(&[("SWITCHYARD_HEAD_TIMEOUT", "60s")]).await;
    let addr = server.addr.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // 200 slowloris connections, each with part of a head.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = connect(&addr).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            .await
            .expect("partial head");
        slow.push(s);
    }
    // 100 SSE clients that never read, then more events than their sockets hold.
    let mut stuck = Vec::new();
    for _ in 0..100 {
        let mut s = connect(&addr).await;
        s.write_all(b"GET /v1/sse?topics=big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("sse head");
        stuck.push(s);
    }
    wait_until(WAIT, "the 100 streams to be open", || {
        let (client, base) = (client.clone(), server.base());
        async move {
            let v = status_at(&client, &base).await;
            (v["connections"]["open"] == 100).then_some(())
        }
    })
    .await;
    let pad = "x".repeat(60_000);
    for n in 0..40 {
        let events: Vec<Value> = (0..4)
            .map(|i| json!({"topic": "big", "type": "t", "data": {"n": n * 4 + i, "pad": pad}}))
            .collect();
        let resp = client
            .post(format!("{}/v1/events", server.base()))
            .json(&events)
            .send()
            .await
            .expect("publish");
        assert_eq!(resp.status(), 201);
    }
    let started = Instant::now();
    server.terminate();
    let exit = within(
        Duration::from_secs(20),
        "the server to exit after SIGTERM",
        server.child.wait(),
    )
    .await
    .expect("wait");
    let took = started.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        took < Duration::from_millis(5_500),
        "SIGTERM to exit took {took:?}, past the 5 s drain limit"
    );
    drop((slow, stuck));
}

/// Opens a WebSocket on a raw socket (the handshake by hand) and reads up to the
/// `ready` frame.
async fn raw_websocket(addr: &str) -> TcpStream {
    let mut s = connect(addr).await;
    s.write_all(
        b"GET /v1/ws?topics=a HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    within(WAIT, "the 101 head", async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.expect("head byte");
            head.push(byte[0]);
        }
    })
    .await;
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (opcode, payload) = read_frame(&mut s).await;
    assert_eq!(opcode, 1, "the ready frame first");
    assert!(String::from_utf8_lossy(&payload).contains("ready"));
    s
}

/// One unmasked server frame: (opcode, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    within(WAIT, "a frame from the server", async {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.expect("frame head");
        let len = match b[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.expect("len16");
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.expect("len64");
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("len")];
        s.read_exact(&mut payload).await.expect("payload");
        (b[0] & 0x0f, payload)
    })
    .await
}

/// A masked client frame (mask 0x01020304) with the given first byte.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first, 0x80 | u8::try_from(payload.len()).expect("short")];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test]
async fn websocket_protocol_errors_close_with_their_code() {
    let app = spawn_app(|_| {}).await;
    let addr = app.addr.to_string();
    let mut sse = witness(&app, "a").await;
    let cases: [(&str, Vec<u8>, u16, &str); 5] = [
        (
            "an unmasked frame",
            vec![0x81, 0x02, b'h', b'i'],
            1002,
            "protocol_error",
        ),
        (
            "reserved bits set",
            masked(0xC1, b"hi"),
            1002,
            "protocol_error",
        ),
        (
            "a reserved opcode",
            masked(0x83, b""),
            1002,
            "protocol_error",
        ),
        (
            "a fragmented ping",
            masked(0x09, b""),
            1002,
            "protocol_error",
        ),
        (
            "invalid UTF-8 text",
            masked(0x81, &[0xff, 0xfe]),
            1007,
            "invalid_utf8",
        ),
    ];
    for (what, frame, code, error) in cases {
        let mut s = raw_websocket(&addr).await;
        s.write_all(&frame).await.expect("bad frame");
        // An error frame saying what was wrong, then the close frame with the code.
        let (opcode, payload) = read_frame(&mut s).await;
        assert_eq!(opcode, 1, "{what}: an error frame first");
        let v: Value = serde_json::from_slice(&payload).expect("error frame JSON");
        assert_eq!(
            (v["op"].as_str(), v["code"].as_str()),
            (Some("error"), Some(error)),
            "{what}: {v}"
        );
        let (opcode, payload) = read_frame(&mut s).await;
        assert_eq!(opcode, 8, "{what}: then a close frame");
        assert!(payload.len() >= 2, "{what}: the close frame carries a code");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code, "{what}");
    }
    witness_gets_the_next_event(&app, &mut sse, "a").await;
    app.stop().await;
}

/// A client bound to another loopback address, to be another client.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

#[tokio::test]
async fn wrong_publish_keys_are_limited_per_client_then_429() {
    let key = "a-publish-key-of-enough-length";
    let app = spawn_untrusting(|c| {
        c.publish_key = Some(key.into());
        // One wrong key a minute: the second attempt is refused, however slow the test.
        c.key_failures_per_minute = 1;
    })
    .await;
    let event = json!({"topic": "a", "type": "t", "data": {}});
    let post = |client: &reqwest::Client, bearer: &str| {
        client
            .post(app.url("/v1/events"))
            .bearer_auth(bearer)
            .json(&event)
            .send()
    };
    let attacker = client_from("127.0.0.1");
    // A wrong key is answered 401, checked.
    assert_eq!(post(&attacker, "guess").await.expect("post").status(), 401);
    // Then 429, with when to come back, the key not even looked at: the right one too.
    for bearer in ["guess", key] {
        let resp = post(&attacker, bearer).await.expect("post");
        assert_eq!(resp.status(), 429, "{bearer}");
        assert_eq!(resp.headers()["retry-after"], "60");
        let v: Value = resp.json().await.expect("json");
        assert_refusal(&v, "rate_limited", "SWITCHYARD_KEY_FAILURES_PER_MINUTE");
    }
    // Another client is not affected, and nothing was stored by the attempts.
    let other = client_from("127.0.0.2");
    assert_eq!(post(&other, key).await.expect("post").status(), 201);
    let status = app.status().await;
    assert_eq!(status["counters"]["published"], 1, "{status}");
    assert_eq!(
        status["counters"]["rate_limited"]["publish_key"], 2,
        "{status}"
    );
    app.stop().await;
}

#[tokio::test]
async fn one_client_cannot_use_up_the_report_bucket() {
    let app = spawn_untrusting(|c| {
        c.reports_per_client = 1;
    })
    .await;
    let report = json!({"from": "websocket", "to": "sse", "reason": "upgrade_failed"});
    let send = |client: &reqwest::Client| client.post(app.url("/v1/reports")).json(&report).send();
    let noisy = client_from("127.0.0.1");
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(send(&noisy).await.expect("report").status().as_u16());
        }
        out
    };
    assert_eq!(statuses, [204, 429, 429]);
    // A legitimate client still gets its reports counted.
    let legit = client_from("127.0.0.3");
    assert_eq!(send(&legit).await.expect("report").status(), 204);
    let status = app.status().await;
    assert_eq!(
        status["counters"]["fallbacks"]["upgrade_failed"], 2,
        "{status}"
    );
    assert_eq!(status["counters"]["rate_limited"]["reports"], 2, "{status}");
    app.stop().await;
}

#[tokio::test]
async fn a_websocket_sending_ops_too_fast_is_closed_1008() {
    // One frame a second: the second frame sent at once is one too many, however slow
    // the machine.
    let app = spawn_app(|c| c.ws_ops_per_second = 1).await;
    let mut sse = witness(&app, "a").await;
    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=a")).await;
    assert_eq!(ws.next().await["op"], "ready");
    let flood = r#"{"op":"subscribe","topics":["b"]}"#;
    let mut refused = None;
    for _ in 0..2 {
        ws.send_text(flood).await;
    }
    within(WAIT, "the flood to be refused", async {
        loop {
            match ws.next_message().await {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("json");
                    if v["op"] == "error" {
                        assert_eq!(v["code"], "rate_limited", "{v}");
                        refused = Some(v);
                    }
                }
                Message::Close(frame) => {
                    let frame = frame.expect("a close frame with a code");
                    assert_eq!(u16::from(frame.code), 1008);
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(refused.is_some(), "an error frame came before the close");
    let status = app.status().await;
    assert_eq!(status["counters"]["rate_limited"]["ws_ops"], 1, "{status}");
    witness_gets_the_next_event(&app, &mut sse, "a").await;
    app.stop().await;
}

#[tokio::test]
async fn a_long_poll_answer_is_bounded_in_bytes_and_the_next_goes_on() {
    let app = spawn_app(|_| {}).await;
    let start = app.poll("topics=big&timeout=0").await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let pad = "x".repeat(600_000);
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.extend(
            app.publish(json!({"topic": "big", "type": "t", "data": {"n": n, "pad": pad}}))
                .await,
        );
    }
    // 1 MiB a answer: the first two events (the second reaches it), then the third.
    let first = app
        .poll(&format!("topics=big&timeout=0&cursor={start}"))
        .await;
    let got: Vec<Value> = first["events"].as_array().expect("events").clone();
    assert_eq!(
        ids(&got),
        sent[..2],
        "the answer ends with the event that reaches 1 MiB"
    );
    let cursor = first["cursor"].as_str().expect("cursor");
    assert_eq!(cursor, sent[1], "its cursor is its last event's");
    let second = app
        .poll(&format!("topics=big&timeout=0&cursor={cursor}"))
        .await;
    let got: Vec<Value> = second["events"].as_array().expect("events").clone();
    assert_eq!(ids(&got), sent[2..], "the next poll goes on from there");
    app.stop().await;
}

#[tokio::test]
async fn one_client_is_held_to_its_share_of_streams_and_others_are_not() {
    // Loopback is a trusted proxy by default: each request's client is its
    // `X-Forwarded-For`, as behind nginx.
    let app = spawn_app(|c| c.max_streams_per_client = 2).await;
    let mut sse = witness(&app, "w").await;
    let open_as = |client: &'static str| {
        app.client
            .get(app.url("/v1/sse?topics=a"))
            .header("x-forwarded-for", client)
            .send()
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let resp = open_as("203.0.113.5").await.expect("stream");
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    let resp = open_as("203.0.113.5").await.expect("third stream");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.expect("json");
    assert_refusal(&v, "too_many_streams", "SWITCHYARD_MAX_STREAMS_PER_CLIENT");
    // A long poll is a stream too.
    let poll = app
        .client
        .get(app.url("/v1/poll?topics=a"))
        .header("x-forwarded-for", "203.0.113.5")
        .send()
        .await
        .expect("poll");
    assert_eq!(poll.status(), 429);
    // Another client, and the proxy's own requests, are not affected.
    let other = open_as("203.0.113.6").await.expect("other client");
    assert_eq!(other.status(), 200);
    let status = app.status().await;
    assert_eq!(status["counters"]["refused"]["per_client"], 2, "{status}");
    assert_eq!(status["connections"]["stream_clients"], 2, "{status}");
    witness_gets_the_next_event(&app, &mut sse, "w").await;
    // One closed: the client may open another.
    drop(held.pop());
    wait_until(WAIT, "a stream to be given back to its client", || async {
        let resp = open_as("203.0.113.5").await.expect("stream");
        (resp.status() == 200).then_some(resp)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_client_opening_connections_too_fast_is_refused_and_others_are_not() {
    // One new connection a second, in bursts of two.
    let app = spawn_untrusting(|c| c.new_connections_per_client = 1).await;
    let addr = app.addr.to_string();
    let mut answers = Vec::new();
    for _ in 0..10 {
        let answer = exchange(
            &addr,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        answers.push(answer);
    }
    let refused: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 429"))
        .collect();
    assert!(
        refused.len() >= 10 - 2 - 1,
        "ten connections within seconds, at most three admitted: {answers:?}"
    );
    let answer = refused[0];
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let v = body_json(answer);
    assert_refusal(
        &v,
        "connection_rate",
        "SWITCHYARD_NEW_CONNECTIONS_PER_CLIENT",
    );
    let other = client_from("127.0.0.2");
    let status: Value = other
        .get(app.url("/v1/status"))
        .send()
        .await
        .expect("status from another client")
        .json()
        .await
        .expect("json");
    assert_eq!(
        status["connections"]["refused"]["connect_rate"].as_u64(),
        Some(refused.len() as u64),
        "{status}"
    );
    app.stop().await;
}

/// Reads one HTTP answer with a `content-length` body from a kept-alive connection.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    within(WAIT, "one answer on a kept-alive connection", async {
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .expect("a content-length");
                if body.len() >= len {
                    return;
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole answer: {text}");
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_kept_alive_request_needs_exactly_one_host_too() {
    let app = spawn_app(|_| {}).await;
    let mut s = connect(&app.addr.to_string()).await;
    for (head, status, what) in [
        (
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "200",
            "",
        ),
        (
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
            "400",
            "more than one Host",
        ),
        ("GET /healthz HTTP/1.1\r\n\r\n", "400", "needs a Host"),
        (
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "200",
            "",
        ),
    ] {
        s.write_all(head.as_bytes()).await.expect("write");
        let answer = read_answer(&mut s).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{head:?}: {answer}"
        );
        if status == "400" {
            let v = body_json(&answer);
            assert_eq!(v["error"]["code"], "bad_request_head", "{v}");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(what), "{head:?}: {message}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_in_memory_log_keeps_to_its_byte_budget_with_large_events() {
    let server = spawn_binary(&[("SWITCHYARD_RETAIN_BYTES", "4MiB")]).await;
    let base = server.base();
    let client = reqwest::Client::new();
    let big = "x".repeat(512 * 1024);
    let publish = |n: u64| {
        client
            .post(format!("{base}/v1/events"))
            .json(&json!({"topic": "big", "type": "t", "data": {"n": n, "pad": big}}))
            .send()
    };
    let before = server.rss_kib() * 1024;
    let events = 100;
    for n in 0..events {
        let resp = publish(n).await.expect("publish");
        assert_eq!(resp.status(), 201, "event {n}");
    }
    let status = status_at(&client, &base).await;
    let log = &status["log"];
    let retained = log["retained"].as_u64().expect("retained");
    let bytes = log["retained_bytes"].as_u64().expect("retained_bytes");
    assert!(bytes <= 4 << 20, "{log}");
    // An event counts in every encoding kept of it (~1.5 MiB each here).
    assert!(
        (1..=8).contains(&retained),
        "4 MiB holds a few events of 512 KiB, at most 8: {log}"
    );
    // The oldest were dropped, the newest kept, none between.
    let oldest = seq(log["oldest"].as_str().expect("oldest"));
    let head = seq(status["cursor"].as_str().expect("cursor"));
    assert_eq!(head - oldest + 1, retained, "{status}");
    assert!(oldest > 1, "{status}");
    // 50 MiB published; unbounded it would hold ~150 MB (~3 bytes of RSS per body byte).
    let grown = (server.rss_kib() * 1024).saturating_sub(before);
    eprintln!("RSS grew {grown} bytes for 100 events of 512 KiB");
    assert!(
        grown < 48 << 20,
        "RSS grew {grown} bytes for a 4 MiB budget (before {before})"
    );
    server.terminate();
}
