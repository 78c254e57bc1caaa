//! Shared test harness: the real server on an ephemeral port, and real clients.
//!
//! Every wait is bounded by a timeout whose message says what did not happen.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod redis;

use std::future::Future;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Stops an app that was shared with tasks which have all finished (dropping a server
/// inside async code would end its runtime from within a runtime).
pub async fn stop_shared(app: std::sync::Arc<TestApp>) {
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared with a running task"),
    }
}

/// Default patience for anything that should happen "at once".
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut` or panics with `what` after `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timeout after {limit:?}: {what}"),
    }
}

/// How often [`wait_until`] looks again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Checks `check` every [`POLL_EVERY`] until it yields `Some`, or panics after `limit`
/// naming `what`. For conditions only observable by asking (a status endpoint, a port).
pub async fn wait_until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(limit, what, async {
        let mut every = tokio::time::interval(POLL_EVERY);
        loop {
            every.tick().await;
            if let Some(v) = check().await {
                return v;
            }
        }
    })
    .await
}

/// `GET /v1/status` of the server at `base`, as JSON.
pub async fn status_at(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .expect("GET /v1/status")
        .json()
        .await
        .expect("status JSON")
}

/// Publishes `body` (one event or an array) to the server at `base`; asserts `201` and
/// returns the ids.
pub async fn publish_at(client: &reqwest::Client, base: &str, body: Value) -> Vec<String> {
    let resp = client
        .post(format!("{base}/v1/events"))
        .json(&body)
        .send()
        .await
        .expect("publish request");
    let status = resp.status();
    let v: Value = resp.json().await.expect("publish answer is JSON");
    assert_eq!(status, 201, "publish answered {status}: {v}");
    v["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_str().expect("id is a string").to_owned())
        .collect()
}

/// A server running in this process on 127.0.0.1:<ephemeral>.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts the server with the defaults changed by `configure` (config from code, never
/// from the process environment).
/// Signs in to the demo as `user`; the session (for `Authorization: Bearer`).
pub async fn demo_login(app: &TestApp, user: &str) -> String {
    let resp = app
        .client
        .post(app.url("/demo/api/login"))
        .json(&serde_json::json!({ "user": user }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200, "demo login");
    let v: Value = resp.json().await.expect("login json");
    v["session"].as_str().expect("session").to_owned()
}

pub async fn spawn_app(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at("127.0.0.1:0".parse().expect("addr"), configure).await
}

/// Like [`spawn_app`], on a given address (to restart a server where it was).
pub async fn spawn_app_at(
    addr: std::net::SocketAddr,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = Config::defaults();
    configure(&mut config);
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(switchyard::run(listener, config, async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client"),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Publishes `body` (one event or an array) and returns the ids.
    pub async fn publish(&self, body: Value) -> Vec<String> {
        publish_at(&self.client, &self.base, body).await
    }

    /// `GET path`; panics only if the request cannot be made.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// The body of `GET path` as text (e.g. `/metrics`).
    pub async fn text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("text body")
    }

    /// Publishes `n` events `{"n": i}` of type `t` on `topic`, in one request.
    pub async fn publish_n(&self, topic: &str, range: std::ops::Range<u64>) -> Vec<String> {
        let events: Vec<Value> = range
            .map(|i| json!({"topic": topic, "type": "test.n", "data": {"n": i}}))
            .collect();
        self.publish(Value::Array(events)).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        let status = resp.status().as_u16();
        let v = resp.json().await.expect("JSON body");
        (status, v)
    }

    pub async fn status(&self) -> Value {
        self.get_json("/v1/status").await.1
    }

    /// One long-poll; panics unless it answers 200 with JSON.
    pub async fn poll(&self, query: &str) -> Value {
        let (status, v) = within(
            Duration::from_secs(40),
            "long-poll answer",
            self.get_json(&format!("/v1/poll?{query}")),
        )
        .await;
        assert_eq!(status, 200, "poll answered {status}: {v}");
        v
    }

    /// Stops the server and waits until `run` has returned.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            within(
                Duration::from_secs(10),
                "server run() to return after shutdown",
                h,
            )
            .await
            .expect("server task")
            .expect("server result");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A WebSocket client that parses JSON frames.
pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = within(
            WAIT,
            "WebSocket connect",
            tokio_tungstenite::connect_async(url),
        )
        .await
        .unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"));
        Ws { stream }
    }

    /// The next message of any kind, within `WAIT`; a codec error (a frame cut or
    /// spliced, say) fails the test.
    pub async fn next_message(&mut self) -> Message {
        within(WAIT, "a WebSocket frame", self.stream.next())
            .await
            .expect("WebSocket ended")
            .expect("WebSocket error")
    }

    /// The next JSON text frame, skipping heartbeats unless `heartbeats`.
    pub async fn next_frame(&mut self, heartbeats: bool) -> Value {
        loop {
            match self.next_message().await {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("frame is JSON");
                    if !heartbeats && v["op"] == "heartbeat" {
                        continue;
                    }
                    return v;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_frame(false).await
    }

    /// Reads frames until `n` events have arrived; returns them (control frames other
    /// than heartbeats are kept in order too).
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.next().await;
            assert_eq!(v["op"], "event", "expected an event, got {v}");
            out.push(v);
        }
        out
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send frame");
    }
}

/// A Server-Sent Events client: reqwest + eventsource-stream.
pub struct Sse {
    /// The raw `data:` of every event returned by [`Sse::events`], in order.
    pub raw: Vec<String>,
    pub events: std::pin::Pin<Box<dyn futures::Stream<Item = eventsource_stream::Event> + Send>>,
}

impl Sse {
    pub async fn connect(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Sse {
        use eventsource_stream::Eventsource;
        let mut req = app
            .client
            .get(app.url(path))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = within(WAIT, "SSE response head", req.send())
            .await
            .expect("SSE request");
        assert_eq!(resp.status(), 200, "SSE answered {}", resp.status());
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream",
            "SSE content type"
        );
        let events = resp
            .bytes_stream()
            .eventsource()
            .map(|e| e.expect("SSE parse"));
        Sse {
            raw: Vec::new(),
            events: Box::pin(events),
        }
    }

    pub async fn next(&mut self) -> eventsource_stream::Event {
        within(WAIT, "an SSE event", self.events.next())
            .await
            .expect("SSE stream ended")
    }

    /// The next `n` default-named events (envelopes), with their SSE ids checked
    /// against the envelope ids.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let e = self.next().await;
            assert_eq!(e.event, "message", "expected an event, got {e:?}");
            let v: Value = serde_json::from_str(&e.data).expect("SSE data is JSON");
            assert_eq!(v["id"], e.id, "SSE id: matches the envelope id");
            self.raw.push(e.data);
            out.push(v);
        }
        out
    }
}

/// Polls from `cursor` until `n` events have been collected.
pub async fn poll_events(app: &TestApp, topics: &str, mut cursor: String, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = app
            .poll(&format!("topics={topics}&cursor={cursor}&timeout=5"))
            .await;
        assert!(v.get("reset").is_none(), "unexpected reset: {v}");
        out.extend(v["events"].as_array().expect("events").iter().cloned());
        cursor = v["cursor"].as_str().expect("cursor").to_owned();
    }
    out
}

/// The server binary, started as a separate process (for env parsing, signals, RSS).
pub struct Server {
    pub child: tokio::process::Child,
    pub addr: String,
    pub stderr: Vec<String>,
}

/// Starts the real binary with `env` on 127.0.0.1:0 and waits for its listening line.
pub async fn spawn_binary(env: &[(&str, &str)]) -> Server {
    spawn_binary_in(env, None).await
}

/// Like [`spawn_binary`], in working directory `dir`.
pub async fn spawn_binary_in(env: &[(&str, &str)], dir: Option<&str>) -> Server {
    spawn_binary_with(env!("CARGO_BIN_EXE_switchyard"), env, dir, None).await
}

/// Like [`spawn_binary_in`], with the binary at `bin` (a copy of it, say).
pub async fn spawn_program_in(bin: &str, env: &[(&str, &str)], dir: &str) -> Server {
    spawn_binary_with(bin, env, Some(dir), None).await
}

/// Like [`spawn_binary`], with its open-file limit (soft and hard) set to `nofile`, as
/// `ulimit -n` would.
pub async fn spawn_binary_nofile(env: &[(&str, &str)], nofile: u64) -> Server {
    spawn_binary_with(env!("CARGO_BIN_EXE_switchyard"), env, None, Some(nofile)).await
}

async fn spawn_binary_with(
    bin: &str,
    env: &[(&str, &str)],
    dir: Option<&str>,
    nofile: Option<u64>,
) -> Server {
    let mut cmd = match nofile {
        // The shell sets the limit, then becomes the server (same pid).
        Some(n) => {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-c", &format!("ulimit -n {n} && exec \"$0\""), bin]);
            cmd
        }
        None => tokio::process::Command::new(bin),
    };
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SWITCHYARD_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start switchyard binary");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let addr = within(
        WAIT,
        "the binary's 'switchyard listening' log line",
        async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                seen.push(line.clone());
                if line.contains("switchyard listening") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .expect("addr= in the listening line")
                        .to_owned();
                    return addr;
                }
            }
            panic!("binary exited before listening: {seen:?}");
        },
    )
    .await;
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        addr,
        stderr: seen,
    }
}

impl Server {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("child pid") as i32
    }

    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
    }
}

/// Runs the binary to completion with `env` (and `args`), returning (exit code, stderr).
pub async fn run_binary(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = within(
        WAIT,
        "the binary to exit",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .env_clear()
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `n` of each event (`data.n`), in order.
pub fn ns(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["data"]["n"].as_u64().expect("data.n"))
        .collect()
}

/// The ids of events, in order.
pub fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The sequence part of a cursor.
pub fn seq(cursor: &str) -> u64 {
    cursor
        .rsplit_once('-')
        .and_then(|(_, s)| s.parse().ok())
        .expect("cursor <epoch>-<seq>")
}
