//! switchyard-bench: a load generator for switchyard (and nginx+Nchan, for comparison).
//!
//! [`run`] opens N subscribers over one transport, publishes M events that carry their
//! sequence number and send time, and returns a [`Report`]: completeness, latency,
//! throughput, and the server's memory and CPU from /proc.
//!
//! ```text
//! args.rs     the command line
//! net.rs      URL, TCP with a source address, hyper HTTP/1.1
//! stream.rs   SSE and WebSocket streams read straight off the socket
//! sub.rs      one subscriber: WebSocket, SSE, long-poll (switchyard or Nchan)
//! publish.rs  the publishers (one event per request, or batches for switchyard)
//! track.rs    payload, per-subscriber tracking, shared counters, histograms
//! pool.rs     subscribers in this process, or spread over child processes
//! procfs.rs   RSS, Pss and CPU of a process tree; load average
//! report.rs   the report and its summary
//! bare.rs     a bare fan-out server: the floor of a broadcast (switchyard-bare)
//! ```

pub mod args;
pub mod bare;
pub mod net;
pub mod pool;
pub mod procfs;
pub mod publish;
pub mod report;
pub mod stream;
pub mod sub;
pub mod track;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::Instant;

pub use crate::args::{Args, Flavor, Transport};
use crate::net::Target;
use crate::pool::{LocalPool, RemotePool};
use crate::procfs::TreeSample;
pub use crate::report::Report;
use crate::report::{Latency, ServerFigures};
use crate::sub::SubConfig;
use crate::track::{PoolResult, Snapshot, add_pairs, new_histogram, now_us};

/// An error that ends a run (or one subscriber's stream), with a readable message.
#[derive(Debug, Clone)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Error {
        Error(msg.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error(e.to_string())
    }
}

impl From<hyper::Error> for Error {
    fn from(e: hyper::Error) -> Error {
        Error(format!("http: {e}"))
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Error {
        Error(format!("websocket: {e}"))
    }
}

/// Raises the soft open-file limit to the hard one (each subscriber holds a socket).
pub fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The topic of a run: `--topic`, or a fresh `bench-<pid>-<unix ms>`.
fn topic_of(args: &Args) -> Result<String, Error> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}-{}", std::process::id(), now_us() / 1000));
    args.check().map_err(Error::new)?;
    if !args::valid_topic(&topic) {
        return Err(Error::new(format!(
            "topic {topic:?}: use 1-200 of A-Z a-z 0-9 . _ - : /"
        )));
    }
    Ok(topic)
}

/// The subscribers' configuration; with several URLs, the first one's target (each
/// child process is given its own URL).
async fn sub_config(args: &Args, topic: &str) -> Result<SubConfig, Error> {
    let url = args
        .urls()
        .first()
        .copied()
        .ok_or_else(|| Error::new("--url is empty"))?;
    Ok(SubConfig {
        target: Target::resolve(url).await?,
        flavor: args.server,
        transport: args.transport,
        topic: topic.to_owned(),
        events: args.events,
        publishers: args.publishers,
        source: args.source_ip.map(std::net::IpAddr::V4),
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        poll_timeout: args.poll_timeout,
    })
}

/// Runs a child's share of the subscribers (the hidden `--child` mode).
pub async fn run_child(args: Args) -> Result<(), Error> {
    raise_open_files();
    let topic = topic_of(&args)?;
    let cfg = sub_config(&args, &topic).await?;
    pool::child_main(cfg, &args).await
}

enum Pool {
    Local(LocalPool),
    Remote(RemotePool),
}

impl Pool {
    fn snapshot(&self) -> Snapshot {
        match self {
            Pool::Local(p) => p.snapshot(),
            Pool::Remote(p) => p.snapshot(),
        }
    }

    fn ramp_done(&self) -> bool {
        match self {
            Pool::Local(p) => p.snapshot().attempted >= p.subscribers,
            Pool::Remote(p) => p.ramp_done(),
        }
    }

    async fn stop(self) -> Vec<PoolResult> {
        match self {
            Pool::Local(p) => vec![p.stop().await],
            Pool::Remote(p) => p.stop().await,
        }
    }
}

fn sample(pid: Option<u32>) -> TreeSample {
    pid.and_then(procfs::sample_tree).unwrap_or_default()
}

/// Sleeps until `at`, but not past the run's deadline; false when the deadline came.
async fn sleep_within(at: Instant, deadline: Instant) -> bool {
    tokio::time::sleep_until(at.min(deadline)).await;
    at <= deadline
}

/// Runs one scenario and returns its report. Progress goes to stderr unless `quiet`.
pub async fn run(args: Args) -> Result<Report, Error> {
    let started = Instant::now();
    let started_unix_s = now_us() / 1_000_000;
    let deadline = started + Duration::from_secs(args.timeout.max(1));
    let topic = topic_of(&args)?;
    if args.subscribers == 0 {
        return Err(Error::new("--subscribers must be at least 1"));
    }
    let cfg = sub_config(&args, &topic).await?;
    let pub_target = match &args.publish_url {
        Some(u) => Target::resolve(u).await?,
        None => cfg.target.clone(),
    };
    if let Some(pid) = args.server_pid
        && procfs::sample_tree(pid).is_none()
    {
        return Err(Error::new(format!("--server-pid {pid}: no such process")));
    }
    let progress = !args.quiet;
    let procs = args.effective_procs();

    let server_idle = sample(args.server_pid);
    let self_cpu0 = procfs::self_cpu_s();
    let mut timed_out = false;

    // Ramp.
    let pool = if procs <= 1 {
        let limit = raise_open_files();
        if limit > 0 && args.subscribers + 64 > limit {
            eprintln!(
                "switchyard-bench: {} subscribers in one process but the open-file limit is {limit}: use --procs",
                args.subscribers
            );
        }
        Pool::Local(LocalPool::start(
            cfg.clone(),
            args.subscribers,
            args.ramp_per_sec,
            args.max_pending,
        ))
    } else {
        Pool::Remote(RemotePool::spawn(
            &args,
            procs,
            &topic,
            cfg.target.is_loopback(),
        )?)
    };
    let ramp_start = Instant::now();
    let mut last_print = Instant::now();
    while !pool.ramp_done() {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let s = pool.snapshot();
            eprintln!(
                "connected {}/{} (failures {})",
                s.connected, args.subscribers, s.failed
            );
        }
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    if progress {
        let s = pool.snapshot();
        eprintln!(
            "connected {}/{} (failures {}) in {ramp_s:.2} s",
            s.connected, args.subscribers, s.failed
        );
    }

    // Memory once the connections have settled, then the hold.
    if !timed_out {
        timed_out = !sleep_within(Instant::now() + Duration::from_secs(1), deadline).await;
    }
    let server_connected = sample(args.server_pid);
    if args.hold > 0 && !timed_out {
        if progress {
            eprintln!("holding {} s", args.hold);
        }
        timed_out = !sleep_within(Instant::now() + Duration::from_secs(args.hold), deadline).await;
    }

    // Publish and wait for the deliveries.
    let server_pub0 = sample(args.server_pid);
    let gen_pub0 = generator_cpu(&pool, procs);
    let mut pub_result = publish::PubResult::default();
    if args.events > 0 && !timed_out {
        let published = Arc::new(AtomicU64::new(0));
        let publisher = publish::spawn_thread(
            publish::PubConfig {
                target: pub_target,
                flavor: args.server,
                topic: topic.clone(),
                events: args.events,
                rate: args.rate,
                batch: args.effective_batch(),
                publishers: args.publishers,
                payload_bytes: args.payload_bytes,
                key: args.publish_key.clone(),
                deadline,
            },
            published.clone(),
        )?;
        let mut publisher = Some(publisher);
        let settle = Duration::from_secs(args.settle.max(1));
        let mut last_unique = 0;
        let mut last_change = Instant::now();
        let mut last_print = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(p) = &publisher
                && p.is_finished()
                && let Some(p) = publisher.take()
            {
                pub_result = p
                    .join()
                    .map_err(|_| Error::new("the publisher thread panicked"))?;
            }
            let s = pool.snapshot();
            if s.unique != last_unique {
                last_unique = s.unique;
                last_change = Instant::now();
            }
            if progress && last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!(
                    "published {}/{}, delivered {}/{}",
                    published.load(std::sync::atomic::Ordering::Relaxed),
                    args.events,
                    s.unique,
                    s.connected * args.events
                );
            }
            if publisher.is_none() {
                let done = s.unique >= s.connected * pub_result.accepted
                    && s.attempted >= args.subscribers;
                if done || last_change.elapsed() >= settle {
                    break;
                }
            }
            if Instant::now() >= deadline {
                // The publisher stops by itself at the deadline (it has it too).
                timed_out = true;
                break;
            }
        }
    }
    let server_end = sample(args.server_pid);
    let gen_end = generator_cpu(&pool, procs);
    let loadavg = procfs::loadavg();
    let results = pool.stop().await;

    // Merge.
    let mut total = Snapshot::default();
    let mut hist = new_histogram();
    let mut errors = Vec::new();
    for r in &results {
        total.merge(&r.snapshot);
        add_pairs(&mut hist, &r.hist);
        for e in &r.errors {
            if errors.len() < 12 && !errors.contains(e) {
                errors.push(e.clone());
            }
        }
    }
    errors.extend(pub_result.errors.iter().cloned());
    // The children's CPU is in their results; ours is measured here.
    let own_cpu = procfs::self_cpu_s() - self_cpu0;
    let generator_cpu_s = if procs <= 1 {
        own_cpu
    } else {
        own_cpu + results.iter().map(|r| r.snapshot.cpu_s).sum::<f64>()
    };

    let expected = args.subscribers * args.events;
    let first_pub = pub_result.first_send_us;
    let delivery_window_s = if first_pub > 0 && total.last_delivery_us > first_pub {
        (total.last_delivery_us - first_pub) as f64 / 1e6
    } else {
        0.0
    };
    let publish_s = if pub_result.last_answer_us > first_pub && first_pub > 0 {
        (pub_result.last_answer_us - first_pub) as f64 / 1e6
    } else {
        0.0
    };
    let per_conn = |a: u64, b: u64| {
        (total.connected > 0).then(|| (b as f64 - a as f64) / total.connected as f64)
    };
    let server_figures = args.server_pid.map(|pid| ServerFigures {
        pid,
        idle: server_idle,
        connected: server_connected,
        end: server_end,
        rss_bytes_per_connection: per_conn(server_idle.rss_bytes, server_connected.rss_bytes),
        pss_bytes_per_connection: (server_connected.pss_bytes > 0)
            .then(|| per_conn(server_idle.pss_bytes, server_connected.pss_bytes))
            .flatten(),
        cpu_s: server_end.cpu_s - server_idle.cpu_s,
        cpu_delivery_s: server_end.cpu_s - server_pub0.cpu_s,
    });
    let missing = expected.saturating_sub(total.unique);
    Ok(Report {
        server: args.server.name().into(),
        transport: args.transport.name().into(),
        url: args.url.clone(),
        topic,
        started_unix_s,
        subscribers: args.subscribers,
        events: args.events,
        rate: args.rate,
        batch: args.effective_batch(),
        publishers: args.publishers,
        payload_bytes: args.payload_bytes,
        procs,
        threads: args.threads,
        connected: total.connected,
        connect_failures: total.failed,
        ramp_s,
        disconnects: total.disconnects,
        reconnects: total.reconnects,
        expected,
        delivered: total.delivered,
        delivered_unique: total.unique,
        missing,
        duplicated: total.dups,
        out_of_order: total.ooo,
        unexpected: total.unexpected,
        unexpected_max_latency_ms: total.unexpected_max_us as f64 / 1000.0,
        resets: total.resets,
        complete: total.failed == 0
            && total.connected == args.subscribers
            && missing == 0
            && total.dups == 0
            && total.ooo == 0
            && !timed_out,
        latency: Latency::from_histogram(&hist),
        published: pub_result.accepted,
        publish_failed: pub_result.failed,
        publish_requests: pub_result.requests,
        publish_s,
        publish_rate: if publish_s > 0.0 {
            pub_result.accepted as f64 / publish_s
        } else {
            0.0
        },
        delivery_window_s,
        deliveries_per_s: if delivery_window_s > 0.0 {
            total.delivered as f64 / delivery_window_s
        } else {
            0.0
        },
        server_figures,
        generator_cpu_s,
        generator_cpu_delivery_s: gen_end - gen_pub0,
        loadavg,
        timed_out,
        duration_s: started.elapsed().as_secs_f64(),
        errors,
    })
}

/// CPU seconds of the generator now: this process, plus the children's latest figures.
fn generator_cpu(pool: &Pool, procs: u32) -> f64 {
    let own = procfs::self_cpu_s();
    if procs <= 1 {
        own
    } else {
        own + pool.snapshot().cpu_s
    }
}
