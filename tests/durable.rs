//! The durable log (`SWITCHYARD_DATA_DIR`, SPEC §10) with the real binary: SIGKILL while
//! publishing, restart, and every transport resumes from its cursor with no `reset`;
//! retention across a restart; a data dir that cannot be used stops the start with one
//! line.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// A fresh folder under the system's temporary directory, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("switchyard-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Dir(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn publish_one(client: &reqwest::Client, base: &str, n: u64) -> Option<String> {
    let resp = client
        .post(format!("{base}/v1/events"))
        .json(&json!({"topic": "d", "type": "t", "data": {"n": n}}))
        .send()
        .await
        .ok()?;
    if resp.status() != 201 {
        return None;
    }
    let v: Value = resp.json().await.ok()?;
    v["ids"][0].as_str().map(str::to_owned)
}

/// The events a stream from `cursor` delivers up to and including `last`, on `transport`;
/// fails on a `reset`.
async fn resume(base: &str, transport: &str, cursor: &str, last: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut got: Vec<String> = Vec::new();
    match transport {
        "ws" => {
            let url = format!(
                "{}/v1/ws?topics=d&cursor={cursor}",
                base.replace("http://", "ws://")
            );
            let mut ws = Ws::connect(&url).await;
            assert_eq!(ws.next().await["op"], "ready");
            while got.last().map(String::as_str) != Some(last) {
                let v = ws.next().await;
                assert_eq!(v["op"], "event", "ws after a restart: {v}");
                got.push(v["id"].as_str().expect("id").to_owned());
            }
        }
        "sse" => {
            use eventsource_stream::Eventsource;
            let resp = client
                .get(format!("{base}/v1/sse?topics=d&cursor={cursor}"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .expect("SSE");
            assert_eq!(resp.status(), 200);
            let mut events = resp.bytes_stream().eventsource();
            while got.last().map(String::as_str) != Some(last) {
                let e = within(Duration::from_secs(10), "an SSE event", events.next())
                    .await
                    .expect("open")
                    .expect("parse");
                match e.event.as_str() {
                    "ready" | "heartbeat" => {}
                    "message" => got.push(e.id),
                    other => panic!("sse after a restart: {other} {}", e.data),
                }
            }
        }
        _ => {
            let mut at = cursor.to_owned();
            while got.last().map(String::as_str) != Some(last) {
                let v: Value = client
                    .get(format!("{base}/v1/poll?topics=d&cursor={at}&timeout=5"))
                    .send()
                    .await
                    .expect("poll")
                    .json()
                    .await
                    .expect("JSON");
                assert!(v["reset"].is_null(), "poll after a restart: {v}");
                for e in v["events"].as_array().expect("events") {
                    got.push(e["id"].as_str().expect("id").to_owned());
                }
                at = v["cursor"].as_str().expect("cursor").to_owned();
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_publish_then_every_transport_resumes_without_reset() {
    let dir = Dir::new("kill");
    let env = [("SWITCHYARD_DATA_DIR", dir.as_str())];
    let mut server = spawn_binary(&env).await;
    let base = server.base();
    // A publisher at about 100 events/s, noting every acknowledged id.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let publisher = {
        let acked = acked.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut every = tokio::time::interval(Duration::from_millis(10));
            for n in 0.. {
                every.tick().await;
                match publish_one(&client, &base, n).await {
                    Some(id) => acked.lock().expect("lock").push(id),
                    None => break, // the server is gone
                }
            }
        })
    };
    wait_until(
        Duration::from_secs(30),
        "200 acknowledged publishes",
        || {
            let n = acked.lock().expect("lock").len();
            async move { (n >= 200).then_some(()) }
        },
    )
    .await;
    server.child.kill().await.expect("SIGKILL");
    within(Duration::from_secs(10), "the publisher to stop", publisher)
        .await
        .expect("publisher");
    let acked = acked.lock().expect("lock").clone();
    let epoch = acked[0].split('-').next().expect("epoch").to_owned();

    // And a torn write on top: half a record at the tail of the newest segment, as a
    // power cut in the middle of a write leaves it.
    let newest = std::fs::read_dir(&dir.0)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("segment-"))
        })
        .max()
        .expect("a segment");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&newest)
            .expect("open segment");
        f.write_all(&[120, 0, 0, 0, 9, 9, 9, 9, b'{', b'"'])
            .expect("write");
    }

    let server = spawn_binary(&env).await;
    assert!(
        server
            .stderr
            .iter()
            .any(|l| l.contains("durable log opened") && !l.contains("torn_bytes_cut=0")),
        "the start says it cut the torn tail: {:?}",
        server.stderr
    );
    let base = server.base();
    let status: Value = reqwest::get(format!("{base}/v1/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["epoch"], epoch, "the epoch survived: {status}");
    assert_eq!(status["log"]["backend"], "data_dir", "{status}");
    let ready = reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.expect("JSON");
    assert_eq!(
        ready,
        json!({"ready": true, "reason": null, "log": "data_dir"})
    );
    let head = seq(status["cursor"].as_str().expect("cursor"));
    let last = acked.last().expect("an ack");
    assert!(
        head >= seq(last),
        "every acknowledged event is stored (head {head}, last ack {last})"
    );
    for (transport, from) in [("ws", 10), ("sse", 57), ("poll", 120)] {
        let got = resume(&base, transport, &acked[from], last).await;
        assert_eq!(
            got,
            acked[from + 1..],
            "{transport} from {}: exactly the acknowledged events after it",
            acked[from]
        );
    }
    // The log goes on from its head, in the same epoch.
    let next = publish_one(&reqwest::Client::new(), &base, 9999)
        .await
        .expect("publish after restart");
    assert_eq!(next, format!("{epoch}-{}", head + 1));
    server.terminate();
}

#[tokio::test]
async fn retention_holds_across_a_restart() {
    let dir = Dir::new("retain");
    let env = [
        ("SWITCHYARD_DATA_DIR", dir.as_str()),
        ("SWITCHYARD_RETAIN", "5"),
    ];
    let mut server = spawn_binary(&env).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            publish_one(&client, &server.base(), n)
                .await
                .expect("publish"),
        );
    }
    server.child.kill().await.expect("SIGKILL");
    let server = spawn_binary(&env).await;
    let status: Value = reqwest::get(format!("{}/v1/status", server.base()))
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["log"]["retained"], 5, "{status}");
    assert_eq!(status["log"]["oldest"], ids[5].as_str(), "{status}");
    assert!(
        status["log"]["retained_bytes"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    // A cursor older than retention is a reset (cursor_expired), one inside is not.
    let poll = |cursor: &str| {
        let url = format!(
            "{}/v1/poll?topics=d&cursor={cursor}&timeout=0",
            server.base()
        );
        let client = client.clone();
        async move {
            let v: Value = client
                .get(url)
                .send()
                .await
                .expect("poll")
                .json()
                .await
                .expect("JSON");
            v
        }
    };
    let v = poll(&ids[1]).await;
    assert_eq!(v["reset"]["reason"], "cursor_expired", "{v}");
    let v = poll(&ids[6]).await;
    assert!(v["reset"].is_null(), "{v}");
    assert_eq!(ids_of(&v), ids[7..]);
    server.terminate();

    // By bytes: 1 KiB keeps only the newest few events, before and after a restart.
    let env = [
        ("SWITCHYARD_DATA_DIR", dir.as_str()),
        ("SWITCHYARD_RETAIN_BYTES", "1KiB"),
    ];
    let mut server = spawn_binary(&env).await;
    for n in 10..20 {
        publish_one(&client, &server.base(), n)
            .await
            .expect("publish");
    }
    let bytes_before = status_of(&server.base()).await["log"].clone();
    server.child.kill().await.expect("SIGKILL");
    let server = spawn_binary(&env).await;
    let log = status_of(&server.base()).await["log"].clone();
    assert_eq!(
        log["retained"], bytes_before["retained"],
        "{log} vs {bytes_before}"
    );
    assert_eq!(
        log["oldest"], bytes_before["oldest"],
        "{log} vs {bytes_before}"
    );
    let retained = log["retained"].as_u64().expect("retained");
    assert!((1..10).contains(&retained), "{log}");
    assert!(
        log["retained_bytes"].as_u64().expect("bytes") <= 1024,
        "{log}"
    );
    assert_eq!(log["retain_bytes"], 1024, "{log}");
    server.terminate();
}

async fn status_of(base: &str) -> Value {
    reqwest::get(format!("{base}/v1/status"))
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON")
}

fn ids_of(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Starts the binary on `dir` and expects it to stop with exit status 1 and exactly one
/// error line that says `why`.
async fn refused_start(dir: &std::path::Path, why: &str) {
    let (code, _, stderr) = run_binary(
        &[
            ("SWITCHYARD_ADDR", "127.0.0.1:0"),
            ("SWITCHYARD_DATA_DIR", dir.to_str().expect("path")),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("switchyard: "))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(
        errors[0].contains(&format!("SWITCHYARD_DATA_DIR={}", dir.display()))
            && errors[0].contains(why),
        "expected {why:?}: {stderr}"
    );
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_used_stops_the_start_with_one_line() {
    let dir = Dir::new("bad");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    // Not a folder.
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"x").expect("write");
    refused_start(&file.join("log"), "cannot create the folder").await;
    // Another format.
    let other = dir.0.join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(other.join("meta.json"), br#"{"format":7,"epoch":"abc123"}"#).expect("meta");
    refused_start(
        &other,
        "holds a log of format 7; this switchyard reads format 1",
    )
    .await;
    // Held by another process.
    let held = dir.0.join("held");
    let server = spawn_binary(&[("SWITCHYARD_DATA_DIR", held.to_str().expect("path"))]).await;
    refused_start(&held, "another switchyard process is using this folder").await;
    server.terminate();
    // Both durable backends at once is a mistake, said at start.
    let (code, _, stderr) = run_binary(
        &[
            ("SWITCHYARD_ADDR", "127.0.0.1:0"),
            ("SWITCHYARD_DATA_DIR", dir.as_str()),
            ("SWITCHYARD_REDIS_URL", "redis://127.0.0.1:1/"),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not both"), "{stderr}");
}
