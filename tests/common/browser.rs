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

use super::{WAIT, within};

/// Browser tests run one at a time: each starts a Chromium, and two cores do not carry
/// several at once with the timing the tests assert.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("switchyard-{what}-{}-{n}", std::process::id()));
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
    _driver: Child,
    _profile: TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
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
        let caps = caps.as_object().expect("object").clone().into_iter().collect();
        let client = within(
            Duration::from_secs(30),
            "Chromium to start under chromedriver",
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("WebDriver session");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `url` in a new tab and returns its handle (the tab becomes current).
    pub async fn open_tab(&self, url: &str) -> fantoccini::wd::WindowHandle {
        let handle = self.client.new_window(true).await.expect("new tab").handle;
        self.client.switch_to_window(handle.clone()).await.expect("switch");
        self.client.goto(url).await.expect("goto");
        handle
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

    /// Polls `expr` every 50 ms until it is truthy; returns its value and the time taken.
    pub async fn wait_for(&self, expr: &str, limit: Duration, what: &str) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let v = self.eval(expr).await;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false))
                && v != json!(0)
                && v != json!("");
            if truthy {
                return (v, start.elapsed());
            }
            if start.elapsed() > limit {
                panic!("timeout after {limit:?}: {what} (last value of `{expr}`: {v})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // polling interval
        }
    }

    pub async fn quit(self) {
        let _ = self.client.close().await;
    }
}

/// nginx in the foreground with its own prefix, on a free loopback port.
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
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
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
        within(WAIT, "nginx to listen", async {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await; // polling interval
            }
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

/// A TCP proxy that can freeze the connections open at a given moment: they stay open
/// but no further byte from the server gets through (a proxy stalled mid-stream). New
/// connections pass normally.
pub struct StallProxy {
    pub port: u16,
    /// Connections numbered below this are frozen.
    frozen_below: Arc<AtomicU64>,
    next: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let f = frozen_below.clone();
        let next = Arc::new(AtomicU64::new(0));
        let counter = next.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let f = f.clone();
                let id = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if id < f.load(Ordering::SeqCst) {
                            // Frozen: the bytes are never delivered.
                            continue;
                        }
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
            frozen_below,
            task,
            next,
        }
    }

    /// Freezes every connection open now; later ones pass.
    pub fn freeze_open_connections(&self) {
        self.frozen_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
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
