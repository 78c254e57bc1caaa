//! The in-memory log: the default backend, lost when the process ends.
//!
//! One `std` mutex guards the retained events for a few lines at a time (an append, or
//! the copy of at most a batch of pointers); it is never held across `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, ready};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::watch;

use super::{AppendError, Head, Log, LogCounters, LogStats, ReadError, cursor};
use crate::event::{Event, NewEvent};

/// Retention limits of a [`MemoryLog`].
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Most events kept (`SWITCHYARD_RETAIN`, default 10,000).
    pub retain: usize,
    /// Oldest event kept (`SWITCHYARD_RETAIN_AGE`, default 1 h).
    pub retain_age: Duration,
    /// Most bytes kept (`SWITCHYARD_RETAIN_BYTES`, default 256 MiB), counted as
    /// [`held_bytes`]. The newest event is kept whatever its size.
    pub retain_bytes: u64,
}

/// The bytes an event holds in memory: its three encodings.
pub fn held_bytes(event: &Event) -> u64 {
    (event.json.len() + event.sse.len() + event.ws_frame.len() + event.id.len()) as u64
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            retain: 10_000,
            retain_age: Duration::from_secs(3600),
            retain_bytes: 256 << 20,
        }
    }
}

/// A log held in this process, with a fresh random epoch.
pub struct MemoryLog {
    epoch: Box<str>,
    config: MemoryConfig,
    state: Mutex<State>,
    counters: LogCounters,
}

struct State {
    /// Retained events with the instant they were received, oldest first.
    entries: VecDeque<(Instant, Arc<Event>)>,
    /// [`held_bytes`] of `entries`.
    bytes: u64,
    /// Sequence number the next event gets. Starts at 1.
    next_seq: u64,
    /// The head's watchers; `None` once closed.
    head_tx: Option<watch::Sender<Head>>,
}

impl State {
    fn head(&self) -> u64 {
        self.next_seq - 1
    }

    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |(_, e)| e.seq)
    }

    fn evict(&mut self, config: &MemoryConfig, now: Instant) {
        while let Some((at, event)) = self.entries.front() {
            let over = self.entries.len() > config.retain
                || (self.bytes > config.retain_bytes && self.entries.len() > 1)
                || now.saturating_duration_since(*at) > config.retain_age;
            if !over {
                break;
            }
            self.bytes -= held_bytes(event);
            self.entries.pop_front();
        }
    }

    fn push(&mut self, at: Instant, event: Arc<Event>) {
        self.bytes += held_bytes(&event);
        self.next_seq = event.seq + 1;
        self.entries.push_back((at, event));
    }

    fn after(&self, pos: u64, max: usize) -> Result<Vec<Arc<Event>>, ReadError> {
        let first = self.first_seq();
        if pos + 1 < first {
            return Err(ReadError::Expired { first });
        }
        let start = ((pos + 1 - first) as usize).min(self.entries.len());
        let end = start.saturating_add(max).min(self.entries.len());
        Ok(self
            .entries
            .range(start..end)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl MemoryLog {
    /// An empty log with a fresh random epoch.
    pub fn new(config: MemoryConfig) -> MemoryLog {
        MemoryLog::with_epoch(new_epoch(), 0, config)
    }

    /// An empty log of `epoch` whose head is `head` (the next event gets `head + 1`).
    pub fn with_epoch(epoch: String, head: u64, config: MemoryConfig) -> MemoryLog {
        MemoryLog {
            epoch: epoch.into_boxed_str(),
            config,
            state: Mutex::new(State {
                entries: VecDeque::new(),
                bytes: 0,
                next_seq: head + 1,
                head_tx: Some(watch::Sender::new(Head {
                    seq: head,
                    events: Arc::from([]),
                    appended: None,
                })),
            }),
            counters: LogCounters::default(),
        }
    }

    /// The same log counting into `counters` (a backend that replaces its in-memory copy
    /// keeps one set of counters).
    pub fn with_counters(mut self, counters: LogCounters) -> MemoryLog {
        self.counters = counters;
        self
    }

    /// Takes in events read back from storage (at start, before any reader), each with
    /// when it was received; the retention limits apply as usual.
    pub fn restore(&self, events: impl IntoIterator<Item = (Instant, Arc<Event>)>) {
        let mut state = self.lock();
        for (at, event) in events {
            state.push(at, event);
            state.evict(&self.config, Instant::now());
        }
        let head = state.head();
        if let Some(head_tx) = &state.head_tx {
            head_tx.send_replace(Head {
                seq: head,
                events: Arc::from([]),
                appended: None,
            });
        }
    }

    /// Sequence number of the oldest retained event (the head + 1 when none is).
    pub fn first_seq(&self) -> u64 {
        self.lock().first_seq()
    }

    /// Takes in events encoded elsewhere (a durable backend that stored them first),
    /// numbered from the head on, and wakes the watchers.
    pub fn insert(&self, events: &[Arc<Event>]) {
        let now = Instant::now();
        let mut state = self.lock();
        for event in events {
            debug_assert_eq!(event.seq, state.next_seq, "inserts follow the head");
            state.push(now, event.clone());
        }
        state.evict(&self.config, now);
        if let Some(head_tx) = &state.head_tx {
            head_tx.send_replace(Head {
                seq: state.head(),
                events: events.into(),
                appended: Some(now),
            });
        }
        drop(state);
        self.counters.published.inc_by(events.len() as u64);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is a single push/pop, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends, synchronously: encoding happens here, once per event.
    fn append_now(&self, events: Vec<NewEvent>) -> Vec<Arc<Event>> {
        let received = SystemTime::now();
        let now = Instant::now();
        let mut out = Vec::with_capacity(events.len());
        let mut state = self.lock();
        for new in events {
            let event = Arc::new(encode(&self.epoch, state.next_seq, new, received));
            state.push(now, event.clone());
            out.push(event);
        }
        state.evict(&self.config, now);
        if let Some(head_tx) = &state.head_tx {
            head_tx.send_replace(Head {
                seq: state.head(),
                events: out.as_slice().into(),
                appended: Some(now),
            });
        }
        drop(state);
        self.counters.published.inc_by(out.len() as u64);
        out
    }

    /// The retained events with when each was received, oldest first (to carry them into
    /// a new copy).
    pub fn retained(&self) -> Vec<(Instant, Arc<Event>)> {
        self.lock().entries.iter().cloned().collect()
    }

    /// Bytes retained.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// A fresh random epoch: 6 alphanumerics.
pub fn new_epoch() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(6)
        .map(char::from)
        .collect()
}

/// Encodes a new event as number `seq` of `epoch`.
pub fn encode(epoch: &str, seq: u64, new: NewEvent, received: SystemTime) -> Event {
    Event::encode(epoch, seq, new.topic, &new.kind, &new.data, received)
}

impl Log for MemoryLog {
    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, AppendError>> {
        ready(Ok(self.append_now(events))).boxed()
    }

    fn read_after(
        &self,
        pos: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, ReadError>> {
        let mut state = self.lock();
        state.evict(&self.config, Instant::now());
        let read = state.after(pos, max);
        drop(state);
        ready(read).boxed()
    }

    fn head(&self) -> u64 {
        self.lock().head()
    }

    fn watch(&self) -> Option<watch::Receiver<Head>> {
        self.lock().head_tx.as_ref().map(watch::Sender::subscribe)
    }

    fn close(&self) {
        self.lock().head_tx = None;
    }

    fn stats(&self) -> LogStats {
        let mut state = self.lock();
        state.evict(&self.config, Instant::now());
        let (head, retained, bytes) = (state.head(), state.entries.len(), state.bytes);
        let oldest = state.entries.front().map(|(_, e)| e.seq);
        drop(state);
        LogStats {
            head: cursor(self, head),
            retained,
            retained_bytes: bytes,
            oldest: oldest.map(|s| cursor(self, s)),
        }
    }

    fn counters(&self) -> &LogCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> NewEvent {
        NewEvent::new("a", "t", serde_json::json!(n)).expect("valid event")
    }

    fn seqs(read: Result<Vec<Arc<Event>>, ReadError>) -> Result<Vec<u64>, ReadError> {
        read.map(|events| events.iter().map(|e| e.seq).collect())
    }

    #[tokio::test]
    async fn reads_after_a_position_within_retention() {
        let log = MemoryLog::new(MemoryConfig {
            retain: 3,
            ..MemoryConfig::default()
        });
        log.append((1..=5).map(ev).collect()).await.expect("append");
        assert_eq!(log.head(), 5);
        assert_eq!(seqs(log.read_after(2, 10).await), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(log.read_after(3, 1).await), Ok(vec![4]));
        assert_eq!(seqs(log.read_after(5, 10).await), Ok(vec![]));
        assert_eq!(
            seqs(log.read_after(1, 10).await),
            Err(ReadError::Expired { first: 3 })
        );
        let stats = log.stats();
        assert_eq!(stats.retained, 3);
        assert_eq!(stats.head, format!("{}-5", log.epoch()));
    }

    #[tokio::test]
    async fn retention_counts_bytes_too() {
        let one = held_bytes(&encode("abcdef", 1, ev(1), SystemTime::now()));
        let config = MemoryConfig {
            retain_bytes: one * 3,
            ..MemoryConfig::default()
        };
        let log = MemoryLog::with_epoch("abcdef".into(), 0, config);
        log.append((1..=5).map(ev).collect()).await.expect("append");
        assert_eq!(log.stats().retained, 3);
        assert_eq!(log.bytes(), one * 3);
        assert_eq!(seqs(log.read_after(2, 10).await), Ok(vec![3, 4, 5]));
        // The newest event stays, however big.
        let tiny = MemoryLog::new(MemoryConfig {
            retain_bytes: 1,
            ..MemoryConfig::default()
        });
        tiny.append((1..=3).map(ev).collect())
            .await
            .expect("append");
        assert_eq!(
            seqs(tiny.read_after(0, 10).await),
            Err(ReadError::Expired { first: 3 })
        );
        assert_eq!(seqs(tiny.read_after(2, 10).await), Ok(vec![3]));
    }

    #[tokio::test]
    async fn the_watch_carries_the_latest_append_and_ends_on_close() {
        let log = MemoryLog::new(MemoryConfig::default());
        let mut head = log.watch().expect("open");
        log.append(vec![ev(1), ev(2)]).await.expect("append");
        head.changed().await.expect("changed");
        let latest = head.borrow_and_update().clone();
        assert_eq!(latest.seq, 2);
        assert_eq!(
            latest.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2]
        );
        log.close();
        assert!(head.changed().await.is_err(), "closed");
        assert!(log.watch().is_none());
        // Appends still work after the close.
        log.append(vec![ev(3)]).await.expect("append after close");
        assert_eq!(log.head(), 3);
    }
}
