//! Real parts for the browser tests: Debian's Chromium driven through chromedriver
//! (fantoccini), nginx with a given configuration, and a pausable TCP proxy.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use super::{WAIT, wait_until, within};

/// Browser tests run one at a time: each starts a Chromium, and two cores do not carry
/// several at once with the timing the tests assert.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("switchyard-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on 127.0.0.1 (bound and released; the caller binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Headless Chromium behind chromedriver.
pub struct Browser {
    pub client: Client,
    /// chromedriver's port (for commands fantoccini has no method for, such as CDP).
    driver_port: u16,
    _driver: Child,
    _profile: TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            // Its own process group, so Drop can end Chromium too, even after a panic.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver (apt-get install chromium-driver)");
        let out = driver.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        within(WAIT, "chromedriver to start", async {
            while let Some(line) = lines.next_line().await.expect("read") {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited");
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = TempDir::new("chrome");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            },
        });
        let caps = caps
            .as_object()
            .expect("object")
            .clone()
            .into_iter()
            .collect();
        let client = within(
            Duration::from_secs(30),
            "Chromium to start under chromedriver",
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("WebDriver session");
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                None,
            ))
            .await
            .expect("set WebDriver timeouts");
        Browser {
            client,
            driver_port: port,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `url` in a new tab and returns its handle (the tab becomes current).
    pub async fn open_tab(&self, url: &str) -> fantoccini::wd::WindowHandle {
        let handle = self.client.new_window(true).await.expect("new tab").handle;
        self.client
            .switch_to_window(handle.clone())
            .await
            .expect("switch");
        self.client.goto(url).await.expect("goto");
        handle
    }

    /// Closes `tabs` and goes back to the first window (a session ends with its last one).
    pub async fn close_tabs(&self, tabs: Vec<fantoccini::wd::WindowHandle>) {
        for tab in tabs {
            self.switch(&tab).await;
            self.client.close_window().await.expect("close tab");
        }
        let handles = self.client.windows().await.expect("windows");
        self.switch(&handles[0]).await;
    }

    pub async fn switch(&self, handle: &fantoccini::wd::WindowHandle) {
        self.client
            .switch_to_window(handle.clone())
            .await
            .expect("switch tab");
    }

    /// Evaluates `expr` (a JS expression) in the current tab.
    pub async fn eval(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluating {expr}: {e}"))
    }

    /// Runs `body` as an async script in the current tab: it calls `done(value)` to answer.
    pub async fn eval_async(&self, body: &str) -> Value {
        self.client
            .execute_async(
                &format!("const done = arguments[arguments.length - 1]; {body}"),
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("evaluating async {body}: {e}"))
    }

    /// Sends a Chrome DevTools Protocol command to the current tab (chromedriver's
    /// `goog/cdp/execute`), e.g. `Page.setWebLifecycleState`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let session = self
            .client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        let url = format!(
            "http://127.0.0.1:{}/session/{session}/goog/cdp/execute",
            self.driver_port
        );
        let resp = reqwest::Client::new()
            .post(url)
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "CDP {cmd} answered {status}: {body}");
        body
    }

    /// Polls `expr` every 50 ms until it is truthy; returns its value and the time taken.
    pub async fn wait_for(&self, expr: &str, limit: Duration, what: &str) -> (Value, Duration) {
        let start = Instant::now();
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            let v = self.eval(expr).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return (v, start.elapsed());
            }
            if start.elapsed() > limit {
                // The harness page keeps a log of what its client said: show it.
                let log = self
                    .eval("document.getElementById('log') ? document.getElementById('log').textContent.slice(0, 3000) : ''")
                    .await;
                panic!(
                    "timeout after {limit:?}: {what} (last value of `{expr}`: {v})\npage log (newest first):\n{}",
                    log.as_str().unwrap_or("")
                );
            }
        }
    }

    pub async fn quit(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every Chromium process it started share one process group.
        if let Some(pid) = self._driver.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// nginx in the foreground with its own prefix, on a free loopback port. One process
/// (`master_process off`), so killing it on drop leaves no orphaned worker behind.
pub struct Nginx {
    pub port: u16,
    _child: Child,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with `server` (one or more `server { … }` blocks, with `{{PORT}}` and
    /// `{{UPSTREAM}}` replaced) inside a minimal `http { }`.
    pub async fn start(server: &str, upstream: &str) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let d = dir.0.display();
        let server = server
            .replace("{{PORT}}", &port.to_string())
            .replace("{{UPSTREAM}}", upstream);
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             {server}\n}}\n"
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(dir.0.join("nginx.conf"))
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx (apt-get install nginx)");
        wait_until(WAIT, "nginx to listen", || async {
            TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        Nginx {
            port,
            _child: child,
            dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }
}

/// A TCP proxy that can freeze the event streams open at a given moment (WebSocket,
/// SSE and long-poll requests): they stay open but no further byte from the server gets through, as
/// with a proxy stalled mid-stream. Other connections (idle keep-alive ones the browser
/// may reuse) and later streams pass normally.
pub struct StallProxy {
    pub port: u16,
    conns: Arc<std::sync::Mutex<Vec<std::sync::Weak<ProxiedConn>>>>,
    accepted: Arc<AtomicU64>,
    streams: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxiedConn {
    /// The last request on this connection was a WebSocket or SSE request…
    stream: std::sync::atomic::AtomicBool,
    /// …or a long-poll that has not been answered yet. (An answered poll leaves an idle
    /// kept-alive connection, which the browser may reuse for anything: not a stream.)
    waiting_poll: std::sync::atomic::AtomicBool,
    /// Swallow everything the server sends from now on.
    frozen: std::sync::atomic::AtomicBool,
}

impl StallProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<std::sync::Mutex<Vec<std::sync::Weak<ProxiedConn>>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let streams = Arc::new(AtomicU64::new(0));
        let (registry, counter, stream_counter) =
            (conns.clone(), accepted.clone(), streams.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let state = Arc::new(ProxiedConn::default());
                registry
                    .lock()
                    .expect("registry")
                    .push(Arc::downgrade(&state));
                let stream_counter = stream_counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up_state = state.clone();
                    let up = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if buf[..n].starts_with(b"GET ") {
                                let stream = buf[..n].starts_with(b"GET /v1/ws")
                                    || buf[..n].starts_with(b"GET /v1/sse");
                                let poll = buf[..n].starts_with(b"GET /v1/poll");
                                up_state.stream.store(stream, Ordering::SeqCst);
                                up_state.waiting_poll.store(poll, Ordering::SeqCst);
                                if stream || poll {
                                    stream_counter.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if state.frozen.load(Ordering::SeqCst) {
                            // Frozen: the bytes are never delivered.
                            continue;
                        }
                        // A long-poll answer arrives in one piece.
                        state.waiting_poll.store(false, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        StallProxy {
            port,
            conns,
            accepted,
            streams,
            task,
        }
    }

    /// Freezes every event stream open now (and every long-poll waiting for its answer);
    /// later ones pass.
    pub fn freeze_open_streams(&self) {
        for conn in self.conns.lock().expect("registry").iter() {
            if let Some(c) = conn.upgrade()
                && (c.stream.load(Ordering::SeqCst) || c.waiting_poll.load(Ordering::SeqCst))
            {
                c.frozen.store(true, Ordering::SeqCst);
            }
        }
    }

    /// WebSocket, SSE and long-poll requests seen so far.
    pub fn stream_requests(&self) -> u64 {
        self.streams.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `window.sy.ids()` of the client harness page in the current tab.
pub async fn page_ids(b: &Browser) -> Vec<String> {
    serde_json::from_value(b.eval("window.sy.ids()").await).expect("ids")
}

/// Waits until the harness page's client reports `mode` over `transport`; returns ms
/// since the page started (the client's own clock).
pub async fn wait_mode(b: &Browser, mode: &str, transport: &str, limit: Duration) -> u64 {
    let expr = format!(
        "window.sy && window.sy.conn && window.sy.conn.mode === '{mode}' && window.sy.conn.transport === '{transport}' && (Date.now() - window.sy.started)"
    );
    let (v, _) = b
        .wait_for(
            &expr,
            limit,
            &format!("the client to be {mode} over {transport}"),
        )
        .await;
    v.as_u64().unwrap_or(0)
}
