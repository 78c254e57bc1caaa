//! The real binary as a process: configuration errors, `--help`, graceful shutdown on
//! SIGTERM, and the memory a stalled reader can cost.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn an_invalid_variable_stops_the_start_with_one_line() {
    let cases = [
        ("SWITCHYARD_ADDR", "nowhere", "expected IP:PORT"),
        (
            "SWITCHYARD_TRANSPORTS",
            "websocket,pigeon",
            "unknown transport \"pigeon\"",
        ),
        ("SWITCHYARD_TRANSPORTS", "sse,sse", "listed twice"),
        (
            "SWITCHYARD_HEARTBEAT",
            "soon",
            "expected a duration such as 15s",
        ),
        (
            "SWITCHYARD_HEARTBEAT",
            "1ms",
            "expected a duration from 50ms to 1h",
        ),
        (
            "SWITCHYARD_POLL_TIMEOUT",
            "0s",
            "expected a duration from 1s to 5m",
        ),
        (
            "SWITCHYARD_RETAIN",
            "0",
            "expected a whole number from 1 to 10000000",
        ),
        ("SWITCHYARD_RETAIN_AGE", "forever", "expected a duration"),
        ("SWITCHYARD_PUBLISH_KEY", "short", "at least 16 characters"),
        (
            "SWITCHYARD_ALLOWED_ORIGINS",
            "example.com",
            "is not scheme://host[:port]",
        ),
        (
            "SWITCHYARD_MAX_CONNECTIONS",
            "0",
            "0 is not in 1..=10000000",
        ),
        (
            "SWITCHYARD_SSE_PADDING",
            "-1",
            "expected a whole number from 0 to 65536",
        ),
        (
            "SWITCHYARD_POLL_BATCH",
            "lots",
            "expected a whole number from 1 to 100000",
        ),
        ("SWITCHYARD_DEMO", "maybe", "expected on or off"),
        ("SWITCHYARD_TCP_NODELAY", "nagle", "expected on or off"),
        (
            "SWITCHYARD_FANOUT_LINGER",
            "1s",
            "expected a duration from 0s to 100ms",
        ),
    ];
    for (var, value, words) in cases {
        let (code, _, stderr) = run_binary(&[(var, value)], &[]).await;
        assert_eq!(code, 2, "{var}={value}: exit code; stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}={value}: one line, got {stderr:?}");
        let line = lines[0];
        let shown = if var == "SWITCHYARD_PUBLISH_KEY" {
            "<hidden>"
        } else {
            value
        };
        assert!(
            line.starts_with(&format!("switchyard: invalid {var}=\"{shown}\": ")),
            "{var}={value}: {line}"
        );
        assert!(
            line.contains(words),
            "{var}={value}: {line:?} should say {words:?}"
        );
    }
}

/// `static/` is found from any working directory (here: `/`).
#[tokio::test]
async fn the_demo_page_is_served_from_any_working_directory() {
    let mut server = spawn_binary_in(&[], Some("/")).await;
    let resp = reqwest::get(format!("{}/", server.base()))
        .await
        .expect("GET /");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("html").contains("<html"));
    server.terminate();
    within(WAIT, "exit", server.child.wait())
        .await
        .expect("wait");
}

#[tokio::test]
async fn publishing_without_a_key_is_refused_off_loopback() {
    let (code, _, stderr) = run_binary(&[("SWITCHYARD_ADDR", "0.0.0.0:0")], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("SWITCHYARD_PUBLISH_KEY is unset but SWITCHYARD_ADDR=0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn help_lists_every_variable_with_its_default() {
    let (code, stdout, _) = run_binary(&[], &["--help"]).await;
    assert_eq!(code, 0);
    // Undo clap's line wrapping.
    let stdout = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for (var, default) in [
        ("SWITCHYARD_ADDR", "127.0.0.1:3000"),
        ("SWITCHYARD_TRANSPORTS", "websocket,sse,longpoll"),
        ("SWITCHYARD_HEARTBEAT", "15s"),
        ("SWITCHYARD_POLL_TIMEOUT", "25s"),
        ("SWITCHYARD_RETAIN", "10000"),
        ("SWITCHYARD_RETAIN_AGE", "1h"),
        ("SWITCHYARD_PUBLISH_KEY", ""),
        ("SWITCHYARD_ALLOWED_ORIGINS", "same"),
        ("SWITCHYARD_MAX_CONNECTIONS", "100000"),
        ("SWITCHYARD_STATIC_DIR", ""),
        ("SWITCHYARD_SSE_PADDING", "2048"),
        ("SWITCHYARD_POLL_BATCH", "1000"),
        ("SWITCHYARD_DEMO", ""),
        ("SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT", "1000"),
        ("SWITCHYARD_HEAD_TIMEOUT", "10s"),
        ("SWITCHYARD_IDLE_TIMEOUT", "60s"),
        ("SWITCHYARD_REQUEST_TIMEOUT", "10s"),
        ("SWITCHYARD_KEY_FAILURES_PER_MINUTE", "30"),
        ("SWITCHYARD_REPORTS_PER_CLIENT", "5"),
        ("SWITCHYARD_WS_OPS_PER_SECOND", "50"),
        ("SWITCHYARD_NEW_CONNECTIONS_PER_CLIENT", "100"),
        ("SWITCHYARD_MAX_STREAMS_PER_CLIENT", "500"),
        ("SWITCHYARD_IDEMPOTENCY_WINDOW", "10m"),
        ("SWITCHYARD_TCP_NODELAY", "on"),
        ("SWITCHYARD_FANOUT_LINGER", "10ms"),
    ] {
        assert!(
            stdout.contains(&format!("[env: {var}")),
            "--help lacks {var}:\n{stdout}"
        );
        if !default.is_empty() {
            assert!(
                stdout.contains(&format!("[default: {default}]")),
                "--help lacks default {default}"
            );
        }
    }
}

/// SIGTERM with open WebSocket, SSE and poll clients: each is told to reconnect (with a
/// jittered delay), the WebSocket closes with 1012, and the process exits in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_transport_and_exits_in_time() {
    let mut server = spawn_binary(&[]).await;
    let base = server.base();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let last = publish_at(&client, &base, json!({"topic":"d","type":"x"}))
        .await
        .remove(0);

    let mut wss = Vec::new();
    for _ in 0..3 {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?topics=d", server.addr))
                .await
                .expect("ws");
        let ready = within(WAIT, "ready", ws.next())
            .await
            .expect("frame")
            .expect("ok");
        assert!(ready.to_text().expect("text").contains("\"op\":\"ready\""));
        wss.push(ws);
    }
    let sse_resp = client
        .get(format!("{base}/v1/sse?topics=d"))
        .send()
        .await
        .expect("sse");
    use eventsource_stream::Eventsource;
    let mut sse = sse_resp.bytes_stream().eventsource();
    assert_eq!(
        within(WAIT, "SSE ready", sse.next())
            .await
            .expect("e")
            .expect("ok")
            .event,
        "ready"
    );
    let poll = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/v1/poll?topics=d&cursor={last}");
        async move {
            let resp = client.get(url).send().await.expect("poll");
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.expect("json"),
            )
        }
    });
    // The poll is waiting once the server counts it open.
    wait_until(WAIT, "the poll to be waiting", || async {
        let s = status_at(&client, &base).await;
        (s["transports"]["longpoll"]["open"] == 1).then_some(())
    })
    .await;

    let t = Instant::now();
    server.terminate();

    let mut delays = Vec::new();
    for mut ws in wss {
        let v: Value = match within(WAIT, "WebSocket reconnect", ws.next()).await {
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t).expect("json"),
            other => panic!("expected reconnect, got {other:?}"),
        };
        assert_eq!(v["op"], "reconnect", "{v}");
        assert_eq!(v["reason"], "shutdown");
        delays.push(v["after_ms"].as_u64().expect("after_ms"));
        match within(WAIT, "WebSocket close", ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Restart),
            other => panic!("expected close 1012, got {other:?}"),
        }
    }
    let e = within(WAIT, "SSE reconnect", sse.next())
        .await
        .expect("event")
        .expect("ok");
    assert_eq!(e.event, "reconnect");
    assert_eq!(
        e.id, last,
        "the reconnect carries the cursor to resume from"
    );
    let v: Value = serde_json::from_str(&e.data).expect("json");
    delays.push(v["after_ms"].as_u64().expect("after_ms"));
    assert!(
        within(WAIT, "SSE end", sse.next()).await.is_none(),
        "SSE ends after reconnect"
    );
    let (status, v) = within(WAIT, "the poll to answer", poll)
        .await
        .expect("poll task");
    assert_eq!(status, 200);
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["cursor"], last.as_str());
    assert_eq!(v["reconnect"]["reason"], "shutdown");
    delays.push(v["reconnect"]["after_ms"].as_u64().expect("after_ms"));

    assert!(
        delays.iter().all(|d| (250..=3000).contains(d)),
        "{delays:?}"
    );
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(distinct.len() > 1, "after_ms is jittered: {delays:?}");

    let status = within(
        Duration::from_secs(8),
        "the process to exit within the drain time",
        server.child.wait(),
    )
    .await
    .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "exit took {:?}",
        t.elapsed()
    );
}

/// A stalled WebSocket reader while 40 MB of events go out: the server's memory stays
/// bounded by its named limits (retention and the broadcast ring), not by the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_costs_bounded_memory() {
    const N: u64 = 20_000;
    const EVENT_BYTES: usize = 2000;
    let server = spawn_binary(&[("SWITCHYARD_RETAIN", "1000")]).await;
    let base = server.base();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let (mut slow, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?topics=m", server.addr))
            .await
            .expect("ws");
    within(WAIT, "ready", slow.next())
        .await
        .expect("frame")
        .expect("ok");
    let before = server.rss_kib();
    let pad = "x".repeat(EVENT_BYTES);
    let mut peak = before;
    for chunk in 0..N / 500 {
        let events: Vec<Value> = (chunk * 500..chunk * 500 + 500)
            .map(|n| json!({"topic":"m","type":"x","data":{"n":n,"pad":pad}}))
            .collect();
        publish_at(&client, &base, Value::Array(events)).await;
        peak = peak.max(server.rss_kib());
    }
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    // Each event is held in three encodings (~6 kB). Unbounded queueing for the stalled
    // reader would hold all 20,000 (~120 MiB). The broadcast ring is never longer than
    // the log (1,000 here), so what a stalled reader pins is what retention keeps anyway:
    // ~6 MiB plus the publishing path's own buffers (measured: 27 MiB growth).
    let backlog_mib = (N as usize * EVENT_BYTES * 3 / (1024 * 1024)) as u64;
    eprintln!(
        "RSS before {before} KiB, peak {peak} KiB, growth {growth_mib} MiB (backlog would be {backlog_mib} MiB)"
    );
    assert!(
        growth_mib < backlog_mib / 3,
        "server memory grew {growth_mib} MiB while a reader stalled; the backlog is {backlog_mib} MiB"
    );
    // And the stalled reader is still served: told to reset, then live.
    let mut reset = false;
    within(
        Duration::from_secs(60),
        "the stalled reader to get its reset",
        async {
            while let Some(Ok(msg)) = slow.next().await {
                if let Message::Text(t) = msg
                    && t.contains("\"op\":\"reset\"")
                {
                    reset = true;
                    break;
                }
            }
        },
    )
    .await;
    assert!(
        reset,
        "the stalled reader fell out of retention and must be told"
    );
}
