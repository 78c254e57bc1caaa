//! Smoke test: the generator against a real switchyard server for about a second per
//! transport, so that it cannot rot. Not a benchmark: the figures are not checked, only
//! that every event reached every subscriber once and in order.

use std::time::Duration;

use switchyard_bench::{Args, Report, Transport};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(switchyard::run(
        listener,
        switchyard::config::Config::defaults(),
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        url,
        stop: Some(tx),
        handle,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

fn args(url: &str, transport: Transport) -> Args {
    let mut a = Args::defaults();
    a.url = url.to_owned();
    a.transport = transport;
    a.subscribers = 20;
    a.events = 50;
    a.batch = 10;
    a.ramp_per_sec = 0;
    a.timeout = 30;
    a.settle = 3;
    a.quiet = true;
    a.server_pid = Some(std::process::id());
    a
}

fn assert_complete(r: &Report) {
    let summary = r.summary();
    assert_eq!(r.connected, 20, "{summary}");
    assert_eq!(r.connect_failures, 0, "{summary}");
    assert_eq!(r.expected, 20 * 50, "{summary}");
    assert_eq!(r.delivered, r.expected, "{summary}");
    assert_eq!(r.missing, 0, "{summary}");
    assert_eq!(r.duplicated, 0, "{summary}");
    assert_eq!(r.out_of_order, 0, "{summary}");
    assert_eq!(r.published, 50, "{summary}");
    assert!(r.complete, "{summary}");
    assert!(
        r.latency.count == 1000 && r.latency.max_ms > 0.0,
        "{summary}"
    );
    assert!(
        r.deliveries_per_s > 0.0 && r.publish_rate > 0.0,
        "{summary}"
    );
    let server = r.server_figures.as_ref().expect("server figures");
    assert!(server.idle.rss_bytes > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_delivers_everything() {
    let server = server().await;
    for transport in [Transport::Sse, Transport::Ws, Transport::Longpoll] {
        let report = switchyard_bench::run(args(&server.url, transport))
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_complete(&report);
        assert!(!report.summary().is_empty());
    }
    server.stop().await;
}

/// Several single-event publishers on their own connections: every event arrives once,
/// each publisher's in its order, and one request carried each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_deliver_everything() {
    let server = server().await;
    for transport in [Transport::Sse, Transport::Ws] {
        let mut a = args(&server.url, transport);
        a.batch = 1;
        a.publishers = 4;
        let report = switchyard_bench::run(a)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_complete(&report);
        assert_eq!(
            (report.publishers, report.publish_requests),
            (4, 50),
            "{}",
            report.summary()
        );
    }
    let mut a = args(&server.url, Transport::Sse);
    a.publishers = 4;
    let err = switchyard_bench::run(a)
        .await
        .expect_err("batches of 10 from 4 publishers");
    assert!(err.to_string().contains("needs --batch 1"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_scenario_connects_and_holds() {
    let server = server().await;
    let mut a = args(&server.url, Transport::Ws);
    a.events = 0;
    a.hold = 1;
    let r = switchyard_bench::run(a).await.expect("run");
    assert_eq!(
        (r.connected, r.connect_failures, r.delivered),
        (20, 0, 0),
        "{}",
        r.summary()
    );
    server.stop().await;
}

/// The binary with two child processes on their own source addresses, reporting JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_processes_merge_their_results() {
    let server = server().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args([
            "--url",
            &server.url,
            "--transport",
            "sse",
            "--subscribers",
            "20",
        ])
        .args([
            "--events",
            "50",
            "--batch",
            "10",
            "--ramp-per-sec",
            "0",
            "--procs",
            "2",
        ])
        .args(["--timeout", "30", "--settle", "3", "--quiet", "--json", "-"])
        .env_clear()
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the generator finishes")
        .expect("the generator runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["procs"], 2, "{v}");
    assert_eq!(v["connected"], 20, "{v}");
    assert_eq!(v["delivered"], 1000, "{v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["latency"]["count"], 1000, "{v}");
    server.stop().await;
}

/// The bare fan-out server (the floor of the scale scenarios) serves the generator's
/// Nchan protocol over SSE and WebSocket: every event reaches every subscriber once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_server_delivers_everything() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    // Serves until the test process ends.
    std::thread::spawn(move || switchyard_bench::bare::serve(listener, 2));
    for transport in [Transport::Sse, Transport::Ws] {
        let mut a = args(&url, transport);
        a.server = switchyard_bench::Flavor::Nchan;
        let report = switchyard_bench::run(a)
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        assert_complete(&report);
    }
}
