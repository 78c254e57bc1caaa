//! The log's guarantees over the wire: no gap and no duplicate at the replay/live seam,
//! resets for cursors that cannot be resumed, and slow subscribers that stay bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The classic race: a subscriber reads the log, then joins the live broadcast; an event
/// published in between must be neither lost nor delivered twice. Many subscribers join
/// mid-stream, over every transport, while a publisher runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_at_the_replay_live_seam() {
    const TOTAL: u64 = 1500;
    const BATCH: u64 = 3;
    let app = Arc::new(spawn_app(|_| {}).await);
    let epoch = app.status().await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    // The publisher announces the last sequence it published.
    let (progress, mut published) = tokio::sync::watch::channel(0u64);

    let publisher = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while n < TOTAL {
                let ids = app.publish_n("seam", n..n + BATCH).await;
                n += BATCH;
                let _ = progress.send(seq(ids.last().expect("ids")));
            }
        })
    };

    let mut subscribers = Vec::new();
    for i in 0..24u64 {
        // Join at staggered points while the publisher runs.
        let target = (i + 1) * TOTAL / 30;
        within(
            Duration::from_secs(60),
            "the publisher to make progress",
            published.wait_for(|p| *p >= target),
        )
        .await
        .expect("publisher alive");
        let head = *published.borrow();
        // Half resume from a little behind the head (replay then live), half from now.
        let cursor = (i % 2 == 0).then(|| format!("{epoch}-{}", head.saturating_sub(20 + i)));
        let app = app.clone();
        subscribers.push(tokio::spawn(async move {
            let q = match &cursor {
                Some(c) => format!("topics=seam&cursor={c}"),
                None => "topics=seam".to_owned(),
            };
            let (start, got) = match i % 3 {
                0 => {
                    let mut ws = Ws::connect(&app.ws_url(&format!("/v1/ws?{q}"))).await;
                    let ready = ws.next().await;
                    let start = seq(ready["cursor"].as_str().expect("cursor"));
                    let n = (TOTAL - start) as usize;
                    (start, ws.events(n).await)
                }
                1 => {
                    let mut sse = Sse::connect(&app, &format!("/v1/sse?{q}"), None).await;
                    let ready: Value = serde_json::from_str(&sse.next().await.data).expect("ready");
                    let start = seq(ready["cursor"].as_str().expect("cursor"));
                    let n = (TOTAL - start) as usize;
                    (start, sse.events(n).await)
                }
                _ => {
                    // A poll without a cursor starts from now: take the first answer's
                    // cursor as the start, as a client does.
                    let cursor = match cursor {
                        Some(c) => c,
                        None => app.poll("topics=seam&timeout=0").await["cursor"]
                            .as_str()
                            .expect("cursor")
                            .to_owned(),
                    };
                    let start = seq(&cursor);
                    let n = (TOTAL - start) as usize;
                    (start, poll_events(&app, "seam", cursor, n).await)
                }
            };
            let seqs: Vec<u64> = got
                .iter()
                .map(|e| seq(e["id"].as_str().expect("id")))
                .collect();
            let want: Vec<u64> = (start + 1..=TOTAL).collect();
            assert_eq!(
                seqs,
                want,
                "subscriber {i} (transport {}) saw a gap or a duplicate",
                i % 3
            );
        }));
    }
    within(
        Duration::from_secs(120),
        "the publisher to finish",
        publisher,
    )
    .await
    .expect("publisher");
    for s in subscribers {
        within(
            Duration::from_secs(60),
            "a subscriber to see every event",
            s,
        )
        .await
        .expect("subscriber");
    }
}

/// Cursors that cannot be resumed: another epoch or beyond retention reset (and the
/// stream goes on from the head); a cursor ahead of the head resets; a malformed cursor
/// is a 400.
#[tokio::test]
async fn unresumable_cursors_reset_and_malformed_ones_are_refused() {
    let app = spawn_app(|c| c.retain = 10).await;
    let first = app.publish_n("r", 0..50).await;
    let epoch = app.status().await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let cases = [
        ("zzzzzz-5".to_owned(), "unknown_epoch"),
        (format!("{epoch}-5"), "cursor_expired"),
        (format!("{epoch}-39"), "cursor_expired"), // oldest retained is 41+: 40 is gone
        (format!("{epoch}-999"), "cursor_ahead"),
    ];
    assert_eq!(seq(&first[49]), 50);
    for (i, (cursor, reason)) in cases.iter().enumerate() {
        let head = app.status().await["cursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
        let mut ws = Ws::connect(&app.ws_url(&format!("/v1/ws?topics=r&cursor={cursor}"))).await;
        assert_eq!(ws.next().await["op"], "ready");
        let reset = ws.next().await;
        assert_eq!(reset["op"], "reset", "{cursor}: {reset}");
        assert_eq!(reset["reason"], *reason, "{cursor}");
        assert_eq!(
            reset["cursor"],
            head.as_str(),
            "{cursor}: continues from the head"
        );

        let mut sse = Sse::connect(&app, &format!("/v1/sse?topics=r&cursor={cursor}"), None).await;
        assert_eq!(sse.next().await.event, "ready");
        let e = sse.next().await;
        assert_eq!(e.event, "reset", "{cursor}");
        assert_eq!(
            e.id, head,
            "{cursor}: the reset's id moves Last-Event-ID to the head"
        );
        let v: Value = serde_json::from_str(&e.data).expect("json");
        assert_eq!(v["reason"], *reason);

        let v = app
            .poll(&format!("topics=r&cursor={cursor}&timeout=0"))
            .await;
        assert_eq!(v["reset"]["reason"], *reason, "{cursor}: {v}");
        assert_eq!(v["events"], json!([]));
        assert_eq!(v["cursor"], head.as_str());

        // After the reset every stream is live from the head.
        let next = app.publish_n("r", 100 + i as u64..101 + i as u64).await;
        assert_eq!(
            ids(&ws.events(1).await),
            next,
            "{cursor}: WebSocket live after reset"
        );
        assert_eq!(
            ids(&sse.events(1).await),
            next,
            "{cursor}: SSE live after reset"
        );
        let v = app
            .poll(&format!(
                "topics=r&cursor={}&timeout=0",
                v["cursor"].as_str().expect("c")
            ))
            .await;
        assert_eq!(
            ids(v["events"].as_array().expect("events")),
            next,
            "{cursor}: poll after reset"
        );
    }
    // The oldest retained event is still resumable: exactly the retained ones follow.
    let oldest = app.status().await["log"]["oldest"]
        .as_str()
        .expect("oldest")
        .to_owned();
    let before = format!("{epoch}-{}", seq(&oldest) - 1);
    let v = app
        .poll(&format!("topics=r&cursor={before}&timeout=0"))
        .await;
    assert!(v.get("reset").is_none(), "{v}");
    assert_eq!(v["events"].as_array().expect("events").len(), 10);

    for bad in ["garbage", "abc-", "-5", "a b-1", "x-1-"] {
        for path in ["/v1/ws", "/v1/sse", "/v1/poll", "/v1/stream"] {
            let (status, v) = app.get_json(&format!("{path}?topics=r&cursor={bad}")).await;
            assert_eq!(status, 400, "{path} cursor={bad}");
            assert_eq!(
                v["error"]["code"], "invalid_cursor",
                "{path} cursor={bad}: {v}"
            );
        }
        let resp = app
            .client
            .get(app.url("/v1/sse?topics=r"))
            .header("last-event-id", bad)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 400, "Last-Event-ID: {bad}");
    }
    assert!(
        app.status().await["counters"]["resets"]
            .as_u64()
            .expect("resets")
            >= 12
    );
    app.stop().await;
}

/// A WebSocket reader that stops reading: the others get everything at full speed, and
/// when it reads again it is caught up from the log or told to reset, in order, never
/// with a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_websocket_reader_does_not_hold_back_the_others() {
    const N: u64 = 6000;
    let app = spawn_app(|c| c.retain = 1000).await;
    let mut slow = Ws::connect(&app.ws_url("/v1/ws?topics=big")).await;
    assert_eq!(slow.next().await["op"], "ready");
    let mut fast_ws = Ws::connect(&app.ws_url("/v1/ws?topics=big")).await;
    assert_eq!(fast_ws.next().await["op"], "ready");
    let mut fast_sse = Sse::connect(&app, "/v1/sse?topics=big", None).await;
    assert_eq!(fast_sse.next().await.event, "ready");

    let pad = "x".repeat(4000);
    // The fast readers say how far they are, and the publisher keeps at most LEAD events
    // ahead of the slower of them: on a loaded machine a reader that merely reads slower
    // than the publisher publishes would fall out of retention too, and this test is
    // about the one that does not read at all.
    const LEAD: u64 = 600;
    let (ws_at, mut ws_seen) = tokio::sync::watch::channel(0u64);
    let (sse_at, mut sse_seen) = tokio::sync::watch::channel(0u64);
    let fast_ws_task = tokio::spawn(async move {
        let mut out = Vec::new();
        while out.len() < N as usize {
            out.extend(ns(&fast_ws.events(200).await));
            ws_at.send_replace(out.len() as u64);
        }
        out
    });
    let fast_sse_task = tokio::spawn(async move {
        let mut out = Vec::new();
        while out.len() < N as usize {
            out.extend(ns(&fast_sse.events(200).await));
            sse_at.send_replace(out.len() as u64);
        }
        out
    });
    for chunk in 0..N / 200 {
        let next = chunk * 200;
        for (seen, who) in [(&mut ws_seen, "WebSocket"), (&mut sse_seen, "SSE")] {
            let what = format!("the fast {who} reader to be within {LEAD} events of {next}");
            within(
                Duration::from_secs(60),
                &what,
                seen.wait_for(|&n| n + LEAD >= next),
            )
            .await
            .expect("the reader's task is alive");
        }
        let events: Vec<Value> = (chunk * 200..chunk * 200 + 200)
            .map(|n| json!({"topic": "big", "type": "x", "data": {"n": n, "pad": pad}}))
            .collect();
        app.publish(Value::Array(events)).await;
    }
    let want: Vec<u64> = (0..N).collect();
    assert_eq!(
        within(
            Duration::from_secs(60),
            "fast WebSocket to get all events",
            fast_ws_task
        )
        .await
        .expect("task"),
        want
    );
    assert_eq!(
        within(
            Duration::from_secs(60),
            "fast SSE to get all events",
            fast_sse_task
        )
        .await
        .expect("task"),
        want
    );

    // 24 MB went out while the slow reader read nothing: far more than its socket holds
    // and than retention (1000 events). Now it reads: what its socket held, in order,
    // then a reset (it fell out of retention), then live events again.
    let mut seen = Vec::new();
    let reset = loop {
        let v = within(
            Duration::from_secs(60),
            "the slow reader to be told to reset",
            slow.next(),
        )
        .await;
        match v["op"].as_str() {
            Some("event") => {
                let s = seq(v["id"].as_str().expect("id"));
                if let Some(prev) = seen.last() {
                    assert_eq!(s, prev + 1, "a gap without a reset before {s}");
                }
                seen.push(s);
            }
            Some("reset") => {
                assert_eq!(v["reason"], "cursor_expired", "{v}");
                break seq(v["cursor"].as_str().expect("cursor"));
            }
            other => panic!("unexpected frame {other:?}: {v}"),
        }
    };
    assert!(
        seen.len() < N as usize,
        "the reader cannot have received everything"
    );
    let live = app.publish_n("big", N..N + 3).await;
    assert_eq!(
        seq(&live[0]),
        reset + 1,
        "the reset continues from the head"
    );
    assert_eq!(
        ids(&slow.events(3).await),
        live,
        "live again after the reset"
    );
    let status = app.status().await;
    assert!(
        status["counters"]["lagged"].as_u64().expect("lagged") >= 1,
        "{status}"
    );
    app.stop().await;
}

/// An SSE reader that stops reading: once the server's write to it has been blocked for
/// the send time-out (30 s, as for WebSocket), the server drops the stream and closes the
/// connection; the reader resumes from its cursor when it comes back. Until then it is
/// still counted open, and nothing is queued for it beyond the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sse_reader_is_dropped_after_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: u64 = 4000;
    let app = spawn_app(|c| c.retain = 1000).await;
    let open = |status: Value| status["transports"]["sse"]["open"].as_u64();
    // A small receive window, and a reader that stops after `ready`.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(app.addr).await.expect("connect");
    stalled
        .write_all(
            b"GET /v1/sse?topics=stall HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .expect("request");
    let mut head = Vec::new();
    within(WAIT, "the stalled reader's ready event", async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&head).contains("event: ready") {
            let n = stalled.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before ready: {}",
                String::from_utf8_lossy(&head)
            );
            head.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert_eq!(open(app.status().await), Some(1));

    // 16 MB of events: far more than the socket buffers hold, so the server's write
    // blocks; the reader reads nothing.
    let pad = "x".repeat(4000);
    let started = std::time::Instant::now();
    for chunk in 0..N / 200 {
        let events: Vec<Value> = (chunk * 200..chunk * 200 + 200)
            .map(|n| json!({"topic": "stall", "type": "x", "data": {"n": n, "pad": pad}}))
            .collect();
        app.publish(Value::Array(events)).await;
    }
    let published = std::time::Instant::now();
    assert_eq!(
        open(app.status().await),
        Some(1),
        "a blocked reader is kept until the send time-out, not dropped at once"
    );
    wait_until(
        Duration::from_secs(60),
        "the server to drop the SSE stream whose write was blocked for 30 s",
        || async { (open(app.status().await) == Some(0)).then_some(()) },
    )
    .await;
    eprintln!(
        "stalled SSE reader dropped {:?} after the last publish, {:?} after the first",
        published.elapsed(),
        started.elapsed()
    );
    // Its write cannot have blocked before the first publish.
    assert!(
        started.elapsed() >= switchyard::transport::ws::SEND_TIMEOUT,
        "dropped {:?} after the first publish, before the send time-out",
        started.elapsed()
    );
    // The connection is closed too: reading what the socket held ends in EOF (or a reset).
    within(
        Duration::from_secs(30),
        "the dropped connection to end",
        async {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stalled.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        },
    )
    .await;
    // Everyone else is still served.
    let mut sse = Sse::connect(&app, "/v1/sse?topics=stall", None).await;
    assert_eq!(sse.next().await.event, "ready");
    app.stop().await;
}

/// Streams with nothing of their own to send are parked in the direct fan-out, which
/// writes each event straight to their sockets. A reader that stops reading fills its
/// socket: the fan-out hands its stream back to the stream's own task, often in the
/// middle of a frame, and the task writes the rest and catches up from the log. Every
/// stream gets exactly the events of its topics, in order, each frame whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_streams_get_their_topics_whole_through_a_stalled_reader() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(|_| {}).await;

    // Readers that keep up, each on its own task, on three topic sets (nobody takes fc).
    let mut readers = Vec::new();
    for topics in ["fa", "fb", "fa,fb"].into_iter().cycle().take(6) {
        let mut sse = Sse::connect(&app, &format!("/v1/sse?topics={topics}"), None).await;
        assert_eq!(sse.next().await.event, "ready");
        let want = fan_expected(topics);
        readers.push(tokio::spawn(async move {
            let got = ns(&sse.events(want.len()).await);
            assert_eq!(got, want, "a reader of {topics} that keeps up");
        }));
    }
    // One that stops after `ready`.
    let mut stalled = small_window(&app).await;
    stalled
        .write_all(b"GET /v1/sse?topics=fa,fb HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut text = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    within(WAIT, "the stalled reader's ready event", async {
        while !String::from_utf8_lossy(&text).contains("event: ready") {
            let n = stalled.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before ready");
            text.extend_from_slice(&buf[..n]);
        }
    })
    .await;

    fan_publish(&app).await;
    for reader in readers {
        within(WAIT, "the readers that keep up", reader)
            .await
            .expect("reader task");
    }
    let handbacks = handbacks(&app).await;

    // Now it reads everything: whole frames, its topics, in order, nothing twice.
    let want = fan_expected("fa,fb");
    let mut got = Vec::new();
    within(WAIT, "the stalled reader to catch up", async {
        while got.len() < want.len() {
            let n = stalled.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {} events", got.len());
            text.extend_from_slice(&buf[..n]);
            // Complete blocks only; the rest waits for the next read.
            let body = String::from_utf8(text.clone()).expect("UTF-8 stream");
            let Some(end) = body.rfind("\n\n") else {
                continue;
            };
            got.clear();
            for block in body[..end]
                .split("\n\n")
                .filter(|b| b.contains("\ndata: {\"id\""))
            {
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("data line");
                let v: Value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("a frame cut or spliced ({e}): {block:.200}"));
                let id = block.lines().find_map(|l| l.strip_prefix("id: "));
                assert_eq!(v["id"].as_str(), id, "SSE id matches the envelope");
                got.push(v["data"]["n"].as_u64().expect("data.n"));
            }
        }
    })
    .await;
    assert_eq!(got, want, "the stalled reader's events");
    eprintln!("{handbacks} hand-backs to the stream's task");
    app.stop().await;
}

/// The same over WebSocket, where the session keeps reading while the fan-out writes:
/// readers that ping (the `ping` op and protocol pings) as events stream in get every
/// pong and every event of their topics in order; one that stops reading, then pings,
/// gets whole frames, its pong and its events in order; and a parked session that
/// subscribes and unsubscribes gets exactly its new topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_websockets_answer_while_the_fan_out_writes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    const PING_EVERY: usize = 100;
    let app = spawn_app(|_| {}).await;

    let mut readers = Vec::new();
    for topics in ["fa", "fb", "fa,fb"].into_iter().cycle().take(6) {
        let mut ws = Ws::connect(&app.ws_url(&format!("/v1/ws?topics={topics}"))).await;
        assert_eq!(ws.next().await["op"], "ready");
        let want = fan_expected(topics);
        readers.push(tokio::spawn(async move {
            let (mut got, mut pings, mut pongs, mut protocol_pongs) = (Vec::new(), 0, 0, 0);
            while got.len() < want.len() || pongs < pings || protocol_pongs < pings {
                match ws.next_message().await {
                    Message::Text(t) => {
                        let v: Value = serde_json::from_str(&t).expect("frame is JSON");
                        match v["op"].as_str() {
                            Some("event") => {
                                got.push(v["data"]["n"].as_u64().expect("data.n"));
                                if got.len() % PING_EVERY == 0 {
                                    ws.send_text(r#"{"op":"ping"}"#).await;
                                    ws.stream
                                        .send(Message::Ping(b"p".to_vec().into()))
                                        .await
                                        .expect("ping");
                                    pings += 1;
                                }
                            }
                            Some("pong") => pongs += 1,
                            Some("heartbeat") => {}
                            _ => panic!("unexpected frame {v}"),
                        }
                    }
                    Message::Pong(p) => {
                        assert_eq!(&p[..], b"p");
                        protocol_pongs += 1;
                    }
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            assert_eq!(got, want, "a reader of {topics} that pings");
            assert_eq!(
                (pongs, protocol_pongs),
                (pings, pings),
                "{topics}: a pong per ping"
            );
            pings
        }));
    }
    // One that stops after `ready`.
    let tcp = small_window(&app).await;
    let (mut stalled, _) = tokio_tungstenite::client_async(app.ws_url("/v1/ws?topics=fa,fb"), tcp)
        .await
        .expect("WebSocket handshake");
    let ready = within(WAIT, "the stalled reader's ready", stalled.next()).await;
    assert!(
        matches!(&ready, Some(Ok(Message::Text(t))) if t.contains(r#""op":"ready""#)),
        "{ready:?}"
    );

    fan_publish(&app).await;
    let mut pings = 0;
    for reader in readers {
        pings += within(WAIT, "the readers that ping", reader)
            .await
            .expect("reader task");
    }
    assert!(pings >= 6 * 6, "{pings} pings");
    let handbacks = handbacks(&app).await;

    // The stalled reader pings with its socket full, then reads everything.
    stalled
        .send(Message::Ping(b"late".to_vec().into()))
        .await
        .expect("ping");
    let (want, mut got, mut pong) = (fan_expected("fa,fb"), Vec::new(), false);
    within(WAIT, "the stalled reader to catch up", async {
        while got.len() < want.len() || !pong {
            match stalled.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("frame is JSON");
                    match v["op"].as_str() {
                        Some("event") => got.push(v["data"]["n"].as_u64().expect("data.n")),
                        Some("heartbeat") => {}
                        _ => panic!("unexpected frame {v}"),
                    }
                }
                Some(Ok(Message::Pong(p))) => {
                    assert_eq!(&p[..], b"late");
                    pong = true;
                }
                other => panic!("after {} events: {other:?}", got.len()),
            }
        }
    })
    .await;
    assert_eq!(got, want, "the stalled reader's events");

    // A parked session changes its topics: the fan-out follows.
    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=fa")).await;
    assert_eq!(ws.next().await["op"], "ready");
    let first = app.publish_n("fa", 0..1).await;
    assert_eq!(ids(&ws.events(1).await), first);
    ws.send_text(r#"{"op":"subscribe","topics":["fc"]}"#).await;
    let subscribed = ws.next().await;
    assert_eq!(subscribed["topics"], json!(["fa", "fc"]), "{subscribed}");
    let both = app
        .publish(json!([
            {"topic": "fc", "type": "x", "data": {}},
            {"topic": "fb", "type": "x", "data": {}},
            {"topic": "fa", "type": "x", "data": {}},
        ]))
        .await;
    assert_eq!(ids(&ws.events(2).await), [both[0].clone(), both[2].clone()]);
    ws.send_text(r#"{"op":"unsubscribe","topics":["fa"]}"#)
        .await;
    assert_eq!(ws.next().await["topics"], json!(["fc"]));
    let after = app
        .publish(json!([
            {"topic": "fa", "type": "x", "data": {}},
            {"topic": "fc", "type": "x", "data": {}},
        ]))
        .await;
    assert_eq!(ids(&ws.events(1).await), [after[1].clone()]);
    eprintln!("{handbacks} hand-backs, {pings} pings answered");
    app.stop().await;
}

/// A parked WebSocket session unparks for every client frame and parks again; when the
/// client then closes on a quiet hub, the server lets go of the socket at once (the
/// TCP connection ends) rather than at the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_websocket_that_pings_then_closes_is_let_go() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app(|_| {}).await;
    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=quiet")).await;
    assert_eq!(ws.next().await["op"], "ready");
    for _ in 0..5 {
        ws.send_text(r#"{"op":"ping"}"#).await;
        assert_eq!(ws.next().await["op"], "pong");
    }
    ws.stream.send(Message::Close(None)).await.expect("close");
    within(WAIT, "the server to end the TCP connection", async {
        while let Some(Ok(msg)) = ws.stream.next().await {
            assert!(matches!(msg, Message::Close(_)), "after close: {msg:?}");
        }
    })
    .await;
    app.stop().await;
}

/// The fan-out tests' events: `FAN_EVENTS` of 2 kB, event `n` on `FAN_TOPICS[n % 3]`.
const FAN_EVENTS: u64 = 2000;
const FAN_TOPICS: [&str; 3] = ["fa", "fb", "fc"];

/// The `n`s a reader of `topics` (comma-separated) gets, in order.
fn fan_expected(topics: &str) -> Vec<u64> {
    (0..FAN_EVENTS)
        .filter(|&n| topics.split(',').any(|t| t == FAN_TOPICS[(n % 3) as usize]))
        .collect()
}

/// Publishes the fan-out events, 100 per request: far more than a stalled reader's
/// socket holds.
async fn fan_publish(app: &TestApp) {
    let pad = "x".repeat(2000);
    for chunk in 0..FAN_EVENTS / 100 {
        let events: Vec<Value> = (chunk * 100..chunk * 100 + 100)
            .map(|n| {
                let topic = FAN_TOPICS[(n % 3) as usize];
                json!({"topic": topic, "type": "x", "data": {"n": n, "pad": pad}})
            })
            .collect();
        app.publish(Value::Array(events)).await;
    }
}

/// A connection to the app with a 4 KiB receive window, for a reader that stalls.
async fn small_window(app: &TestApp) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(app.addr).await.expect("connect")
}

/// `switchyard_fanout_handbacks_total`, asserted > 0: a stalled reader's full socket
/// was handed back to its stream's task.
async fn handbacks(app: &TestApp) -> u64 {
    let metrics = app.text("/metrics").await;
    let handbacks: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_fanout_handbacks_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("switchyard_fanout_handbacks_total in /metrics");
    assert!(
        handbacks > 0,
        "the stalled reader's full socket was handed back to its task"
    );
    handbacks
}
