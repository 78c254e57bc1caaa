//! The browser client (`static/switchyard.js`) in headless Chromium, against the real
//! server, directly and behind real nginx proxies that break things the way production
//! proxies do. The page is `static/client-test.html`, which records what the client
//! reports in `window.sy`.
//!
//! Fall-back times are printed (`--nocapture`) as `MEASURED <scenario>: <ms>`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::browser::{Browser, Nginx, SERIAL, StallProxy, page_ids, wait_mode};
use common::*;
use serde_json::{Value, json};
use switchyard::config::{HumanDuration, Transports};
use switchyard::transport::Transport;

/// Publishes `n` events and waits until the page has them, in order.
async fn publish_and_see(app: &TestApp, b: &Browser, topic: &str, n: u64) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"topic": topic, "type": "t", "data": {"i": i}}))
        .collect();
    let ids = app.publish(Value::Array(events)).await;
    let last = ids.last().expect("one id").clone();
    b.wait_for(
        &format!("window.sy.ids().includes('{last}')"),
        Duration::from_secs(10),
        "the published events to reach the page",
    )
    .await;
    let seen = page_ids(b).await;
    let tail: Vec<String> = seen[seen.len() - ids.len()..].to_vec();
    assert_eq!(tail, ids, "events in order, none missing or doubled");
    ids
}

fn status_counter(status: &Value, path: &[&str]) -> u64 {
    let mut v = status;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_over_sse_when_websocket_is_off_and_off_when_everything_is() {
    let _serial = SERIAL.lock().await;
    let app =
        spawn_app(|c| c.transports = Transports(vec![Transport::Sse, Transport::LongPoll])).await;
    let b = Browser::start().await;
    b.open_tab(&app.url("/client-test.html?topics=a&forget=1"))
        .await;
    let ms = wait_mode(&b, "degraded", "sse", Duration::from_secs(10)).await;
    eprintln!("MEASURED websocket-off → degraded/sse: {ms} ms");
    publish_and_see(&app, &b, "a", 5).await;
    // It stays live: nothing falls back further, and later events still arrive.
    publish_and_see(&app, &b, "a", 3).await;
    assert_eq!(b.eval("window.sy.conn.transport").await, "sse");
    app.stop().await;

    let app = spawn_app(|c| c.transports = Transports(vec![])).await;
    b.open_tab(&app.url("/client-test.html?topics=a&forget=1"))
        .await;
    b.wait_for(
        "window.sy && window.sy.conn && window.sy.conn.mode === 'off'",
        Duration::from_secs(10),
        "the client to report mode off",
    )
    .await;
    b.quit().await;
    app.stop().await;
}

/// Opens the client page behind nginx configured with `conf` and waits until the client
/// has fallen back to `transport` within `limit`. Returns the milliseconds it took (the
/// page's clock), with everything still running.
async fn fall_back_behind_nginx(
    conf: &str,
    transport: &str,
    limit: Duration,
) -> (TestApp, Nginx, Browser, u64) {
    let app = spawn_app(|_| {}).await;
    let nginx = Nginx::start(conf, &app.addr.to_string()).await;
    let b = Browser::start().await;
    b.open_tab(&format!(
        "{}/client-test.html?topics=a&forget=1",
        nginx.base()
    ))
    .await;
    let ms = wait_mode(&b, "degraded", transport, limit).await;
    publish_and_see(&app, &b, "a", 10).await;
    (app, nginx, b, ms)
}

/// Waits until the server has counted a client's fallback report for `reason`.
async fn wait_reported(app: &TestApp, reason: &str) -> Value {
    wait_until(
        Duration::from_secs(5),
        "the fallback report to be counted",
        || async {
            let s = app.status().await;
            (status_counter(&s, &["counters", "fallbacks", reason]) >= 1).then_some(s)
        },
    )
    .await
}

/// Behind an nginx that does not forward `Upgrade`, the client falls back to SSE within
/// 5 s, reports why, and events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_that_strips_upgrade_the_client_falls_back_to_sse() {
    let _serial = SERIAL.lock().await;
    let (app, _nginx, b, ms) = fall_back_behind_nginx(
        include_str!("fixtures/nginx-no-upgrade.conf"),
        "sse",
        Duration::from_secs(5),
    )
    .await;
    eprintln!("MEASURED upgrade stripped → sse: {ms} ms");
    let s = wait_reported(&app, "upgrade_failed").await;
    assert!(
        status_counter(&s, &["counters", "upgrade_stripped"]) >= 1,
        "{s}"
    );
    b.quit().await;
    app.stop().await;
}

/// Behind an nginx that buffers event streams (and ignores `X-Accel-Buffering`) and
/// strips `Upgrade`, the client sees a stream that never says `ready` and ends on
/// long-poll within 10 s; events flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_buffering_proxy_the_client_ends_on_long_poll() {
    let _serial = SERIAL.lock().await;
    let (app, _nginx, b, ms) = fall_back_behind_nginx(
        include_str!("fixtures/nginx-buffering.conf"),
        "longpoll",
        Duration::from_secs(10),
    )
    .await;
    eprintln!("MEASURED upgrade stripped + SSE buffered → longpoll: {ms} ms");
    wait_reported(&app, "no_ready").await;
    b.quit().await;
    app.stop().await;
}

/// Through the shipped nginx configuration everything works: WebSocket, live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_shipped_nginx_config_the_client_is_live_on_websocket() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|_| {}).await;
    let shipped = include_str!("../deploy/nginx.conf")
        .replace("listen 8080;", "listen 127.0.0.1:{{PORT}};")
        .replace("server 127.0.0.1:3000;", "server {{UPSTREAM}};");
    let nginx = Nginx::start(&shipped, &app.addr.to_string()).await;
    let b = Browser::start().await;
    b.open_tab(&format!(
        "{}/client-test.html?topics=a&forget=1",
        nginx.base()
    ))
    .await;
    let ms = wait_mode(&b, "live", "websocket", Duration::from_secs(5)).await;
    eprintln!("MEASURED shipped nginx → websocket: {ms} ms");
    publish_and_see(&app, &b, "a", 10).await;
    // SSE through it streams too (first bytes at once).
    b.open_tab(&format!(
        "{}/client-test.html?topics=a&forget=1&transports=sse",
        nginx.base()
    ))
    .await;
    wait_mode(&b, "degraded", "sse", Duration::from_secs(5)).await;
    publish_and_see(&app, &b, "a", 3).await;
    assert!(
        nginx.error_log().lines().all(|l| !l.contains("[error]")),
        "{}",
        nginx.error_log()
    );
    b.quit().await;
    app.stop().await;
}

/// A proxy that stops forwarding bytes mid-stream: the client notices the silence
/// (no heartbeat for ~2.5 intervals), reconnects from its cursor, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_noticed_and_recovered_without_loss() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|c| c.heartbeat = HumanDuration(Duration::from_millis(400))).await;
    let proxy = StallProxy::start(app.addr).await;
    let b = Browser::start().await;
    for transport in ["websocket", "sse"] {
        b.open_tab(&format!(
            "{}/client-test.html?topics=s&forget=1&transports={transport}",
            proxy.base()
        ))
        .await;
        let mode = if transport == "websocket" {
            "live"
        } else {
            "degraded"
        };
        wait_mode(&b, mode, transport, Duration::from_secs(5)).await;
        let before = publish_and_see(&app, &b, "s", 3).await;
        let streams_before = proxy.stream_requests();
        proxy.freeze_open_streams();
        // Published while the page's stream is frozen: must arrive after recovery.
        let during = app
            .publish(Value::Array(
                (0..5)
                    .map(|i| json!({"topic":"s","type":"t","data":{"i":i}}))
                    .collect(),
            ))
            .await;
        let last = during.last().expect("id");
        let (_, took) = b
            .wait_for(
                &format!("window.sy.ids().includes('{last}')"),
                Duration::from_secs(10),
                "the client to notice the stall and catch up",
            )
            .await;
        eprintln!(
            "MEASURED stall on {transport} → recovered: {} ms",
            took.as_millis()
        );
        assert!(
            proxy.stream_requests() > streams_before,
            "the client opened a new stream"
        );
        let ids = page_ids(&b).await;
        let tail: Vec<String> = ids[ids.len() - 8..].to_vec();
        let want: Vec<String> = before.iter().chain(during.iter()).cloned().collect();
        assert_eq!(
            tail, want,
            "{transport}: no event lost or doubled across the stall"
        );
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{transport}: duplicates on the page"
        );
    }
    b.quit().await;
    app.stop().await;
}

/// With a remembered WebSocket failure the page starts degraded, then probes and moves
/// up to WebSocket by itself; a publisher running across the switch loses and duplicates
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_fallback_the_client_moves_back_up_without_losing_an_event() {
    let _serial = SERIAL.lock().await;
    let app = Arc::new(spawn_app(|_| {}).await);
    let b = Browser::start().await;
    b.open_tab(&app.url(
        "/client-test.html?topics=u&forget=1&remember=websocket:1500&failMemoryMs=1500&probeIntervalMs=1000",
    ))
    .await;
    wait_mode(&b, "degraded", "sse", Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut i = 0u64;
            // One event every 25 ms: the publishing rate under test.
            let mut rate = tokio::time::interval(Duration::from_millis(25));
            while !stop.load(Ordering::SeqCst) {
                rate.tick().await;
                ids.extend(app.publish_n("u", i..i + 1).await);
                i += 1;
            }
            ids
        })
    };
    let ms = wait_mode(&b, "live", "websocket", Duration::from_secs(15)).await;
    eprintln!("MEASURED remembered failure → back up on websocket after {ms} ms");
    // Keep publishing a little after the switch, then stop.
    let switched_at = page_ids(&b).await.len();
    b.wait_for(
        &format!("window.sy.ids().length > {}", switched_at + 10),
        Duration::from_secs(10),
        "events after the switch",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let published = publisher.await.expect("publisher");
    let last = published.last().expect("published something");
    b.wait_for(
        &format!("window.sy.ids().includes('{last}')"),
        Duration::from_secs(10),
        "the last event",
    )
    .await;
    assert_eq!(
        page_ids(&b).await,
        published,
        "every event once, in order, across the switch"
    );
    b.quit().await;
    stop_shared(app).await;
}

/// The server restarts while a page is open: the client is told to reconnect, comes
/// back after the jittered delay, and — the new server knows nothing of the old log —
/// is told to reset, then streams again. It never silently misses events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_ends_in_reconnect_and_reset() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|_| {}).await;
    let addr = app.addr;
    let b = Browser::start().await;
    let ws_tab = b
        .open_tab(&app.url("/client-test.html?topics=r&forget=1"))
        .await;
    wait_mode(&b, "live", "websocket", Duration::from_secs(5)).await;
    publish_and_see(&app, &b, "r", 3).await;
    let sse_tab = b
        .open_tab(&app.url("/client-test.html?topics=r&forget=1&transports=sse"))
        .await;
    wait_mode(&b, "degraded", "sse", Duration::from_secs(5)).await;

    app.stop().await;
    let app = spawn_app_at(addr, |_| {}).await;
    for (tab, mode, transport) in [
        (&ws_tab, "live", "websocket"),
        (&sse_tab, "degraded", "sse"),
    ] {
        b.switch(tab).await;
        let (_, took) = b
            .wait_for(
                "window.sy.resets.length > 0",
                Duration::from_secs(15),
                "the client to reconnect and be told to reset",
            )
            .await;
        eprintln!(
            "MEASURED restart → reset on {transport}: within {} ms of the new server",
            took.as_millis()
        );
        assert_eq!(b.eval("window.sy.resets[0].reason").await, "unknown_epoch");
        wait_mode(&b, mode, transport, Duration::from_secs(10)).await;
    }
    let ids = app.publish_n("r", 0..2).await;
    for tab in [&ws_tab, &sse_tab] {
        b.switch(tab).await;
        b.wait_for(
            &format!("window.sy.ids().includes('{}')", ids[1]),
            Duration::from_secs(10),
            "events after the restart",
        )
        .await;
        let seen = page_ids(&b).await;
        assert_eq!(
            seen[seen.len() - 2..],
            ids[..],
            "the new server's events, once each"
        );
    }
    b.quit().await;
    app.stop().await;
}

/// The demo CMS in two tabs (two editors): an item added through the API, or typed into
/// the other page, appears in both within 2 s — once for each forced transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_cms_updates_every_open_tab_within_two_seconds() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|_| {}).await;
    let linus = demo_login(&app, "linus").await;
    let b = Browser::start().await;
    for transport in ["websocket", "sse", "longpoll"] {
        let ada = b
            .open_tab(&app.url(&format!("/?user=ada&transports={transport}")))
            .await;
        let ready = format!(
            "window.demo && window.demo.ready && window.demo.conn.transport === '{transport}'"
        );
        b.wait_for(&ready, Duration::from_secs(10), "ada's page to be live")
            .await;
        let grace = b
            .open_tab(&app.url(&format!("/?user=grace&transports={transport}")))
            .await;
        b.wait_for(&ready, Duration::from_secs(10), "grace's page to be live")
            .await;
        assert_eq!(
            b.eval("document.querySelector('[data-testid=transport]').textContent")
                .await,
            transport
        );

        // Through the API.
        let title = format!("From the API over {transport}");
        let resp: Value = app
            .client
            .post(app.url("/demo/api/projects/1/items"))
            .header("authorization", format!("Bearer {linus}"))
            .json(&json!({"title": title}))
            .send()
            .await
            .expect("POST item")
            .json()
            .await
            .expect("json");
        let id = resp["item"]["id"].as_u64().expect("item id");
        for tab in [&ada, &grace] {
            b.switch(tab).await;
            let (_, took) = b
                .wait_for(
                    &format!("document.querySelector('[data-testid=\"item-{id}\"]')?.dataset.title === {title:?}"),
                    Duration::from_secs(2),
                    "the API's item to appear in the page",
                )
                .await;
            eprintln!(
                "MEASURED demo {transport}: API item visible after {} ms",
                took.as_millis()
            );
        }

        // Typed into grace's page, seen in ada's.
        b.switch(&grace).await;
        let typed = format!("Typed by grace over {transport}");
        b.eval(&format!(
            "(() => {{ const i = document.querySelector('[data-testid=\"add-item-1\"]'); i.value = {typed:?}; document.querySelector('[data-testid=\"add-item-btn-1\"]').click(); return true; }})()"
        ))
        .await;
        b.switch(&ada).await;
        let (_, took) = b
            .wait_for(
                &format!("[...document.querySelectorAll('[data-testid^=\"item-\"]')].some(e => e.dataset.title === {typed:?})"),
                Duration::from_secs(2),
                "grace's item to appear in ada's page",
            )
            .await;
        eprintln!(
            "MEASURED demo {transport}: other page's item visible after {} ms",
            took.as_millis()
        );
        // The bell counts what others did.
        let count = b
            .eval("document.querySelector('[data-testid=bell-count]').textContent")
            .await;
        assert!(
            count
                .as_str()
                .expect("text")
                .parse::<u32>()
                .expect("a number")
                >= 2,
            "{count}"
        );
        b.close_tabs(vec![ada, grace]).await;
    }
    b.quit().await;
    app.stop().await;
}

/// The demo shows the mode: a quiet notice when degraded, a refresh banner when off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_degraded_and_off() {
    let _serial = SERIAL.lock().await;
    let app =
        spawn_app(|c| c.transports = Transports(vec![Transport::Sse, Transport::LongPoll])).await;
    let b = Browser::start().await;
    b.open_tab(&app.url("/?user=ada")).await;
    b.wait_for(
        "window.demo && window.demo.ready && !document.querySelector('[data-testid=notice-degraded]').hidden",
        Duration::from_secs(10),
        "the degraded notice",
    )
    .await;
    assert_eq!(
        b.eval("document.querySelector('[data-testid=mode]').textContent")
            .await,
        "degraded"
    );
    assert_eq!(
        b.eval("document.querySelector('[data-testid=transport]').textContent")
            .await,
        "sse"
    );
    assert_eq!(
        b.eval("document.querySelector('[data-testid=banner-off]').hidden")
            .await,
        true
    );
    app.stop().await;

    let app = spawn_app(|c| c.transports = Transports(vec![])).await;
    b.open_tab(&app.url("/?user=ada")).await;
    b.wait_for(
        "window.demo && window.demo.ready && !document.querySelector('[data-testid=banner-off]').hidden",
        Duration::from_secs(10),
        "the refresh banner",
    )
    .await;
    let text = b
        .eval("document.querySelector('[data-testid=banner-off]').textContent")
        .await;
    assert!(text.as_str().expect("text").contains("refresh"), "{text}");
    b.quit().await;
    app.stop().await;
}

/// A page that wakes up (`online`, `visibilitychange`, `pageshow`) checks its stream at
/// once instead of waiting for the stall timers: a long-poll whose answer a proxy swallows
/// (detected by itself only after the 25 s poll time-out plus slack) and a silently dead
/// WebSocket (15 s heartbeats: ~37 s) both catch up within a few seconds of the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waking_up_catches_up_at_once() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|_| {}).await;
    let proxy = StallProxy::start(app.addr).await;
    let b = Browser::start().await;
    for (transport, mode, wake) in [
        (
            "longpoll",
            "degraded",
            "window.dispatchEvent(new Event('online'))",
        ),
        (
            "longpoll",
            "degraded",
            "document.dispatchEvent(new Event('visibilitychange'))",
        ),
        (
            "longpoll",
            "degraded",
            "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))",
        ),
        (
            "websocket",
            "live",
            "window.dispatchEvent(new Event('online'))",
        ),
    ] {
        b.open_tab(&format!(
            "{}/client-test.html?topics=w&forget=1&transports={transport}",
            proxy.base()
        ))
        .await;
        wait_mode(&b, mode, transport, Duration::from_secs(5)).await;
        publish_and_see(&app, &b, "w", 2).await;
        proxy.freeze_open_streams();
        let ids = app.publish_n("w", 0..3).await;
        b.eval(wake).await;
        let (_, took) = b
            .wait_for(
                &format!("window.sy.ids().includes('{}')", ids[2]),
                Duration::from_secs(6),
                "the woken page to catch up",
            )
            .await;
        eprintln!(
            "MEASURED wake ({wake}) on {transport} → caught up in {} ms",
            took.as_millis()
        );
        let seen = page_ids(&b).await;
        assert_eq!(
            seen[seen.len() - 3..],
            ids[..],
            "{transport}: in order, once"
        );
    }
    b.quit().await;
    app.stop().await;
}

/// Opens the demo page with `query` and waits until it is live over `transport`.
async fn open_live_demo(
    b: &Browser,
    app: &TestApp,
    query: &str,
    transport: &str,
) -> fantoccini::wd::WindowHandle {
    let tab = b.open_tab(&app.url(&format!("/?{query}"))).await;
    b.wait_for(
        &format!(
            "window.demo && window.demo.ready && window.demo.conn.transport === '{transport}'"
        ),
        Duration::from_secs(10),
        "the demo page to be live",
    )
    .await;
    tab
}

/// The demo's bell is private (SPEC §9): each page follows its editor's notifications
/// with a token the demo signs for that editor, on every transport. Ada's page asking for
/// Grace's bell gets `topic_forbidden` as an `error` event naming the topic, and keeps
/// following what it may (no silent fallback, nothing marked failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_bell_is_private_and_a_refused_topic_is_an_error() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|_| {}).await;
    let grace = demo_login(&app, "grace").await;
    let b = Browser::start().await;
    for transport in ["websocket", "sse", "longpoll"] {
        let tab = open_live_demo(
            &b,
            &app,
            &format!("user=ada&transports={transport}"),
            transport,
        )
        .await;
        assert!(
            b.eval("window.demo.tokens").await.as_u64().unwrap_or(0) >= 1,
            "the page fetched a token"
        );
        // A second connection in Ada's page asks for her bell and Grace's.
        b.eval_async(&format!(
            r#"import('/switchyard.js').then(({{ connect }}) => {{
                 const c = connect({{ topics: ['notifications/ada', 'notifications/grace'],
                   transports: ['{transport}'], share: false, getToken: window.demo.getToken }});
                 window.probe = {{ c, errors: [], events: [] }};
                 c.on('error', (e) => window.probe.errors.push(e));
                 c.on('event', (e) => window.probe.events.push(e));
                 done(true);
               }})"#
        ))
        .await;
        let (errors, _) = b
            .wait_for(
                "window.probe.errors.length && window.probe.errors",
                Duration::from_secs(10),
                "Grace's topic to be refused",
            )
            .await;
        assert_eq!(errors[0]["code"], "topic_forbidden", "{errors}");
        assert_eq!(errors[0]["topic"], "notifications/grace", "{errors}");
        b.wait_for(
            &format!(
                "window.probe.c.mode === 'live' || window.probe.c.transport === '{transport}'"
            ),
            Duration::from_secs(10),
            "the connection to carry on with Ada's bell",
        )
        .await;
        assert_eq!(
            b.eval("window.probe.c.topics").await,
            json!(["notifications/ada"])
        );
        // Grace adds an item: Ada's bell rings in the page and on the probe; nothing of
        // Grace's reaches either.
        let before = b
            .eval("document.querySelector('[data-testid=bell-count]').textContent")
            .await;
        let before: u32 = before.as_str().unwrap_or("0").parse().unwrap_or(0);
        let title = format!("Bell over {transport}");
        let resp = app
            .client
            .post(app.url("/demo/api/projects/1/items"))
            .header("authorization", format!("Bearer {grace}"))
            .json(&json!({ "title": title }))
            .send()
            .await
            .expect("POST item");
        assert_eq!(resp.status(), 201);
        b.wait_for(
            &format!(
                "Number(document.querySelector('[data-testid=bell-count]').textContent) === {}",
                before + 1
            ),
            Duration::from_secs(5),
            "Ada's bell to ring",
        )
        .await;
        let (probe, _) = b
            .wait_for(
                "window.probe.events.length && window.probe.events.map((e) => e.topic)",
                Duration::from_secs(5),
                "the probe to hear Ada's notification",
            )
            .await;
        assert_eq!(probe, json!(["notifications/ada"]));
        let topics = b
            .eval("[...new Set(window.demo.events.length ? window.demo.conn.topics : [])]")
            .await;
        assert_eq!(topics, json!(["projects", "notifications/ada"]));
        assert_eq!(
            b.eval("window.demo.errors.length").await,
            json!(0),
            "the page itself asked only for what it may"
        );
        b.eval("window.probe.c.close(), true").await;
        b.close_tabs(vec![tab]).await;
    }
    let status = app.status().await;
    assert!(
        status["counters"]["fallbacks"]
            .as_object()
            .is_none_or(|f| f.is_empty())
            || status["counters"]["fallbacks"] == json!(0),
        "a refused topic is not a transport failure: {}",
        status["counters"]
    );
    b.quit().await;
    app.stop().await;
}

/// Tokens that last 3 s: each stream ends at `exp` with `token_expired`, the page's
/// `getToken` is called again and the stream resumes from its cursor. Every item added
/// meanwhile appears exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refreshes_an_expiring_token_without_losing_an_event() {
    let _serial = SERIAL.lock().await;
    let app = spawn_app(|_| {}).await;
    let grace = demo_login(&app, "grace").await;
    let b = Browser::start().await;
    for transport in ["websocket", "sse", "longpoll"] {
        let tab = open_live_demo(
            &b,
            &app,
            &format!("user=ada&transports={transport}&token_ttl=3"),
            transport,
        )
        .await;
        // Publish until the page has fetched two more tokens (two expiries), then a few.
        let mut titles = Vec::new();
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let started = std::time::Instant::now();
        loop {
            every.tick().await;
            let title = format!("{transport} #{}", titles.len());
            let resp = app
                .client
                .post(app.url("/demo/api/projects/1/items"))
                .header("authorization", format!("Bearer {grace}"))
                .json(&json!({ "title": title }))
                .send()
                .await
                .expect("POST item");
            assert_eq!(resp.status(), 201);
            titles.push(title);
            let tokens = b.eval("window.demo.tokens").await.as_u64().unwrap_or(0);
            if tokens >= 3 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the page fetched {tokens} tokens in 30 s; expected a refresh every ~3 s"
            );
        }
        let want = json!(titles);
        b.wait_for(
            &format!(
                "JSON.stringify(window.demo.state.projects[0].items.map((i) => i.title).filter((t) => t.startsWith('{transport} #'))) === {:?}",
                want.to_string()
            ),
            Duration::from_secs(10),
            "every item, once, in order",
        )
        .await;
        let ids = b.eval("window.demo.events").await;
        let ids: Vec<&str> = ids
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| seq(id));
        sorted.dedup();
        assert_eq!(ids, sorted, "{transport}: events in order, none twice");
        assert_eq!(b.eval("window.demo.errors.length").await, json!(0));
        b.close_tabs(vec![tab]).await;
    }
    let refused = &app.status().await["counters"]["refused"];
    assert_eq!(
        refused["token_expired"],
        json!(0),
        "no stream was opened with an expired token: {refused}"
    );
    b.quit().await;
    app.stop().await;
}
