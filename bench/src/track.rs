//! What the subscribers count: the event payload (sequence number and send time), each
//! subscriber's view (seen, duplicates, order) and the counters shared by a process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use memchr::memmem;

/// Largest latency the histogram keeps exactly, microseconds (larger values saturate).
const MAX_LATENCY_US: u64 = 600_000_000;

/// Microseconds since the Unix epoch: the one clock shared by the publisher and every
/// subscriber process on this machine.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The data of event `n` sent at `t_us`, padded to about `size` bytes:
/// `{"n":12,"t":1700000000000000,"x":"xxxx"}`. The keys are in alphabetical order, so
/// they stay in this order when a server re-encodes the data with sorted keys (switchyard
/// stores `data` as a `serde_json::Value`, whose objects are sorted maps).
pub fn payload(n: u64, t_us: u64, size: usize) -> String {
    let mut s = format!("{{\"n\":{n},\"t\":{t_us},\"x\":\"");
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// Every `(n, t)` found in `buf`, in order. The payload is found by its opening
/// `{"n":`, which nothing else in a switchyard envelope or an Nchan message contains
/// (topics and types are chosen by the generator).
pub fn scan(buf: &[u8], mut each: impl FnMut(u64, u64)) {
    static FINDER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"{\"n\":"));
    let mut at = 0;
    while let Some(i) = FINDER.find(&buf[at..]) {
        let start = at + i + 5;
        match parse_nt(&buf[start..]) {
            Some((n, t, used)) => {
                each(n, t);
                at = start + used;
            }
            None => at = start,
        }
    }
}

/// Parses `12,"t":1700000000000000` → (n, t, bytes used).
fn parse_nt(buf: &[u8]) -> Option<(u64, u64, usize)> {
    let (n, a) = digits(buf)?;
    let rest = buf[a..].strip_prefix(b",\"t\":")?;
    let (t, b) = digits(rest)?;
    Some((n, t, a + 5 + b))
}

fn digits(buf: &[u8]) -> Option<(u64, usize)> {
    let len = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for b in &buf[..len] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, len))
}

/// One subscriber's view of the events: which arrived, in which order.
pub struct Tracker {
    seen: Vec<u64>,
    expected: u64,
    /// The latest event of each publisher (event n is publisher n mod P's): order is
    /// only defined among one publisher's events.
    last: Vec<Option<u64>>,
    /// Deliveries since the last flush.
    delivered: u64,
    unique: u64,
    dups: u64,
    ooo: u64,
    unexpected: u64,
    unexpected_max_us: u64,
    latencies: Vec<u64>,
    last_us: u64,
}

impl Tracker {
    /// A tracker for events 0..`expected` from `publishers` concurrent publishers.
    pub fn new(expected: u64, publishers: u64) -> Tracker {
        let words = usize::try_from(expected.div_ceil(64)).unwrap_or(0);
        Tracker {
            seen: vec![0; words],
            expected,
            last: vec![None; usize::try_from(publishers.max(1)).unwrap_or(1)],
            delivered: 0,
            unique: 0,
            dups: 0,
            ooo: 0,
            unexpected: 0,
            unexpected_max_us: 0,
            latencies: Vec::new(),
            last_us: 0,
        }
    }

    /// Event `n`, sent at `t_us`, received at `now_us`.
    pub fn record(&mut self, n: u64, t_us: u64, now_us: u64) {
        self.delivered += 1;
        self.last_us = now_us;
        if n >= self.expected {
            self.unexpected += 1;
            self.unexpected_max_us = self.unexpected_max_us.max(now_us.saturating_sub(t_us));
            return;
        }
        let (w, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if self.seen[w] & bit != 0 {
            self.dups += 1;
            return;
        }
        self.seen[w] |= bit;
        self.unique += 1;
        let publisher = (n % self.last.len() as u64) as usize;
        let last = &mut self.last[publisher];
        if last.is_some_and(|l| n < l) {
            self.ooo += 1;
        }
        *last = Some(n);
        self.latencies.push(now_us.saturating_sub(t_us).max(1));
    }

    /// Adds what was recorded since the last flush to the shared counters.
    pub fn flush(&mut self, shared: &Shared) {
        if self.delivered == 0 {
            return;
        }
        if !self.latencies.is_empty() {
            if let Ok(mut h) = shared.hist.lock() {
                for &l in &self.latencies {
                    h.saturating_record(l);
                }
            }
            self.latencies.clear();
        }
        let add = |c: &AtomicU64, v: &mut u64| {
            if *v > 0 {
                c.fetch_add(*v, Ordering::Relaxed);
                *v = 0;
            }
        };
        add(&shared.delivered, &mut self.delivered);
        add(&shared.unique, &mut self.unique);
        add(&shared.dups, &mut self.dups);
        add(&shared.ooo, &mut self.ooo);
        add(&shared.unexpected, &mut self.unexpected);
        shared.unexpected_max_us.fetch_max(
            std::mem::take(&mut self.unexpected_max_us),
            Ordering::Relaxed,
        );
        shared
            .last_delivery_us
            .fetch_max(self.last_us, Ordering::Relaxed);
    }
}

/// The counters of one process's subscribers.
pub struct Shared {
    /// Subscribers whose connection attempt has finished (connected or failed).
    pub attempted: AtomicU64,
    /// Subscribers that got their `ready` (or, where there is none, their response).
    pub connected: AtomicU64,
    /// Subscribers that failed to connect.
    pub failed: AtomicU64,
    /// Connected subscribers whose stream ended or broke during the run.
    pub disconnects: AtomicU64,
    /// Long-poll connections reopened after the server closed one between answers.
    pub reconnects: AtomicU64,
    /// Events received, duplicates included.
    pub delivered: AtomicU64,
    /// Distinct events received.
    pub unique: AtomicU64,
    /// Events received more than once.
    pub dups: AtomicU64,
    /// Events that arrived after one with a higher sequence number.
    pub ooo: AtomicU64,
    /// Payloads with a sequence number outside 0..M (another run on the same topic).
    pub unexpected: AtomicU64,
    /// Longest send-to-receipt time of those, microseconds (the background subscribers
    /// of a mixed run time the event with it).
    pub unexpected_max_us: AtomicU64,
    /// `reset` control messages (switchyard: history incomplete).
    pub resets: AtomicU64,
    /// When the last event arrived, microseconds since the epoch.
    pub last_delivery_us: AtomicU64,
    /// Latencies in microseconds.
    pub hist: Mutex<Histogram<u64>>,
    errors: Mutex<Vec<String>>,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

impl Shared {
    /// Zeroed counters and an empty histogram.
    pub fn new() -> Shared {
        Shared {
            attempted: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            ooo: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            unexpected_max_us: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            hist: Mutex::new(new_histogram()),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Keeps up to 8 distinct error messages as samples for the report.
    pub fn error(&self, what: String) {
        if let Ok(mut e) = self.errors.lock()
            && e.len() < 8
            && !e.contains(&what)
        {
            e.push(what);
        }
    }

    /// The counters now (`cpu_s` is filled by the caller).
    pub fn snapshot(&self) -> Snapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            attempted: l(&self.attempted),
            connected: l(&self.connected),
            failed: l(&self.failed),
            disconnects: l(&self.disconnects),
            reconnects: l(&self.reconnects),
            delivered: l(&self.delivered),
            unique: l(&self.unique),
            dups: l(&self.dups),
            ooo: l(&self.ooo),
            unexpected: l(&self.unexpected),
            unexpected_max_us: l(&self.unexpected_max_us),
            resets: l(&self.resets),
            last_delivery_us: l(&self.last_delivery_us),
            cpu_s: 0.0,
        }
    }

    /// The final figures: counters, histogram and error samples.
    pub fn result(&self, cpu_s: f64) -> PoolResult {
        let mut snapshot = self.snapshot();
        snapshot.cpu_s = cpu_s;
        let hist = self
            .hist
            .lock()
            .map(|h| hist_to_pairs(&h))
            .unwrap_or_default();
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        PoolResult {
            snapshot,
            hist,
            errors,
        }
    }
}

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
        Ok(h) => h,
        // Fixed, valid bounds (tested).
        Err(e) => panic!("histogram bounds: {e}"),
    }
}

/// The recorded values of a histogram as (value, count) pairs, to send between processes.
pub fn hist_to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs to a histogram.
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, c) in pairs {
        // Values come from our own children and fit the bounds; saturate anyway.
        if h.record_n(v.clamp(1, MAX_LATENCY_US), c).is_err() {
            continue;
        }
    }
}

/// Counters of one process's subscribers at a moment (sent by children as progress).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Connection attempts finished (connected + failed).
    pub attempted: u64,
    /// Connected subscribers.
    pub connected: u64,
    /// Failed connection attempts.
    pub failed: u64,
    /// Streams that ended during the run.
    pub disconnects: u64,
    /// Long-poll connections reopened.
    pub reconnects: u64,
    /// Events received, duplicates included.
    pub delivered: u64,
    /// Distinct events received.
    pub unique: u64,
    /// Duplicates.
    pub dups: u64,
    /// Out of order.
    pub ooo: u64,
    /// Sequence numbers outside the run's range.
    pub unexpected: u64,
    /// Longest send-to-receipt time of those, microseconds.
    #[serde(default)]
    pub unexpected_max_us: u64,
    /// Reset messages.
    pub resets: u64,
    /// Last delivery, microseconds since the epoch.
    pub last_delivery_us: u64,
    /// CPU seconds the process has used.
    pub cpu_s: f64,
}

impl Snapshot {
    /// Sums two processes' counters (latest delivery, summed CPU).
    pub fn merge(&mut self, o: &Snapshot) {
        self.attempted += o.attempted;
        self.connected += o.connected;
        self.failed += o.failed;
        self.disconnects += o.disconnects;
        self.reconnects += o.reconnects;
        self.delivered += o.delivered;
        self.unique += o.unique;
        self.dups += o.dups;
        self.ooo += o.ooo;
        self.unexpected += o.unexpected;
        self.unexpected_max_us = self.unexpected_max_us.max(o.unexpected_max_us);
        self.resets += o.resets;
        self.last_delivery_us = self.last_delivery_us.max(o.last_delivery_us);
        self.cpu_s += o.cpu_s;
    }
}

/// One process's final figures.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PoolResult {
    /// The counters.
    pub snapshot: Snapshot,
    /// Latency histogram as (microseconds, count) pairs.
    pub hist: Vec<(u64, u64)>,
    /// Sample error messages.
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let p = payload(42, 1_700_000_000_123_456, 100);
        assert_eq!(p.len(), 100);
        let v: serde_json::Value = serde_json::from_str(&p).expect("json");
        assert_eq!(v["n"], 42);
        let envelope = format!(
            "{{\"op\":\"event\",\"id\":\"ab-3\",\"topic\":\"t\",\"type\":\"bench\",\"data\":{p},\"ts\":\"x\"}}"
        );
        let mut got = vec![];
        scan(envelope.as_bytes(), |n, t| got.push((n, t)));
        assert_eq!(got, vec![(42, 1_700_000_000_123_456)]);
        // A small size still gives a valid payload.
        let small = payload(1, 2, 0);
        assert!(serde_json::from_str::<serde_json::Value>(&small).is_ok());
    }

    #[test]
    fn scan_many_and_garbage() {
        let body = br#"{"events":[{"data":{"n":1,"t":5,"x":""}},{"data":{"n":2,"t":6,"x":""}}],"y":{"n":,"t":1}"#;
        let mut got = vec![];
        scan(body, |n, t| got.push((n, t)));
        assert_eq!(got, vec![(1, 5), (2, 6)]);
        scan(b"{\"n\":99999999999999999999,\"t\":1}", |_, _| {
            panic!("overflow")
        });
    }

    #[test]
    fn tracker_counts() {
        let shared = Shared::new();
        let mut t = Tracker::new(4, 1);
        t.record(0, 10, 20);
        t.record(2, 10, 20);
        t.record(1, 10, 20); // out of order
        t.record(1, 10, 20); // duplicate
        t.record(7, 10, 20); // unexpected, 10 µs on the way
        t.record(9, 10, 45); // unexpected, 35 µs
        t.flush(&shared);
        let s = shared.snapshot();
        assert_eq!(
            (s.delivered, s.unique, s.ooo, s.dups, s.unexpected),
            (6, 3, 1, 1, 2)
        );
        assert_eq!(s.unexpected_max_us, 35, "slowest unexpected event");
        let r = shared.result(0.0);
        let mut h = new_histogram();
        add_pairs(&mut h, &r.hist);
        assert_eq!(h.len(), 3);
        assert_eq!(h.max(), 10);
    }

    #[test]
    fn order_is_per_publisher() {
        let shared = Shared::new();
        // Two publishers: 0, 2, 4 are the first's, 1, 3, 5 the second's.
        let mut t = Tracker::new(6, 2);
        for n in [1, 0, 3, 2, 5, 4] {
            t.record(n, 10, 20); // interleaved differently, each in its own order
        }
        t.record(3, 10, 20); // a duplicate is still one
        t.flush(&shared);
        let s = shared.snapshot();
        assert_eq!((s.unique, s.ooo, s.dups), (6, 0, 1));
        let mut t = Tracker::new(6, 2);
        for n in [0, 4, 2] {
            t.record(n, 10, 20); // the first publisher's 2 after its 4
        }
        let shared = Shared::new();
        t.flush(&shared);
        assert_eq!(shared.snapshot().ooo, 1);
    }
}
