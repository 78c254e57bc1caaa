//! The Redis log (`SWITCHYARD_REDIS_URL`, SPEC §10) with a real `redis-server` and
//! several real switchyard processes: one order and one cursor across nodes, no sticky
//! sessions, an outage answered 503 and survived, a flushed Redis as a new epoch.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `redis-server` on a free loopback port, its data in a folder of its own (AOF on, so
/// a restart keeps the data unless the folder is emptied). Killed on drop.
struct Redis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl Redis {
    async fn start(name: &str) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let dir =
            std::env::temp_dir().join(format!("switchyard-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut r = Redis {
            port,
            dir,
            child: None,
        };
        r.run().await;
        r
    }

    async fn run(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || async move {
                command(port, "PING")
                    .await
                    .filter(|r| r.starts_with("+PONG"))
            },
        )
        .await;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it the way an operator does (SIGTERM: it finishes its AOF) and waits.
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().expect("pid") as i32;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("SIGTERM");
            within(
                Duration::from_secs(10),
                "redis-server to exit",
                child.wait(),
            )
            .await
            .expect("wait");
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one inline command; the first line of the answer (None if unreachable).
async fn command(port: u16, cmd: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 512];
    let n = within(Duration::from_secs(5), "a Redis answer", s.read(&mut buf))
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

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
