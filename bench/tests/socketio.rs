//! The generator against the real Socket.IO peer (`bench/socketio/server.js` on Node,
//! with the socket.io package `scripts/test.sh` installs): Engine.IO over WebSocket and
//! over HTTP long-polling, every event to every subscriber once and in order.

use std::process::Stdio;
use std::time::Duration;

use switchyard_bench::{Args, Flavor, Transport};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The peer on a free port, once it says it listens.
async fn peer() -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/socketio/server.js");
    let mut child = Command::new("node")
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node.js and `npm ci --prefix bench/socketio`, see scripts/test.sh)");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the Socket.IO peer says it listens within 20 s")
        .expect("its stdout")
        .expect("a line before it exits");
    assert!(line.contains("listening on"), "{line}");
    (child, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_speaks_socketio_over_websocket_and_polling() {
    let (mut child, url) = peer().await;
    for transport in [Transport::Ws, Transport::Longpoll] {
        let mut a = Args::defaults();
        a.url = url.clone();
        a.server = Flavor::SocketIo;
        a.transport = transport;
        a.subscribers = 20;
        a.events = 50;
        a.ramp_per_sec = 0;
        a.timeout = 30;
        a.settle = 3;
        a.quiet = true;
        let r = switchyard_bench::run(a)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        let summary = r.summary();
        assert_eq!((r.connected, r.connect_failures), (20, 0), "{summary}");
        assert_eq!(r.delivered, 20 * 50, "{summary}");
        assert_eq!(
            (r.missing, r.duplicated, r.out_of_order),
            (0, 0, 0),
            "{summary}"
        );
        assert!(r.complete, "{summary}");
    }
    let mut a = Args::defaults();
    a.url = url;
    a.server = Flavor::SocketIo;
    a.transport = Transport::Sse;
    a.subscribers = 1;
    a.timeout = 10;
    a.quiet = true;
    let r = switchyard_bench::run(a).await;
    let failed = r.map(|r| r.connect_failures).unwrap_or(1);
    assert_eq!(failed, 1, "Socket.IO has no SSE: the subscriber must fail");
    let _ = child.kill().await;
}
