//! The report: every figure of a run, as JSON and as a readable summary.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::procfs::TreeSample;

/// Latency percentiles in milliseconds (from the send time in the payload to the moment
/// the subscriber had parsed it).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Events measured (distinct deliveries).
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Reads the percentiles of a histogram in microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// The server's memory at the moments of the run (summed over its process tree).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServerFigures {
    /// Its PID.
    pub pid: u32,
    /// Before any subscriber connected.
    pub idle: TreeSample,
    /// After the ramp (and a second to settle).
    pub connected: TreeSample,
    /// At the end of the run (after --hold, or after the deliveries).
    pub end: TreeSample,
    /// (connected − idle) RSS / connected subscribers.
    pub rss_bytes_per_connection: Option<f64>,
    /// (connected − idle) Pss / connected subscribers.
    pub pss_bytes_per_connection: Option<f64>,
    /// CPU seconds over the whole run (ramp included).
    pub cpu_s: f64,
    /// CPU seconds from the first publish to the end of the deliveries.
    pub cpu_delivery_s: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// `switchyard` or `nchan`.
    pub server: String,
    /// `ws`, `sse` or `longpoll`.
    pub transport: String,
    /// Subscriber URL base.
    pub url: String,
    /// The topic used.
    pub topic: String,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Subscribers asked for (N).
    pub subscribers: u64,
    /// Events asked for (M).
    pub events: u64,
    /// Requested publish rate (0 = as fast as possible).
    pub rate: u64,
    /// Events per publish request.
    pub batch: u64,
    /// Concurrent publishers (one connection each).
    pub publishers: u64,
    /// Event data size.
    pub payload_bytes: usize,
    /// Subscriber processes.
    pub procs: u32,
    /// Runtime threads per process.
    pub threads: u32,

    /// Subscribers that connected.
    pub connected: u64,
    /// Subscribers that failed to connect.
    pub connect_failures: u64,
    /// Seconds from the first connection attempt until every attempt had finished.
    pub ramp_s: f64,
    /// Connected streams that ended during the run.
    pub disconnects: u64,
    /// Long-poll connections reopened after the server closed them between answers.
    pub reconnects: u64,

    /// N × M.
    pub expected: u64,
    /// Events received (duplicates included).
    pub delivered: u64,
    /// Distinct events received.
    pub delivered_unique: u64,
    /// expected − distinct deliveries (subscribers that failed to connect count too).
    pub missing: u64,
    /// Events received more than once by the same subscriber.
    pub duplicated: u64,
    /// Events that arrived after one with a higher sequence number.
    pub out_of_order: u64,
    /// Payloads with a sequence number outside the run (another run on the topic).
    pub unexpected: u64,
    /// Longest time from an unexpected event's send time to its receipt, ms: how long the
    /// event of another run on the topic took to reach these subscribers (the background
    /// half of a mixed run).
    #[serde(default)]
    pub unexpected_max_latency_ms: f64,
    /// `reset` messages received.
    pub resets: u64,
    /// Whether every subscriber connected and got every event once, in order.
    pub complete: bool,

    /// Latency percentiles.
    pub latency: Latency,
    /// Events the server accepted.
    pub published: u64,
    /// Events in failed publish requests.
    pub publish_failed: u64,
    /// Publish requests sent.
    pub publish_requests: u64,
    /// Seconds from the first publish request to the last answer.
    pub publish_s: f64,
    /// Events accepted per second over `publish_s`.
    pub publish_rate: f64,
    /// Seconds from the first publish to the last delivery.
    pub delivery_window_s: f64,
    /// Deliveries (duplicates included) per second over `delivery_window_s`.
    pub deliveries_per_s: f64,

    /// Server memory and CPU, when --server-pid was given.
    pub server_figures: Option<ServerFigures>,
    /// CPU seconds of the generator (all its processes) over the whole run.
    pub generator_cpu_s: f64,
    /// CPU seconds of the generator from the first publish to the end of the deliveries.
    pub generator_cpu_delivery_s: f64,
    /// 1, 5 and 15 minute load averages at the end.
    pub loadavg: [f64; 3],
    /// Whether the run hit --timeout.
    pub timed_out: bool,
    /// Seconds the whole run took.
    pub duration_s: f64,
    /// Sample errors (connect failures, disconnects, publish errors).
    pub errors: Vec<String>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Report {
    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "switchyard-bench: {} over {} — {} subscribers × {} events ({} B, rate {}, batch {}, {} publisher(s)), {} proc(s)",
            self.server,
            self.transport,
            self.subscribers,
            self.events,
            self.payload_bytes,
            if self.rate == 0 {
                "max".to_string()
            } else {
                format!("{}/s", self.rate)
            },
            self.batch,
            self.publishers,
            self.procs
        );
        let _ = writeln!(
            s,
            "  connections   {} connected, {} failed, ramp {:.2} s, {} disconnected, {} long-poll reconnects",
            self.connected, self.connect_failures, self.ramp_s, self.disconnects, self.reconnects
        );
        if self.events > 0 {
            let _ = writeln!(
                s,
                "  delivery      {} / {} expected ({} distinct): {} missing, {} duplicated, {} out of order, {} resets{}",
                self.delivered,
                self.expected,
                self.delivered_unique,
                self.missing,
                self.duplicated,
                self.out_of_order,
                self.resets,
                if self.complete {
                    " — complete"
                } else {
                    " — INCOMPLETE"
                }
            );
            let l = &self.latency;
            let _ = writeln!(
                s,
                "  latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2})",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
            );
            let _ = writeln!(
                s,
                "  throughput    {:.0} deliveries/s over {:.3} s; published {} in {:.3} s = {:.0} events/s ({} requests, {} failed events)",
                self.deliveries_per_s,
                self.delivery_window_s,
                self.published,
                self.publish_s,
                self.publish_rate,
                self.publish_requests,
                self.publish_failed
            );
        }
        if self.unexpected > 0 {
            let _ = writeln!(
                s,
                "  other runs    {} events of another run on the topic, the slowest {:.2} ms after it was sent",
                self.unexpected, self.unexpected_max_latency_ms
            );
        }
        if let Some(f) = &self.server_figures {
            let per = |v: Option<f64>| v.map_or("-".to_string(), |b| format!("{b:.0} B"));
            let _ = writeln!(
                s,
                "  server memory RSS idle {:.1} MiB → connected {:.1} MiB → end {:.1} MiB ({} process(es)); per connection {} RSS, {} Pss",
                mib(f.idle.rss_bytes),
                mib(f.connected.rss_bytes),
                mib(f.end.rss_bytes),
                f.connected.processes,
                per(f.rss_bytes_per_connection),
                per(f.pss_bytes_per_connection)
            );
            let _ = writeln!(
                s,
                "  cpu s         server {:.2} (delivery {:.2}), generator {:.2} (delivery {:.2})",
                f.cpu_s, f.cpu_delivery_s, self.generator_cpu_s, self.generator_cpu_delivery_s
            );
        } else {
            let _ = writeln!(
                s,
                "  cpu s         generator {:.2} (delivery {:.2}); server not measured (no --server-pid)",
                self.generator_cpu_s, self.generator_cpu_delivery_s
            );
        }
        let _ = writeln!(
            s,
            "  load average  {:.2} {:.2} {:.2}; run took {:.1} s{}",
            self.loadavg[0],
            self.loadavg[1],
            self.loadavg[2],
            self.duration_s,
            if self.timed_out { " — TIMED OUT" } else { "" }
        );
        for e in &self.errors {
            let _ = writeln!(s, "  error         {e}");
        }
        s
    }
}
