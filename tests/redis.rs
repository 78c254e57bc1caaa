//! The Redis log (`SWITCHYARD_REDIS_URL`, SPEC §10) with a real `redis-server` and
//! several real switchyard processes: one order and one cursor across nodes, no sticky
//! sessions, an outage answered 503 and survived, a flushed Redis as a new epoch.

mod common;

use std::time::Duration;

use common::browser::{Browser, Nginx, SERIAL, page_ids, wait_mode};
use common::redis::{Redis, command};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

async fn publish(client: &reqwest::Client, base: &str, n: u64) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"topic": "r", "type": "t", "data": {"n": n}}))
        .send()
        .await
        .expect("publish");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn publish_ok(client: &reqwest::Client, base: &str, n: u64) -> String {
    let (status, v) = publish(client, base, n).await;
    assert_eq!(status, 201, "publish on {base}: {v}");
    v["ids"][0].as_str().expect("id").to_owned()
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = client.get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn head_of(client: &reqwest::Client, base: &str) -> String {
    let (_, v) = get_json(client, &format!("{base}/v1/negotiate?topics=r")).await;
    v["cursor"].as_str().expect("cursor").to_owned()
}

fn ws(base: &str, query: &str) -> String {
    format!("{}/v1/ws?{query}", base.replace("http://", "ws://"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_order_and_any_node_resumes_any_cursor() {
    let redis = Redis::start("share").await;
    let env = [
        ("SWITCHYARD_REDIS_URL", redis.url()),
        ("SWITCHYARD_POLL_BATCH", "7".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (a, b, c) = (
        spawn_binary(&env).await,
        spawn_binary(&env).await,
        spawn_binary(&env).await,
    );
    let client = reqwest::Client::new();
    let start = head_of(&client, &a.base()).await;
    assert_eq!(
        start,
        head_of(&client, &b.base()).await,
        "one head on every node"
    );

    // Subscribers on B (WebSocket) and C (SSE); publishes alternate between A, B and C.
    let mut on_b = Ws::connect(&ws(&b.base(), &format!("topics=r&cursor={start}"))).await;
    assert_eq!(on_b.next().await["op"], "ready");
    let sse = client
        .get(format!("{}/v1/sse?topics=r&cursor={start}", c.base()))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("SSE");
    let mut on_c = eventsource_stream::Eventsource::eventsource(sse.bytes_stream());
    let nodes = [a.base(), b.base(), c.base()];
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(publish_ok(&client, &nodes[n as usize % 3], n).await);
    }
    let seqs: Vec<u64> = ids.iter().map(|i| seq(i)).collect();
    assert_eq!(
        seqs,
        (seq(&start) + 1..=seq(&start) + 30).collect::<Vec<_>>(),
        "one gapless order across nodes"
    );
    let got: Vec<String> = on_b
        .events(30)
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got, ids, "WebSocket on B");
    let mut got = Vec::new();
    while got.len() < 30 {
        let e = within(Duration::from_secs(10), "an SSE event on C", on_c.next())
            .await
            .expect("open")
            .expect("parse");
        if e.event == "message" {
            got.push(e.id);
        }
    }
    assert_eq!(got, ids, "SSE on C");

    // A long poll that alternates A, B, C, A… (7 events per answer) resumes exactly.
    let mut at = start.clone();
    let mut polled = Vec::new();
    for i in 0.. {
        let (_, v) = get_json(
            &client,
            &format!("{}/v1/poll?topics=r&cursor={at}&timeout=0", nodes[i % 3]),
        )
        .await;
        assert!(v["reset"].is_null(), "{v}");
        let events = v["events"].as_array().expect("events");
        if events.is_empty() {
            break;
        }
        polled.extend(
            events
                .iter()
                .map(|e| e["id"].as_str().expect("id").to_owned()),
        );
        at = v["cursor"].as_str().expect("cursor").to_owned();
    }
    assert_eq!(polled, ids, "long polls alternating between nodes");

    // A WebSocket moved from A to B mid-stream, and one whose node is killed.
    let mut first = Ws::connect(&ws(&a.base(), &format!("topics=r&cursor={start}"))).await;
    assert_eq!(first.next().await["op"], "ready");
    let head: Vec<String> = first
        .events(12)
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    drop(first);
    let mut moved = Ws::connect(&ws(&b.base(), &format!("topics=r&cursor={}", head[11]))).await;
    assert_eq!(moved.next().await["op"], "ready");
    let rest: Vec<String> = moved
        .events(18)
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        [head, rest].concat(),
        ids,
        "WebSocket moved to another node"
    );
    let mut c = c;
    c.child.kill().await.expect("kill C");
    let more = publish_ok(&client, &a.base(), 100).await;
    let (_, v) = get_json(
        &client,
        &format!("{}/v1/poll?topics=r&cursor={}&timeout=5", b.base(), ids[29]),
    )
    .await;
    assert_eq!(
        v["events"][0]["id"],
        more.as_str(),
        "a client of the killed node resumes on another: {v}"
    );
    a.terminate();
    b.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_503_and_survived_and_a_flushed_redis_is_a_new_epoch() {
    let mut redis = Redis::start("outage").await;
    let url = redis.url();
    let node = spawn_binary(&[("SWITCHYARD_REDIS_URL", url.as_str())]).await;
    let base = node.base();
    let client = reqwest::Client::new();
    let (status, ready) = get_json(&client, &format!("{base}/readyz")).await;
    assert_eq!(
        (status, ready["log"].clone()),
        (200, json!("redis")),
        "{ready}"
    );
    let before: Vec<String> = {
        let mut v = Vec::new();
        for n in 0..5 {
            v.push(publish_ok(&client, &base, n).await);
        }
        v
    };
    let mut stream = Ws::connect(&ws(&base, &format!("topics=r&cursor={}", before[4]))).await;
    assert_eq!(stream.next().await["op"], "ready");

    redis.stop().await;
    let (status, v) = publish(&client, &base, 5).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "log_unavailable", "{v}");
    wait_until(Duration::from_secs(15), "/readyz to say 503", || {
        let client = client.clone();
        let url = format!("{base}/readyz");
        async move { (get_json(&client, &url).await.0 == 503).then_some(()) }
    })
    .await;

    let (_, status) = get_json(&client, &format!("{base}/v1/status")).await;
    assert_eq!(status["log"]["backend"], "redis", "{status}");
    assert_eq!(
        status["log"]["unavailable"], "Redis is unreachable",
        "{status}"
    );
    assert!(
        status["log"]["errors"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_log_errors_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // SPEC §10: the node tells its streams to reconnect (a load balancer following
    // /readyz sends them elsewhere).
    let told = stream.next().await;
    assert_eq!(told["op"], "reconnect", "{told}");
    assert_eq!(told["reason"], "log_unavailable", "{told}");
    let cursor = before[4].clone();
    // One that comes back here during the outage is served when Redis is back.
    let mut stream = Ws::connect(&ws(&base, &format!("topics=r&cursor={cursor}"))).await;
    assert_eq!(stream.next().await["op"], "ready");

    // Back with its data: the same epoch, the stream resumes, nothing lost or doubled.
    redis.run().await;
    wait_until(Duration::from_secs(15), "/readyz to say 200 again", || {
        let client = client.clone();
        let url = format!("{base}/readyz");
        async move { (get_json(&client, &url).await.0 == 200).then_some(()) }
    })
    .await;
    let after = publish_ok(&client, &base, 6).await;
    assert_eq!(
        seq(&after),
        seq(&before[4]) + 1,
        "the refused publish took no number"
    );
    assert_eq!(
        after.split('-').next(),
        before[4].split('-').next(),
        "same epoch"
    );
    let got = stream.events(1).await;
    assert_eq!(
        got[0]["id"],
        after.as_str(),
        "the stream resumed after the outage"
    );

    // Flushed: a new epoch; streams end, and an old cursor resets.
    assert!(
        command(redis.port, "FLUSHALL")
            .await
            .is_some_and(|r| r.starts_with("+OK"))
    );
    let old_epoch = before[0].split('-').next().expect("epoch").to_owned();
    wait_until(
        Duration::from_secs(15),
        "the node to take the new epoch",
        || {
            let client = client.clone();
            let url = format!("{base}/v1/status");
            let old = old_epoch.clone();
            async move {
                let (_, v) = get_json(&client, &url).await;
                (v["epoch"].as_str().is_some_and(|e| e != old)).then_some(())
            }
        },
    )
    .await;
    let (_, v) = get_json(
        &client,
        &format!("{base}/v1/poll?topics=r&cursor={after}&timeout=0"),
    )
    .await;
    assert_eq!(v["reset"]["reason"], "unknown_epoch", "{v}");
    let ended = stream.next().await;
    assert_eq!(
        ended["op"], "reconnect",
        "a stream of the old epoch ends: {ended}"
    );
    let head = head_of(&client, &base).await;
    let mut again = Ws::connect(&ws(&base, &format!("topics=r&cursor={head}"))).await;
    assert_eq!(again.next().await["op"], "ready");
    let fresh = publish_ok(&client, &base, 7).await;
    assert_eq!(seq(&fresh), 1, "the new epoch starts at 1: {fresh}");
    assert_eq!(
        again.events(1).await[0]["id"],
        fresh.as_str(),
        "streams of the new epoch are served"
    );

    // Replaced: restarted without its data. Another new epoch, found after the reconnect.
    redis.stop().await;
    for entry in std::fs::read_dir(&redis.dir).expect("list") {
        let path = entry.expect("entry").path();
        let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
    }
    redis.run().await;
    let flushed_epoch = fresh.split('-').next().expect("epoch").to_owned();
    wait_until(
        Duration::from_secs(15),
        "the node to take the replaced Redis's epoch",
        || {
            let client = client.clone();
            let url = format!("{base}/v1/status");
            let old = flushed_epoch.clone();
            async move {
                let (_, v) = get_json(&client, &url).await;
                (v["epoch"].as_str().is_some_and(|e| e != old) && v["log"]["unavailable"].is_null())
                    .then_some(())
            }
        },
    )
    .await;
    let (_, v) = get_json(
        &client,
        &format!("{base}/v1/poll?topics=r&cursor={fresh}&timeout=0"),
    )
    .await;
    assert_eq!(v["reset"]["reason"], "unknown_epoch", "{v}");
    assert_eq!(seq(&publish_ok(&client, &base, 8).await), 1);
    node.terminate();
}

/// A ticket issued by one node opens a stream on another, once (behind a load balancer
/// without sticky sessions the browser posts to one node and connects to the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_one_node_opens_a_stream_on_another_once() {
    let redis = Redis::start("tickets").await;
    let secret = "0123456789abcdef0123456789abcdef";
    let url = redis.url();
    let env = [
        ("SWITCHYARD_REDIS_URL", url.as_str()),
        ("SWITCHYARD_TOKEN_SECRET", secret),
    ];
    let (a, b) = (spawn_binary(&env).await, spawn_binary(&env).await);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"exp": exp, "topics": ["r"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign");
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/tickets", a.base()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("ticket");
    assert_eq!(resp.status(), 201);
    let ticket: Value = resp.json().await.expect("JSON");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_owned();
    let open = |base: String| {
        let client = client.clone();
        let ticket = ticket.clone();
        async move {
            let (status, v) = get_json(
                &client,
                &format!("{base}/v1/poll?topics=r&timeout=0&ticket={ticket}"),
            )
            .await;
            (status, v["error"]["code"].clone())
        }
    };
    assert_eq!(open(b.base()).await.0, 200, "redeemed on the other node");
    assert_eq!(
        open(a.base()).await,
        (401, json!("token_invalid")),
        "and only once"
    );
    let (status, _) = get_json(&client, &format!("{}/v1/poll?topics=r&timeout=0", b.base())).await;
    assert_eq!(status, 401, "the topic is private");
    a.terminate();
    b.terminate();
}

/// The shipped two-node nginx config (round robin, no sticky sessions) in front of two
/// nodes on one Redis, in real Chromium: the client stays live and exact while each node
/// in turn is stopped and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_two_nodes_behind_nginx_the_client_stays_live_and_exact() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start("nginx").await;
    let url = redis.url();
    let ports = [common::browser::free_port(), common::browser::free_port()];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let node = |i: usize| {
        let (url, addr) = (url.clone(), addr(i));
        async move {
            spawn_binary(&[
                ("SWITCHYARD_REDIS_URL", url.as_str()),
                ("SWITCHYARD_ADDR", addr.as_str()),
            ])
            .await
        }
    };
    let mut nodes = [Some(node(0).await), Some(node(1).await)];
    let shipped = include_str!("../deploy/nginx-nodes.conf")
        .replace("listen 8080;", "listen 127.0.0.1:{{PORT}};")
        .replace("server 127.0.0.1:3001 ", &format!("server {} ", addr(0)))
        .replace("server 127.0.0.1:3002 ", &format!("server {} ", addr(1)));
    let nginx = Nginx::start(&shipped, "").await;
    let b = Browser::start().await;
    b.open_tab(&format!(
        "{}/client-test.html?topics=r&forget=1",
        nginx.base()
    ))
    .await;
    wait_mode(&b, "live", "websocket", Duration::from_secs(10)).await;
    let client = reqwest::Client::new();
    let mut published = Vec::new();
    let mut n = 0;
    for round in 0..2 {
        // Publish through nginx, then stop the node `round`, publish on the other, and
        // start it again.
        for _ in 0..5 {
            published.push(publish_ok(&client, &nginx.base(), n).await);
            n += 1;
        }
        let stopped = nodes[round].take().expect("running");
        stopped.terminate();
        let mut stopped = stopped;
        within(
            Duration::from_secs(10),
            "the node to exit",
            stopped.child.wait(),
        )
        .await
        .expect("wait");
        let other = nodes[1 - round].as_ref().expect("running").base();
        for _ in 0..5 {
            published.push(publish_ok(&client, &other, n).await);
            n += 1;
        }
        nodes[round] = Some(node(round).await);
        let last = published.last().expect("published").clone();
        b.wait_for(
            &format!("window.sy.ids().includes('{last}')"),
            Duration::from_secs(20),
            "the page to get every event while a node was down",
        )
        .await;
        wait_mode(&b, "live", "websocket", Duration::from_secs(20)).await;
    }
    for _ in 0..5 {
        published.push(publish_ok(&client, &nginx.base(), n).await);
        n += 1;
    }
    let last = published.last().expect("published").clone();
    b.wait_for(
        &format!("window.sy.ids().includes('{last}')"),
        Duration::from_secs(20),
        "the last events",
    )
    .await;
    assert_eq!(
        page_ids(&b).await,
        published,
        "every event once, in order, across both restarts"
    );
    // The stopped node refuses connections, and may reset the WebSocket it was draining
    // (a close that crosses the client's frame): nginx logs both; anything else is a
    // proxy problem.
    let errors: Vec<String> = nginx
        .error_log()
        .lines()
        .filter(|l| {
            l.contains("[error]")
                && !l.contains("Connection refused")
                && !l.contains("Connection reset by peer) while proxying upgraded connection")
        })
        .map(str::to_owned)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    b.quit().await;
    for node in nodes.iter().flatten() {
        node.terminate();
    }
}
