//! The one event source: an in-memory log for all topics, cursors, and fan-out.
//!
//! No axum here: transports consume a [`Subscription`], which yields
//! replay-then-live [`Item`]s. A future Redis Streams backend implements the same
//! `publish` / `subscribe` surface; cursors stay opaque strings to everyone else.
//!
//! ## How the replay/live seam is closed
//!
//! `publish` appends to the log **and** sends on the broadcast channel while holding the
//! log mutex. A subscription catching up reads the log under the same mutex and, once it
//! has read up to the head, joins the broadcast before releasing it. So every event is
//! either in what it read or in what it will receive: no gap. Live events at or below the
//! subscription's position are skipped: no duplicate.
//!
//! ## How a slow subscriber stays bounded
//!
//! The broadcast ring holds at most [`HubConfig::broadcast_capacity`] events, shared by
//! all subscribers. A subscriber that falls further behind gets `Lagged`, drops its
//! receiver and catches up from the log in batches of at most [`CATCHUP_BATCH`] events;
//! if its position has meanwhile left retention it gets a [`Reset`]. Nothing is ever
//! queued per subscriber beyond one batch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::watch;

use crate::event::{Cursor, Event, InvalidInput, NewEvent, TopicSet};

/// Most log entries one catch-up step scans while holding the log lock. Bounds both the
/// lock hold time and the per-subscriber replay buffer.
pub const CATCHUP_BATCH: usize = 512;

/// Retention and fan-out limits of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most events kept in the log (`SWITCHYARD_RETAIN`, default 10,000).
    pub retain: usize,
    /// Oldest event kept in the log (`SWITCHYARD_RETAIN_AGE`, default 1 h).
    pub retain_age: Duration,
    /// Size of the shared broadcast ring. A subscriber more than this many events behind
    /// the head is switched to catching up from the log. Default 4,096, and never more
    /// than `retain` (see [`HubConfig::with_retention`]).
    pub broadcast_capacity: usize,
}

impl HubConfig {
    /// Retention limits with a broadcast ring no larger than the log.
    ///
    /// The ring holds the most recent events; when it is no longer than the log, every
    /// event it holds is also in the log, so a subscriber that stalls with the ring full
    /// keeps nothing alive that retention would not keep anyway. Memory is bounded by
    /// retention alone, however many subscribers stall.
    pub fn with_retention(retain: usize, retain_age: Duration) -> HubConfig {
        HubConfig {
            retain,
            retain_age,
            broadcast_capacity: HubConfig::default().broadcast_capacity.min(retain),
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            retain: 10_000,
            retain_age: Duration::from_secs(3600),
            broadcast_capacity: 4096,
        }
    }
}

/// A cheap-to-clone handle to the event log.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Arc<str>,
    config: HubConfig,
    /// Guards the log for a few lines at a time; never held across `.await`. A std mutex
    /// (not tokio's) because every critical section is short and synchronous.
    log: Mutex<Log>,
    counters: HubCounters,
}

/// Counters the hub keeps; registered with the metrics registry by the server.
#[derive(Clone, Debug, Default)]
pub struct HubCounters {
    /// Events appended to the log.
    pub published: Counter,
    /// Resets handed to subscribers (unknown epoch, expired or impossible cursor).
    pub resets: Counter,
    /// Times a subscriber fell out of the broadcast ring and caught up from the log.
    pub lagged: Counter,
}

struct Log {
    /// Retained events with the instant they were received, oldest first.
    entries: VecDeque<(Instant, Arc<Event>)>,
    /// Sequence number the next published event gets. Starts at 1.
    next_seq: u64,
    /// The live fan-out; `None` once the hub is closed (its receivers then see the end).
    tx: Option<broadcast::Sender<Arc<Event>>>,
    /// The latest publish, for readers that take events from the log itself (the direct
    /// fan-out, [`crate::fanout`]); `None` once the hub is closed.
    head_tx: Option<watch::Sender<Published>>,
}

impl Log {
    /// A receiver of the live fan-out, or `None` when the hub is closed.
    fn live(&self) -> Option<broadcast::Receiver<Arc<Event>>> {
        self.tx.as_ref().map(broadcast::Sender::subscribe)
    }

    fn head(&self) -> u64 {
        self.next_seq - 1
    }

    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |(_, e)| e.seq)
    }

    /// Up to `max` entries after `pos`, and whether they reach the head; `Err` with the
    /// first retained sequence number when entries after `pos` have left retention.
    fn after(&self, pos: u64, max: usize) -> Result<(Vec<Arc<Event>>, bool), u64> {
        let first = self.first_seq();
        if pos + 1 < first {
            return Err(first);
        }
        let start = (pos + 1 - first) as usize;
        let end = (start + max).min(self.entries.len());
        let batch = self
            .entries
            .range(start.min(end)..end)
            .map(|(_, e)| e.clone())
            .collect();
        Ok((batch, end == self.entries.len()))
    }

    fn evict(&mut self, config: &HubConfig, now: Instant) {
        while self.entries.len() > config.retain {
            self.entries.pop_front();
        }
        while let Some((at, _)) = self.entries.front() {
            if now.duration_since(*at) > config.retain_age {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The latest publish, as the direct fan-out watches it.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Sequence number of the log's head after it.
    pub head: u64,
    /// Its events (consecutive, the last one at `head`), so that a reader that was at
    /// the head before takes them without the log lock.
    pub events: Arc<[Arc<Event>]>,
}

/// Why a subscriber was told its history is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The cursor names another log (the server restarted, or another deployment).
    UnknownEpoch,
    /// Events after the cursor have left retention (count or age).
    CursorExpired,
    /// The cursor is ahead of this log's head: it cannot have come from this log.
    CursorAhead,
}

/// A reset: events may be missing; the app must refetch its state. Streaming continues
/// after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// Why.
    pub reason: ResetReason,
    /// The cursor the stream now continues after.
    pub cursor: String,
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// The next event for one of the subscribed topics.
    Event(Arc<Event>),
    /// History is incomplete; see [`Reset`].
    Reset(Reset),
}

/// Head and size of the log, for status and negotiation.
#[derive(Debug, Clone, Serialize)]
pub struct LogStats {
    /// Cursor of the newest event (sequence 0 when empty).
    pub head: String,
    /// Events currently retained.
    pub retained: usize,
    /// Cursor of the oldest retained event, if any.
    pub oldest: Option<String>,
}

impl Hub {
    /// Creates an empty log with a fresh random epoch.
    pub fn new(config: HubConfig) -> Hub {
        let epoch: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(6)
            .map(char::from)
            .collect();
        let (tx, _) = broadcast::channel(config.broadcast_capacity.max(1));
        Hub {
            inner: Arc::new(Inner {
                epoch: Arc::from(epoch),
                config,
                log: Mutex::new(Log {
                    entries: VecDeque::new(),
                    next_seq: 1,
                    tx: Some(tx),
                    head_tx: Some(watch::Sender::new(Published::default())),
                }),
                counters: HubCounters::default(),
            }),
        }
    }

    /// The log's epoch.
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// The hub's counters.
    pub fn counters(&self) -> &HubCounters {
        &self.inner.counters
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written (every
        // mutation is a single push/pop), so a poisoned lock is still usable.
        self.inner.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cursor(&self, seq: u64) -> String {
        format!("{}-{}", self.inner.epoch, seq)
    }

    /// Head, size and oldest entry of the log.
    pub fn stats(&self) -> LogStats {
        let mut log = self.lock();
        log.evict(&self.inner.config, Instant::now());
        let head = log.head();
        let oldest = log.entries.front().map(|(_, e)| e.seq);
        let retained = log.entries.len();
        drop(log);
        LogStats {
            head: self.cursor(head),
            retained,
            oldest: oldest.map(|s| self.cursor(s)),
        }
    }

    /// Number of live (non-catching-up) subscriptions attached to the broadcast.
    pub fn live_receivers(&self) -> usize {
        self.lock()
            .tx
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Appends events to the log (contiguous cursors, in order) and fans them out.
    ///
    /// Encoding happens here, once per event. Returns the stored events.
    pub fn publish(&self, events: Vec<NewEvent>) -> Vec<Arc<Event>> {
        let received = SystemTime::now();
        let now = Instant::now();
        let mut out = Vec::with_capacity(events.len());
        let mut log = self.lock();
        for new in events {
            let seq = log.next_seq;
            log.next_seq += 1;
            let event = Arc::new(Event::encode(
                &self.inner.epoch,
                seq,
                new.topic,
                &new.kind,
                &new.data,
                received,
            ));
            log.entries.push_back((now, event.clone()));
            out.push(event);
        }
        log.evict(&self.inner.config, now);
        // Readers of the log first: the direct fan-out's few tasks start writing while
        // this thread wakes every live receiver below.
        if let Some(head_tx) = &log.head_tx {
            head_tx.send_replace(Published {
                head: log.head(),
                events: out.as_slice().into(),
            });
        }
        // Sent under the lock: this is what closes the replay/live seam (module doc).
        // An error only means nobody is listening live right now.
        if let Some(tx) = &log.tx {
            for event in &out {
                let _ = tx.send(event.clone());
            }
        }
        drop(log);
        self.inner.counters.published.inc_by(out.len() as u64);
        out
    }

    /// Ends every subscription: each hands out what it has not yet taken, then `None`.
    /// Subscriptions made afterwards replay from the log, then end. Used by the drain, so
    /// that streams need not watch a shared shutdown signal on every delivery.
    pub fn close(&self) {
        let mut log = self.lock();
        log.tx = None;
        log.head_tx = None;
    }

    /// The log's head as it moves, for readers of [`Hub::read_after`]; its `changed`
    /// fails once the hub is closed. `None` if it already is.
    pub fn watch_head(&self) -> Option<watch::Receiver<Published>> {
        self.lock().head_tx.as_ref().map(watch::Sender::subscribe)
    }

    /// Up to `max` events after sequence number `pos`, oldest first (empty at the head);
    /// `Err` with the first retained sequence number when events after `pos` have left
    /// retention. Takes the log lock for the copy of `max` pointers at most.
    pub fn read_after(&self, pos: u64, max: usize) -> Result<Vec<Arc<Event>>, u64> {
        let mut log = self.lock();
        log.evict(&self.inner.config, Instant::now());
        log.after(pos, max).map(|(batch, _)| batch)
    }

    /// Subscribes to `topics`, replaying everything after `cursor` (or from now when
    /// `None`), then live.
    pub fn subscribe(&self, topics: TopicSet, cursor: Option<&Cursor>) -> Subscription {
        let mut sub = Subscription {
            hub: self.clone(),
            topics: Arc::new(topics),
            pos: 0,
            rx: None,
            pending: VecDeque::new(),
            reset: None,
            skip: None,
            closed: false,
        };
        sub.seek(cursor);
        sub
    }
}

/// One subscriber's view of the log: replay, then live, in cursor order, each event once.
///
/// [`next`](Subscription::next) is cancel-safe, so it can sit in a `select!` beside a
/// heartbeat timer and a socket read.
pub struct Subscription {
    hub: Hub,
    /// Shared with the direct fan-out's sink of the stream (copied on write).
    topics: Arc<TopicSet>,
    /// Sequence number of the last log entry this subscription has looked at.
    pos: u64,
    /// `None` while catching up from the log; `Some` once live on the broadcast.
    rx: Option<broadcast::Receiver<Arc<Event>>>,
    /// Replayed events not yet handed out (at most [`CATCHUP_BATCH`]).
    pending: VecDeque<Arc<Event>>,
    /// A reset to hand out before anything else.
    reset: Option<Reset>,
    /// After a re-seek: events of these topics up to this sequence were already delivered.
    skip: Option<(Arc<TopicSet>, u64)>,
    closed: bool,
}

impl Subscription {
    /// The cursor this subscription has handed out up to: what a reconnect resumes
    /// after. Replayed events still buffered are not counted as handed out.
    pub fn cursor(&self) -> String {
        let seq = self.pending.front().map_or(self.pos, |e| e.seq - 1);
        self.hub.cursor(seq)
    }

    /// The subscribed topics.
    pub fn topics(&self) -> &TopicSet {
        &self.topics
    }

    /// The subscribed topics, shared (a later subscribe or unsubscribe does not change
    /// what this handle sees).
    pub fn shared_topics(&self) -> Arc<TopicSet> {
        self.topics.clone()
    }

    /// Positions the subscription after `cursor` (or at the head), recording a reset
    /// when the cursor cannot be resumed.
    fn seek(&mut self, cursor: Option<&Cursor>) {
        let hub = self.hub.clone();
        let mut log = hub.lock();
        log.evict(&hub.inner.config, Instant::now());
        let head = log.head();
        let reason = match cursor {
            None => None,
            Some(c) if *c.epoch != *hub.inner.epoch => Some(ResetReason::UnknownEpoch),
            Some(c) if c.seq > head => Some(ResetReason::CursorAhead),
            Some(c) if c.seq + 1 < log.first_seq() => Some(ResetReason::CursorExpired),
            Some(c) => {
                self.pos = c.seq;
                None
            }
        };
        if reason.is_some() || cursor.is_none() {
            self.pos = head;
        }
        self.pending.clear();
        self.rx = None;
        self.closed = false;
        if self.pos == head {
            self.go_live(&log);
        }
        drop(log);
        if let Some(reason) = reason {
            self.set_reset(reason);
        }
    }

    fn set_reset(&mut self, reason: ResetReason) {
        self.hub.inner.counters.resets.inc();
        self.skip = None;
        self.reset = Some(Reset {
            reason,
            cursor: self.cursor(),
        });
    }

    /// Adds topics. With a cursor, the whole subscription re-seeks to it (as a reconnect
    /// would); events of topics that were already subscribed are not delivered twice.
    pub fn subscribe(
        &mut self,
        topics: &TopicSet,
        cursor: Option<&Cursor>,
    ) -> Result<(), InvalidInput> {
        // The set as it was stays shared; the subscription extends its own copy.
        let before = self.topics.clone();
        Arc::make_mut(&mut self.topics).extend(topics)?;
        if cursor.is_some() {
            let delivered = self.pos;
            self.seek(cursor);
            if self.reset.is_none() && self.pos < delivered {
                self.skip = Some((before, delivered));
            }
        }
        Ok(())
    }

    /// Removes topics.
    pub fn unsubscribe(&mut self, topics: &TopicSet) {
        Arc::make_mut(&mut self.topics).remove(topics);
        let topics = &self.topics;
        self.pending.retain(|e| topics.contains(e.topic.as_str()));
    }

    /// Whether `event` is for this subscriber; advances the position past it.
    fn accept(&mut self, event: &Event) -> bool {
        if event.seq <= self.pos {
            return false;
        }
        self.pos = event.seq;
        if !self.topics.contains(event.topic.as_str()) {
            return false;
        }
        match &self.skip {
            Some((old, upto)) if event.seq <= *upto => !old.contains(event.topic.as_str()),
            Some(_) => {
                self.skip = None;
                true
            }
            None => true,
        }
    }

    /// Reads the next batch from the log while catching up; joins the broadcast once the
    /// head is reached.
    fn catch_up(&mut self) {
        let hub = self.hub.clone();
        let mut log = hub.lock();
        log.evict(&hub.inner.config, Instant::now());
        let batch = match log.after(self.pos, CATCHUP_BATCH) {
            Ok((batch, at_head)) => {
                if at_head {
                    self.go_live(&log);
                }
                batch
            }
            Err(_) => {
                // Fell out of retention while lagging.
                self.pos = log.head();
                self.go_live(&log);
                drop(log);
                self.set_reset(ResetReason::CursorExpired);
                return;
            }
        };
        drop(log);
        for event in batch {
            if self.accept(&event) {
                self.pending.push_back(event);
            }
        }
    }

    /// The next item if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Item> {
        loop {
            if let Some(reset) = self.reset.take() {
                return Some(Item::Reset(reset));
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(Item::Event(event));
            }
            if self.closed {
                return None;
            }
            let Some(rx) = self.rx.as_mut() else {
                self.catch_up();
                continue;
            };
            match rx.try_recv() {
                Ok(event) => {
                    if self.accept(&event) {
                        return Some(Item::Event(event));
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(_)) => self.lagged(),
                Err(TryRecvError::Closed) => self.closed = true,
            }
        }
    }

    /// Hands the subscription's position to another reader of the log (the direct
    /// fan-out) when it has nothing of its own to hand out: no replayed events, no reset,
    /// no topics to skip, not ended. Leaves the live fan-out: the other reader takes
    /// everything after the returned position from the log. `None` if it cannot.
    pub fn park(&mut self) -> Option<u64> {
        if self.closed || self.reset.is_some() || self.skip.is_some() || !self.pending.is_empty() {
            return None;
        }
        self.rx = None;
        Some(self.pos)
    }

    /// Takes the subscription back from another reader that handed out everything up to
    /// `pos` (the log's sequence number): it catches up from the log after `pos`.
    pub fn resume(&mut self, pos: u64) {
        self.pos = self.pos.max(pos);
        self.rx = None;
    }

    /// Joins the live fan-out at the head of `log` (held locked), or ends when the hub is
    /// closed.
    fn go_live(&mut self, log: &Log) {
        self.rx = log.live();
        self.closed = self.rx.is_none();
    }

    fn lagged(&mut self) {
        self.hub.inner.counters.lagged.inc();
        self.rx = None;
    }

    /// The next item, waiting for one. `None` once the hub is closed and everything
    /// before the close was handed out.
    ///
    /// Cancel-safe: the only await point is `broadcast::Receiver::recv`.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            if self.closed {
                return None;
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(event) => {
                    if self.accept(&event) {
                        return Some(Item::Event(event));
                    }
                }
                Err(RecvError::Lagged(_)) => self.lagged(),
                Err(RecvError::Closed) => self.closed = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(topic: &str, n: u64) -> NewEvent {
        NewEvent::new(topic, "t", serde_json::json!(n)).expect("valid event")
    }

    fn topics(list: &str) -> TopicSet {
        TopicSet::parse_list(list).expect("valid topics")
    }

    fn drain(sub: &mut Subscription) -> Vec<Item> {
        std::iter::from_fn(|| sub.try_next()).collect()
    }

    fn seqs(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.seq),
                Item::Reset(_) => None,
            })
            .collect()
    }

    #[test]
    fn replays_after_cursor_then_goes_live_filtered_by_topic() {
        let hub = Hub::new(HubConfig::default());
        hub.publish(
            (1..=5)
                .map(|n| ev(if n % 2 == 0 { "b" } else { "a" }, n))
                .collect(),
        );
        let c = Cursor::parse(&format!("{}-1", hub.epoch())).expect("cursor");
        let mut sub = hub.subscribe(topics("a"), Some(&c));
        assert_eq!(seqs(&drain(&mut sub)), vec![3, 5]);
        hub.publish(vec![ev("b", 6), ev("a", 7)]);
        assert_eq!(seqs(&drain(&mut sub)), vec![7]);
        assert_eq!(sub.cursor(), format!("{}-7", hub.epoch()));
    }

    #[test]
    fn close_ends_subscriptions_after_what_they_have_not_taken() {
        let hub = Hub::new(HubConfig::default());
        let mut live = hub.subscribe(topics("a"), None);
        hub.publish(vec![ev("a", 1), ev("a", 2)]);
        hub.close();
        assert_eq!(seqs(&drain(&mut live)), vec![1, 2]);
        assert!(live.try_next().is_none());
        // A subscription made after the close replays from the log, then ends.
        let start = Cursor::parse(&format!("{}-0", hub.epoch())).expect("cursor");
        let mut late = hub.subscribe(topics("a"), Some(&start));
        assert_eq!(seqs(&drain(&mut late)), vec![1, 2]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let ended = tokio::time::timeout(Duration::from_secs(5), async {
                (live.next().await.is_none(), late.next().await.is_none())
            })
            .await;
            assert_eq!(
                ended.ok(),
                Some((true, true)),
                "next() must end after close"
            );
        });
        assert_eq!(hub.live_receivers(), 0);
    }

    #[test]
    fn lagging_subscriber_catches_up_from_the_log() {
        let hub = Hub::new(HubConfig {
            broadcast_capacity: 4,
            ..HubConfig::default()
        });
        let mut sub = hub.subscribe(topics("a"), None);
        hub.publish((1..=2000).map(|n| ev("a", n)).collect());
        let got = seqs(&drain(&mut sub));
        assert_eq!(got, (1..=2000).collect::<Vec<_>>());
        assert!(hub.counters().lagged.get() >= 1);
    }

    #[test]
    fn lagging_past_retention_resets_to_head() {
        let hub = Hub::new(HubConfig {
            retain: 10,
            broadcast_capacity: 4,
            ..HubConfig::default()
        });
        let mut sub = hub.subscribe(topics("a"), None);
        hub.publish((1..=100).map(|n| ev("a", n)).collect());
        let items = drain(&mut sub);
        match &items[0] {
            Item::Reset(r) => {
                assert_eq!(r.reason, ResetReason::CursorExpired);
                assert_eq!(r.cursor, format!("{}-100", hub.epoch()));
            }
            other => panic!("expected a reset first, got {other:?}"),
        }
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn cursors_from_elsewhere_reset() {
        let hub = Hub::new(HubConfig {
            retain: 3,
            ..HubConfig::default()
        });
        hub.publish((1..=10).map(|n| ev("a", n)).collect());
        let e = hub.epoch().to_owned();
        for (cursor, reason) in [
            ("zzzzzz9-3".to_owned(), ResetReason::UnknownEpoch),
            (format!("{e}-11"), ResetReason::CursorAhead),
            (format!("{e}-6"), ResetReason::CursorExpired),
        ] {
            let c = Cursor::parse(&cursor).expect("cursor");
            let mut sub = hub.subscribe(topics("a"), Some(&c));
            match sub.try_next() {
                Some(Item::Reset(r)) => assert_eq!(r.reason, reason, "{cursor}"),
                other => panic!("{cursor}: expected reset, got {other:?}"),
            }
            assert!(sub.try_next().is_none());
        }
        // The oldest retained event is 8: a cursor at 7 still resumes.
        let c = Cursor::parse(&format!("{e}-7")).expect("cursor");
        let mut sub = hub.subscribe(topics("a"), Some(&c));
        assert_eq!(seqs(&drain(&mut sub)), vec![8, 9, 10]);
    }

    #[test]
    fn resubscribing_with_a_cursor_does_not_repeat_old_topics() {
        let hub = Hub::new(HubConfig::default());
        let start = Cursor::parse(&format!("{}-0", hub.epoch())).expect("cursor");
        hub.publish(vec![ev("a", 1), ev("b", 2), ev("a", 3)]);
        let mut sub = hub.subscribe(topics("a"), Some(&start));
        assert_eq!(seqs(&drain(&mut sub)), vec![1, 3]);
        sub.subscribe(&topics("b"), Some(&start))
            .expect("subscribe");
        hub.publish(vec![ev("a", 4)]);
        assert_eq!(seqs(&drain(&mut sub)), vec![2, 4]);
    }
}
