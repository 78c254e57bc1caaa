//! One event source, three transports: identical delivery, resume across transports,
//! content negotiation and heartbeats.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// The same 200 events reach a WebSocket, an SSE and a long-poll subscriber with the
/// same ids, order and envelope bytes.
#[tokio::test]
async fn the_same_events_reach_every_transport_identically() {
    let app = spawn_app(|_| {}).await;
    let start = app.status().await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();

    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=projects/42")).await;
    let ready = ws.next().await;
    assert_eq!(ready["op"], "ready");
    assert_eq!(ready["transport"], "websocket");
    assert_eq!(ready["cursor"], start.as_str());

    let mut sse = Sse::connect(&app, "/v1/sse?topics=projects/42", None).await;
    let ready = sse.next().await;
    assert_eq!(ready.event, "ready");
    let ready: Value = serde_json::from_str(&ready.data).expect("ready JSON");
    assert_eq!(ready["transport"], "sse");
    assert_eq!(ready["cursor"], start.as_str());

    // Interleave another topic that nobody here subscribes to.
    let mut published = Vec::new();
    for chunk in 0..4u64 {
        published.extend(
            app.publish_n("projects/42", chunk * 50..chunk * 50 + 50)
                .await,
        );
        app.publish_n("projects/7", 0..3).await;
    }
    assert_eq!(published.len(), 200);

    let over_ws = ws.events(200).await;
    let over_sse = sse.events(200).await;
    let over_poll = poll_events(&app, "projects/42", start.clone(), 200).await;

    assert_eq!(ids(&over_ws), published, "WebSocket ids and order");
    assert_eq!(ids(&over_sse), published, "SSE ids and order");
    assert_eq!(ids(&over_poll), published, "long-poll ids and order");
    assert_eq!(ns(&over_ws), (0..200).collect::<Vec<_>>());
    for ((w, s), p) in over_ws.iter().zip(&over_sse).zip(&over_poll) {
        let mut w = w.clone();
        w.as_object_mut().expect("object").remove("op");
        assert_eq!(&w, s, "WebSocket and SSE envelopes differ");
        assert_eq!(s, p, "SSE and long-poll envelopes differ");
        assert_eq!(
            s.as_object().expect("object").keys().collect::<Vec<_>>(),
            ["data", "id", "topic", "ts", "type"]
        );
        assert_eq!(s["topic"], "projects/42");
        assert_eq!(s["type"], "test.n");
    }
    // Byte-identical: the poll answer splices the very bytes SSE sends.
    let raw = app
        .client
        .get(app.url(&format!(
            "/v1/poll?topics=projects/42&cursor={start}&timeout=0"
        )))
        .send()
        .await
        .expect("poll")
        .text()
        .await
        .expect("poll body");
    let expected_body = format!("{{\"events\":[{}],", sse.raw.join(","));
    assert!(
        raw.starts_with(&expected_body),
        "poll body starts with the SSE envelope bytes: {}",
        &raw[..200.min(raw.len())]
    );
    app.stop().await;
}

/// A cursor taken from any transport resumes on every other exactly after it.
#[tokio::test]
async fn a_cursor_from_any_transport_resumes_on_every_other() {
    let app = spawn_app(|_| {}).await;
    let ids_all = app.publish_n("t", 0..30).await;

    // Cursors handed out by each transport: an event id over WS, an SSE id, a poll cursor.
    let start = format!("{}-0", app.status().await["epoch"].as_str().expect("epoch"));
    let mut ws = Ws::connect(&app.ws_url(&format!("/v1/ws?topics=t&cursor={start}"))).await;
    assert_eq!(ws.next().await["op"], "ready");
    let ws_cursor = ws.events(10).await[9]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut sse = Sse::connect(&app, &format!("/v1/sse?topics=t&cursor={start}"), None).await;
    assert_eq!(sse.next().await.event, "ready");
    let sse_cursor = sse.events(15).await[14]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let polled = app
        .poll(&format!("topics=t&cursor={start}&timeout=0"))
        .await;
    assert_eq!(polled["events"].as_array().expect("events").len(), 30);
    let poll_cursor = polled["cursor"].as_str().expect("cursor").to_owned();
    assert_eq!(poll_cursor, ids_all[29]);

    app.publish_n("t", 30..35).await;
    for (from, cursor) in [
        ("ws", &ws_cursor),
        ("sse", &sse_cursor),
        ("poll", &poll_cursor),
    ] {
        let after = seq(cursor);
        let expected: Vec<u64> = (after..35).collect();
        let n = expected.len();

        let mut ws = Ws::connect(&app.ws_url(&format!("/v1/ws?topics=t&cursor={cursor}"))).await;
        let ready = ws.next().await;
        assert_eq!(
            ready["cursor"],
            cursor.as_str(),
            "ready says where it starts"
        );
        assert_eq!(
            ns(&ws.events(n).await),
            expected,
            "{from} cursor on WebSocket"
        );

        let mut sse = Sse::connect(&app, &format!("/v1/sse?topics=t&cursor={cursor}"), None).await;
        assert_eq!(sse.next().await.event, "ready");
        assert_eq!(
            ns(&sse.events(n).await),
            expected,
            "{from} cursor on SSE ?cursor="
        );

        // Last-Event-ID wins over a stale cursor left in the URL (EventSource reconnect).
        let mut sse = Sse::connect(
            &app,
            &format!("/v1/sse?topics=t&cursor={start}"),
            Some(cursor),
        )
        .await;
        assert_eq!(sse.next().await.event, "ready");
        assert_eq!(
            ns(&sse.events(n).await),
            expected,
            "{from} cursor via Last-Event-ID"
        );

        let polled = poll_events(&app, "t", cursor.clone(), n).await;
        assert_eq!(ns(&polled), expected, "{from} cursor on long-poll");
    }
    app.stop().await;
}

/// One cursor resumes a subscription to several topics, interleaved in cursor order.
#[tokio::test]
async fn one_cursor_resumes_many_topics() {
    let app = spawn_app(|_| {}).await;
    let mut expected = Vec::new();
    for i in 0..10u64 {
        let topic = ["projects/1", "alerts/u-7", "other"][(i % 3) as usize];
        let id = app
            .publish(json!({"topic": topic, "type": "x", "data": {"n": i}}))
            .await;
        if topic != "other" {
            expected.push((id[0].clone(), topic));
        }
    }
    // Resume after the 2nd matching event.
    let cursor = expected[1].0.clone();
    let want: Vec<(String, &str)> = expected[2..].to_vec();

    let polled = app
        .poll(&format!(
            "topics=projects/1,alerts/u-7&cursor={cursor}&timeout=0"
        ))
        .await;
    let got: Vec<(String, &str)> = polled["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let topic = if e["topic"] == "projects/1" {
                "projects/1"
            } else {
                "alerts/u-7"
            };
            (e["id"].as_str().expect("id").to_owned(), topic)
        })
        .collect();
    assert_eq!(got, want);

    let mut ws = Ws::connect(&app.ws_url(&format!(
        "/v1/stream?topics=alerts/u-7,projects/1&cursor={cursor}"
    )))
    .await;
    assert_eq!(ws.next().await["op"], "ready");
    let got = ws.events(want.len()).await;
    assert_eq!(
        ids(&got),
        want.iter().map(|w| w.0.clone()).collect::<Vec<_>>()
    );
    app.stop().await;
}

/// `/v1/stream` picks WebSocket for an upgrade, SSE for `Accept: text/event-stream`,
/// long-poll JSON for anything else (plain curl sends `*/*`).
#[tokio::test]
async fn stream_endpoint_negotiates_by_upgrade_and_accept() {
    let app = spawn_app(|_| {}).await;
    let mut ws = Ws::connect(&app.ws_url("/v1/stream?topics=a")).await;
    assert_eq!(ws.next().await["transport"], "websocket");

    let mut sse = Sse::connect(&app, "/v1/stream?topics=a", None).await;
    let ready: Value = serde_json::from_str(&sse.next().await.data).expect("json");
    assert_eq!(ready["transport"], "sse");

    for accept in ["*/*", "application/json", "text/event-stream;q=0"] {
        let resp = app
            .client
            .get(app.url("/v1/stream?topics=a&timeout=0"))
            .header("accept", accept)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "Accept: {accept}"
        );
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["events"], json!([]), "Accept: {accept}");
    }
    let status = app.status().await;
    assert_eq!(status["transports"]["websocket"]["total"], 1);
    assert_eq!(status["transports"]["sse"]["total"], 1);
    assert_eq!(status["transports"]["longpoll"]["total"], 3);
    app.stop().await;
}

/// SSE response headers and the stream's first bytes: retry, padding, ready.
#[tokio::test]
async fn sse_headers_padding_and_first_bytes() {
    let app = spawn_app(|c| c.sse_padding = 2048).await;
    let resp = app.get("/v1/sse?topics=a").await;
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-encoding").is_none());
    let mut body = resp.bytes_stream();
    let first = within(WAIT, "the first SSE bytes", body.next())
        .await
        .expect("a chunk")
        .expect("bytes");
    let text = std::str::from_utf8(&first).expect("utf8");
    assert!(text.starts_with("retry: 2000\n:"), "{:?}", &text[..20]);
    let padding_line = text.lines().nth(1).expect("padding line");
    assert_eq!(
        padding_line.len() + 1,
        2048,
        "padding is 2048 bytes with its newline"
    );
    assert!(
        text.contains("\nevent: ready\nid: "),
        "ready follows the padding"
    );
    app.stop().await;
}

/// A raw HTTP/1 connection that has sent `head`.
async fn raw_request(app: &TestApp, head: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    conn.write_all(head.as_bytes()).await.expect("send head");
    conn
}

/// Reads from `conn` into `got` until `done` holds for what came back.
async fn read_until(
    conn: &mut tokio::net::TcpStream,
    got: &mut Vec<u8>,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncReadExt;
    within(WAIT, what, async {
        while !done(&String::from_utf8_lossy(got)) {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "connection closed while waiting for {what}: {:?}",
                String::from_utf8_lossy(got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
}

/// SSE is written on the socket itself (serve.rs): the stream is delimited by closing
/// the connection, its bytes equal those of the same stream served by hyper (which an
/// HTTP/1.0 request still gets), a client that goes away is noticed at once, and an error
/// on that path is a whole response.
#[tokio::test]
async fn event_streams_are_written_on_the_socket() {
    let app = spawn_app(|_| {}).await;
    let start = app.status().await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let path = format!("/v1/sse?topics=t&cursor={start}");
    let mut direct = raw_request(
        &app,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
    .await;
    let mut hyper = raw_request(
        &app,
        &format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n"),
    )
    .await;
    let ids = app.publish_n("t", 0..3).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let last = format!("id: {}\n", ids[2]);
    let has_all = |s: &str| s.contains(&last) && s.ends_with("\n\n");
    read_until(
        &mut direct,
        &mut a,
        "three events on the direct path",
        has_all,
    )
    .await;
    read_until(&mut hyper, &mut b, "three events served by hyper", has_all).await;

    let split = |got: &[u8]| {
        let text = String::from_utf8(got.to_vec()).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        (head.to_ascii_lowercase(), body.to_owned())
    };
    let (head_a, body_a) = split(&a);
    let (head_b, body_b) = split(&b);
    assert!(head_a.starts_with("http/1.1 200 ok\r\n"), "{head_a}");
    assert!(
        head_a.contains("\r\ncontent-type: text/event-stream"),
        "{head_a}"
    );
    assert!(head_a.contains("\r\nconnection: close"), "{head_a}");
    assert!(head_a.contains("\r\ndate: "), "{head_a}");
    assert!(!head_a.contains("transfer-encoding"), "{head_a}");
    assert!(
        head_b.contains("content-type: text/event-stream"),
        "{head_b}"
    );
    assert!(body_a.contains("\nevent: ready\n"), "{body_a}");
    assert_eq!(
        body_a, body_b,
        "the direct path and hyper send different streams"
    );

    assert_eq!(app.status().await["transports"]["sse"]["open"], 2);
    drop(direct);
    wait_until(
        WAIT,
        "the server to notice the direct client left",
        || async { (app.status().await["transports"]["sse"]["open"] == 1).then_some(()) },
    )
    .await;
    drop(hyper);

    let mut bad = raw_request(
        &app,
        "GET /v1/sse?topics= HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let mut got = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        within(
            WAIT,
            "the whole error answer, then the close",
            bad.read_to_end(&mut got),
        )
        .await
        .expect("read");
    }
    let (head, body) = split(&got);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let error: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(error["error"]["code"], "invalid_topic");
    app.stop().await;
}

fn intervals(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn assert_near(intervals: &[Duration], want: Duration, what: &str) {
    for d in intervals {
        // Never early; late only by scheduling noise on a loaded 2-core machine.
        assert!(
            *d >= want.mul_f64(0.9) && *d <= want * 3,
            "{what}: heartbeat interval {d:?} not near {want:?} (all: {intervals:?})"
        );
    }
}

/// Heartbeats arrive at the configured interval on every transport.
#[tokio::test]
async fn heartbeats_arrive_at_the_configured_interval() {
    let hb = Duration::from_millis(300);
    let app = spawn_app(|c| {
        c.heartbeat = switchyard::config::HumanDuration(hb);
        c.poll_timeout = switchyard::config::HumanDuration(Duration::from_secs(1));
    })
    .await;

    let mut ws = Ws::connect(&app.ws_url("/v1/ws?topics=a")).await;
    assert_eq!(ws.next().await["heartbeat_ms"], 300);
    let mut times = Vec::new();
    while times.len() < 4 {
        let v = ws.next_frame(true).await;
        assert_eq!(
            v["op"], "heartbeat",
            "only heartbeats on an idle stream: {v}"
        );
        times.push(Instant::now());
    }
    assert_near(&intervals(&times), hb, "WebSocket");

    let resp = app.get("/v1/sse?topics=a").await;
    let mut body = resp.bytes_stream();
    let mut times = Vec::new();
    let mut buf = String::new();
    while times.len() < 4 {
        let chunk = within(WAIT, "an SSE chunk", body.next())
            .await
            .expect("chunk")
            .expect("bytes");
        buf.push_str(std::str::from_utf8(&chunk).expect("utf8"));
        const FRAME: &str = ": heartbeat\nevent: heartbeat\ndata: {}\n\n";
        while let Some(i) = buf.find(FRAME) {
            times.push(Instant::now());
            buf.drain(..i + FRAME.len());
        }
    }
    assert_near(&intervals(&times), hb, "SSE");

    // Long-poll's heartbeat is the empty answer at the end of the wait.
    let t = Instant::now();
    let v = app.poll("topics=a").await;
    assert_eq!(v["events"], json!([]));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "long-poll waited {waited:?} instead of the configured 1 s"
    );
    // ?timeout= is capped at SWITCHYARD_POLL_TIMEOUT.
    let t = Instant::now();
    app.poll("topics=a&timeout=60").await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "timeout=60 was not capped at 1 s"
    );
    app.stop().await;
}

/// A long-poll answers at most `SWITCHYARD_POLL_BATCH` events; its cursor is the last one
/// it answered, so the next poll continues exactly there.
#[tokio::test]
async fn long_poll_batches_and_continues_where_the_batch_ended() {
    let app = spawn_app(|c| c.poll_batch = 10).await;
    let epoch = app.status().await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    // Interleave a topic the poller does not want, so cursors are not contiguous.
    let mut want = Vec::new();
    for i in 0..25 {
        want.extend(app.publish_n("p", i..i + 1).await);
        app.publish_n("noise", 0..2).await;
    }
    let mut cursor = format!("{epoch}-0");
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    for _ in 0..6 {
        if got.len() >= 25 {
            break;
        }
        let v = app
            .poll(&format!("topics=p&cursor={cursor}&timeout=0"))
            .await;
        let events = v["events"].as_array().expect("events");
        sizes.push(events.len());
        got.extend(ids(events));
        cursor = v["cursor"].as_str().expect("cursor").to_owned();
        if events.len() == 10 {
            // At or past the last event answered, before the next one wanted.
            let c = seq(&cursor);
            assert!(
                c >= seq(&got[got.len() - 1]) && c < seq(&want[got.len()]),
                "{cursor}"
            );
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(got, want);
    // After the last event the cursor moves past the noise too: nothing is re-scanned.
    assert_eq!(cursor, app.status().await["cursor"].as_str().expect("head"));
    app.stop().await;
}

/// The demo page and the client are served from `static/`; every response carries a
/// request id.
#[tokio::test]
async fn static_files_demo_switch_and_request_ids() {
    let app = spawn_app(|_| {}).await;
    let resp = app.get("/").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(resp.text().await.expect("html").contains("<html"));
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    app.stop().await;

    let app = spawn_app(|c| c.demo = Some(false)).await;
    let resp = app.get("/").await;
    assert_eq!(resp.status(), 404);
    assert!(
        resp.text()
            .await
            .expect("text")
            .contains("SWITCHYARD_DEMO=off")
    );
    app.stop().await;
}
