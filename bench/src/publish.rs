//! The publishers: M events at a set rate or as fast as answers come back, from one or
//! several publishers. Each publisher has its own keep-alive connection and sends its
//! events one request after another, so that the server's order of one publisher's
//! events is their sequence order; publisher k of P sends events k, k + P, k + 2P, ….

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use tokio::time::Instant;

use crate::Error;
use crate::args::Flavor;
use crate::net::{self, Target};
use crate::track::{now_us, payload};

/// What the publisher needs.
#[derive(Debug, Clone)]
pub struct PubConfig {
    /// Where to publish.
    pub target: Target,
    /// Which API.
    pub flavor: Flavor,
    /// The topic.
    pub topic: String,
    /// Events to publish.
    pub events: u64,
    /// Events per second, 0 = as fast as possible.
    pub rate: u64,
    /// Most events per request (1 when there are several publishers).
    pub batch: u64,
    /// Concurrent publishers, one connection each.
    pub publishers: u64,
    /// Data size of each event.
    pub payload_bytes: usize,
    /// switchyard's publish key, if the server requires one.
    pub key: Option<String>,
    /// Stop publishing at this moment.
    pub deadline: Instant,
}

/// What the publisher achieved.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PubResult {
    /// Events the server accepted.
    pub accepted: u64,
    /// Events in requests that failed.
    pub failed: u64,
    /// Requests sent.
    pub requests: u64,
    /// First request sent, microseconds since the epoch.
    pub first_send_us: u64,
    /// Last answer received, microseconds since the epoch.
    pub last_answer_us: u64,
    /// Sample errors.
    pub errors: Vec<String>,
}

/// Longest one publish request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs [`publish`] on a thread of its own with its own single-thread runtime, so that
/// the publisher is not queued behind thousands of busy subscriber tasks: the publish
/// rate then shows how fast the server accepts, not how busy the generator is.
pub fn spawn_thread(
    cfg: PubConfig,
    progress: Arc<AtomicU64>,
) -> Result<std::thread::JoinHandle<PubResult>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || runtime.block_on(publish_all(cfg, progress)))
        .map_err(|e| Error::new(format!("cannot start the publisher thread: {e}")))
}

/// Publishes `cfg.events` events from `cfg.publishers` concurrent publishers (tasks of
/// this thread, each with its own connection); `progress` counts the accepted ones.
pub async fn publish_all(cfg: PubConfig, progress: Arc<AtomicU64>) -> PubResult {
    let publishers = cfg.publishers.max(1);
    if publishers == 1 {
        return publish(cfg, 0, progress).await;
    }
    let tasks: Vec<_> = (0..publishers)
        .map(|k| tokio::spawn(publish(cfg.clone(), k, progress.clone())))
        .collect();
    let mut out = PubResult::default();
    for task in tasks {
        match task.await {
            Ok(r) => out.merge(r),
            Err(e) => out.errors.push(format!("a publisher failed: {e}")),
        }
    }
    out
}

impl PubResult {
    /// Adds another publisher's result (first send: the earliest; last answer: the
    /// latest).
    fn merge(&mut self, o: PubResult) {
        self.accepted += o.accepted;
        self.failed += o.failed;
        self.requests += o.requests;
        self.first_send_us = match (self.first_send_us, o.first_send_us) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last_answer_us = self.last_answer_us.max(o.last_answer_us);
        for e in o.errors {
            if self.errors.len() < 8 {
                self.errors.push(e);
            }
        }
    }
}

/// Publisher `k` of `cfg.publishers`: its events `k, k + P, …` below `cfg.events`, at
/// its share of the rate.
pub async fn publish(cfg: PubConfig, k: u64, progress: Arc<AtomicU64>) -> PubResult {
    let p = cfg.publishers.max(1);
    // This publisher's events and rate; `next` counts its own events.
    let events = if k < cfg.events {
        (cfg.events - k - 1) / p + 1
    } else {
        0
    };
    let rate = cfg.rate as f64 / p as f64;
    let batch = if p > 1 { 1 } else { cfg.batch };
    let mut out = PubResult::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let start = Instant::now();
    let mut next = 0u64;
    let mut failures_in_a_row = 0u32;
    while next < events {
        if Instant::now() >= cfg.deadline {
            out.errors.push("run timeout: publishing stopped".into());
            break;
        }
        let due = if cfg.rate == 0 {
            events
        } else {
            let elapsed = start.elapsed().as_secs_f64();
            ((elapsed * rate) as u64 + 1).min(events)
        };
        if due <= next {
            let at = start + Duration::from_secs_f64(next as f64 / rate);
            tokio::time::sleep_until(at.min(cfg.deadline)).await;
            continue;
        }
        let count = (due - next).min(batch);
        let t = now_us();
        if out.first_send_us == 0 {
            out.first_send_us = t;
        }
        // With one publisher `next` is the sequence number; with several, count is 1.
        let req = request(&cfg, k + next * p, count, t);
        out.requests += 1;
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, send(&cfg.target, &mut conn, req))
            .await
            .unwrap_or_else(|_| Err(Error::new("no answer within 30 s")));
        match sent {
            Ok(()) => {
                out.accepted += count;
                progress.fetch_add(count, Ordering::Relaxed);
                failures_in_a_row = 0;
            }
            Err(e) => {
                out.failed += count;
                failures_in_a_row += 1;
                if out.errors.len() < 8 {
                    out.errors.push(format!("publish: {e}"));
                }
                conn = None;
                if failures_in_a_row >= 10 {
                    out.errors
                        .push("10 publish failures in a row: gave up".into());
                    out.failed += events - next - count;
                    break;
                }
            }
        }
        out.last_answer_us = now_us();
        next += count;
    }
    out
}

/// The request for events `from..from + count`, sent at `t_us`.
fn request(
    cfg: &PubConfig,
    from: u64,
    count: u64,
    t_us: u64,
) -> Result<Request<Full<Bytes>>, Error> {
    let (path, body) = match cfg.flavor {
        Flavor::Switchyard => {
            let mut body = String::with_capacity(count as usize * (cfg.payload_bytes + 64) + 2);
            body.push('[');
            for n in from..from + count {
                if n > from {
                    body.push(',');
                }
                let _ = write!(
                    body,
                    "{{\"topic\":\"{}\",\"type\":\"bench\",\"data\":{}}}",
                    cfg.topic,
                    payload(n, t_us, cfg.payload_bytes)
                );
            }
            body.push(']');
            (format!("{}/v1/events", cfg.target.prefix), body)
        }
        // Nchan and the Socket.IO peer: one raw message per request.
        Flavor::Nchan | Flavor::SocketIo => (
            format!("{}/pub/{}", cfg.target.prefix, cfg.topic),
            payload(from, t_us, cfg.payload_bytes),
        ),
    };
    let mut req = Request::post(path)
        .header(HOST, cfg.target.authority.as_str())
        .header(CONTENT_TYPE, "application/json");
    if let Some(key) = &cfg.key {
        req = req.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    req.body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::new(format!("request: {e}")))
}

async fn send(
    target: &Target,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    req: Result<Request<Full<Bytes>>, Error>,
) -> Result<(), Error> {
    let req = req?;
    let alive = match conn.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !alive {
        let stream = net::connect(target.addr, None).await?;
        let (s, c) = net::http1::<Full<Bytes>>(stream).await?;
        tokio::spawn(c);
        *conn = Some(s);
    }
    let sender = conn
        .as_mut()
        .ok_or_else(|| Error::new("no publish connection"))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    // switchyard answers 201; Nchan 201 (subscribers present) or 202 (none).
    if matches!(
        status,
        StatusCode::OK | StatusCode::CREATED | StatusCode::ACCEPTED
    ) {
        Ok(())
    } else {
        Err(Error::new(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batch_body_is_json() {
        let cfg = PubConfig {
            target: Target::resolve("http://127.0.0.1:1/p").await.expect("url"),
            flavor: Flavor::Switchyard,
            topic: "t".into(),
            events: 10,
            rate: 0,
            batch: 3,
            publishers: 1,
            payload_bytes: 50,
            key: Some("k".into()),
            deadline: Instant::now(),
        };
        let req = request(&cfg, 4, 3, 99).expect("request");
        assert_eq!(req.uri().path(), "/p/v1/events");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer k");
        let body = req.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let ns: Vec<u64> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|e| e["data"]["n"].as_u64().expect("n"))
            .collect();
        assert_eq!(ns, [4, 5, 6]);
        assert_eq!(v[0]["data"]["t"], 99);
        assert_eq!(v[0]["topic"], "t");
    }
}
