//! Under abuse (issue 16): head, idle and request time-outs, the connection budget and
//! its reserve, per-client connection limits, strict request heads. Each with the real
//! server and raw sockets, and a witness subscriber that must not notice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let sent = app
        .publish(json!({"topic": "w", "type": "t", "data": {"n": 2}}))
        .await;
    assert_eq!(ids(&sse.events(1).await), sent);
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
    // Loopback is a trusted proxy by default (not limited per client): trust none here.
    let app = spawn_app(|c| {
        c.trusted_proxies = switchyard::config::TrustedProxies(Vec::new());
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
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT")),
        "{v}"
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
    let sent = app
        .publish(json!({"topic": "w", "type": "t", "data": {"n": 1}}))
        .await;
    assert_eq!(ids(&sse.events(1).await), sent);
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
