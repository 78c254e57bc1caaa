//! One subscriber's view of the log: replay, then live, in cursor order, each event once.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::{CATCHUP_BATCH, Head, ReadError, Reset, ResetReason, SharedLog, cursor};
use crate::event::{Cursor, Event, InvalidInput, TopicSet};

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// The next event for one of the subscribed topics.
    Event(Arc<Event>),
    /// History is incomplete; see [`Reset`].
    Reset(Reset),
}

/// A reader of the log for some topics (module doc of [`crate::log`]).
///
/// [`next`](Subscription::next) is cancel-safe, so it can sit in a `select!` beside a
/// heartbeat timer and a socket read: its state changes only after a read completes.
pub struct Subscription {
    log: SharedLog,
    /// `None` once the log is closed.
    head: Option<watch::Receiver<Head>>,
    /// Shared with the direct fan-out's sink of the stream (copied on write).
    topics: Arc<TopicSet>,
    /// Sequence number of the last log entry this subscription has looked at.
    pos: u64,
    /// Whether it was at the head when it last looked (so a read from the log means it
    /// fell behind).
    live: bool,
    /// Events read and not yet handed out (at most [`CATCHUP_BATCH`]).
    pending: VecDeque<Arc<Event>>,
    /// A reset to hand out before anything else.
    reset: Option<Reset>,
    /// After a re-seek: events of these topics up to this sequence were already delivered.
    skip: Option<(Arc<TopicSet>, u64)>,
    /// The log is closed and everything in it was looked at.
    closed: bool,
}

impl Subscription {
    /// The `reconnect` for a subscription that ended (its log closed): `log_unavailable`
    /// when the log cannot serve (it ended its readers for that), else `shutdown`.
    pub fn ended(&self) -> crate::protocol::Reconnect {
        if self.log.ready().is_err() {
            crate::protocol::Reconnect::log_unavailable()
        } else {
            crate::protocol::Reconnect::shutdown()
        }
    }

    /// Subscribes to `topics`, replaying everything after `cursor` (or from now when
    /// `None`), then live. A cursor that cannot be resumed gives a reset first.
    pub async fn open(log: SharedLog, topics: TopicSet, cursor: Option<&Cursor>) -> Subscription {
        let mut sub = Subscription {
            head: log.watch(),
            log,
            topics: Arc::new(topics),
            pos: 0,
            live: true,
            pending: VecDeque::new(),
            reset: None,
            skip: None,
            closed: false,
        };
        sub.seek(cursor).await;
        sub
    }

    /// The cursor this subscription has handed out up to: what a reconnect resumes
    /// after. Events read but still buffered are not counted as handed out.
    pub fn cursor(&self) -> String {
        let seq = self.pending.front().map_or(self.pos, |e| e.seq - 1);
        cursor(&*self.log, seq)
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
    /// when the cursor cannot be resumed, and reads the first batch.
    async fn seek(&mut self, cursor: Option<&Cursor>) {
        // The watch carries the head (set under the log's lock with each append): no
        // lock taken here while the log is open.
        let head = match self.head.as_mut() {
            Some(head) => head.borrow_and_update().seq,
            None => self.log.head(),
        };
        let reason = match cursor {
            None => None,
            Some(c) if *c.epoch != *self.log.epoch() => Some(ResetReason::UnknownEpoch),
            Some(c) if c.seq > head => Some(ResetReason::CursorAhead),
            Some(c) => {
                self.pos = c.seq;
                None
            }
        };
        if reason.is_some() || cursor.is_none() {
            self.pos = head;
        }
        self.pending.clear();
        self.closed = false;
        self.live = true;
        if let Some(reason) = reason {
            self.set_reset(reason);
        } else if self.pos < head {
            self.fill().await;
        }
    }

    fn set_reset(&mut self, reason: ResetReason) {
        self.log.counters().resets.inc();
        self.skip = None;
        self.reset = Some(Reset {
            reason,
            cursor: self.cursor(),
        });
    }

    /// Adds topics. With a cursor, the whole subscription re-seeks to it (as a reconnect
    /// would); events of topics that were already subscribed are not delivered twice.
    pub async fn subscribe(
        &mut self,
        topics: &TopicSet,
        cursor: Option<&Cursor>,
    ) -> Result<(), InvalidInput> {
        // The set as it was stays shared; the subscription extends its own copy.
        let before = self.topics.clone();
        Arc::make_mut(&mut self.topics).extend(topics)?;
        if cursor.is_some() {
            // What was delivered up to here is not delivered again (cleared by a reset).
            self.skip = Some((before, self.pos));
            self.seek(cursor).await;
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

    /// Reads the next batch after the position from the log.
    async fn fill(&mut self) {
        let read = self.log.read_after(self.pos, CATCHUP_BATCH).await;
        match read {
            Ok(batch) if batch.is_empty() => {
                // The head is ahead but nothing after the position can be read: history
                // is incomplete (a backend that lost events).
                self.pos = self.log.head();
                self.set_reset(ResetReason::CursorExpired);
            }
            Ok(batch) => {
                for event in batch {
                    if self.accept(&event) {
                        self.pending.push_back(event);
                    }
                }
            }
            Err(ReadError::Expired { .. }) => {
                // Fell out of retention (while lagging, or with an old cursor).
                self.pos = self.log.head();
                self.set_reset(ResetReason::CursorExpired);
            }
            Err(ReadError::Unavailable(e)) => {
                tracing::warn!(error = %e, "a subscription ends: the log is unavailable");
                self.closed = true;
            }
        }
    }

    /// The next item if one is ready now, without waiting: what was read, or the latest
    /// append when it follows on from the position.
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
            let head = self.head.as_mut()?;
            let latest = head.borrow_and_update();
            let follows = latest.seq > self.pos
                && latest
                    .events
                    .first()
                    .is_some_and(|first| first.seq <= self.pos + 1);
            if !follows {
                return None;
            }
            let events = latest.events.clone();
            drop(latest);
            for event in events.iter() {
                if self.accept(event) {
                    self.pending.push_back(event.clone());
                }
            }
        }
    }

    /// The next item, waiting for one. `None` once the log is closed and everything
    /// before the close was handed out.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.try_next() {
                return Some(item);
            }
            if self.closed {
                return None;
            }
            let head = match self.head.as_mut() {
                Some(head) => head.borrow_and_update().seq,
                None => self.log.head(),
            };
            if head > self.pos {
                if std::mem::take(&mut self.live) {
                    self.log.counters().lagged.inc();
                }
                self.fill().await;
                continue;
            }
            self.live = true;
            match self.head.as_mut() {
                Some(head) => {
                    if head.changed().await.is_err() {
                        self.head = None;
                    }
                }
                None => self.closed = true,
            }
        }
    }

    /// Hands the subscription's position to another reader of the log (the direct
    /// fan-out) when it has nothing of its own to hand out: nothing read and pending, no
    /// reset, no topics to skip, not ended. `None` if it cannot.
    pub fn park(&mut self) -> Option<u64> {
        if self.closed || self.reset.is_some() || self.skip.is_some() || !self.pending.is_empty() {
            return None;
        }
        Some(self.pos)
    }

    /// Takes the subscription back from another reader that handed out everything up to
    /// `pos` (the log's sequence number): it goes on after `pos`.
    pub fn resume(&mut self, pos: u64) {
        self.pos = self.pos.max(pos);
        // Behind the head or not, the other reader counted it.
        self.live = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::log::SharedLog;
    use crate::log::memory::{MemoryConfig, MemoryLog};
    use std::time::Duration;

    fn ev(topic: &str, n: u64) -> NewEvent {
        NewEvent::new(topic, "t", serde_json::json!(n)).expect("valid event")
    }

    fn topics(list: &str) -> TopicSet {
        TopicSet::parse_list(list).expect("valid topics")
    }

    fn memory(retain: usize) -> SharedLog {
        Arc::new(MemoryLog::new(MemoryConfig {
            retain,
            ..MemoryConfig::default()
        }))
    }

    async fn publish(log: &SharedLog, events: Vec<NewEvent>) {
        log.append(events).await.expect("append");
    }

    fn cursor_at(log: &SharedLog, seq: u64) -> Cursor {
        Cursor::parse(&format!("{}-{seq}", log.epoch())).expect("cursor")
    }

    /// Everything ready now, waiting for nothing (each `next` must be ready at once).
    async fn drain(sub: &mut Subscription) -> Vec<Item> {
        let mut out = Vec::new();
        while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await
        {
            out.push(item);
        }
        out
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

    #[tokio::test]
    async fn replays_after_cursor_then_goes_live_filtered_by_topic() {
        let log = memory(10_000);
        publish(
            &log,
            (1..=5)
                .map(|n| ev(if n % 2 == 0 { "b" } else { "a" }, n))
                .collect(),
        )
        .await;
        let mut sub = Subscription::open(log.clone(), topics("a"), Some(&cursor_at(&log, 1))).await;
        assert_eq!(seqs(&drain(&mut sub).await), vec![3, 5]);
        publish(&log, vec![ev("b", 6), ev("a", 7)]).await;
        assert_eq!(seqs(&drain(&mut sub).await), vec![7]);
        assert_eq!(sub.cursor(), format!("{}-7", log.epoch()));
    }

    #[tokio::test]
    async fn close_ends_subscriptions_after_what_they_have_not_taken() {
        let log = memory(10_000);
        let mut live = Subscription::open(log.clone(), topics("a"), None).await;
        publish(&log, vec![ev("a", 1), ev("a", 2)]).await;
        log.close();
        let mut late =
            Subscription::open(log.clone(), topics("a"), Some(&cursor_at(&log, 0))).await;
        for sub in [&mut live, &mut late] {
            let mut got = Vec::new();
            let ended = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(item) = sub.next().await {
                    got.push(item);
                }
            })
            .await;
            assert!(ended.is_ok(), "next() must end after close");
            assert_eq!(seqs(&got), vec![1, 2]);
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_catches_up_from_the_log() {
        let log = memory(10_000);
        let mut sub = Subscription::open(log.clone(), topics("a"), None).await;
        for batch in 0..4 {
            publish(&log, (1..=500).map(|n| ev("a", batch * 500 + n)).collect()).await;
        }
        let got = seqs(&drain(&mut sub).await);
        assert_eq!(got, (1..=2000).collect::<Vec<_>>());
        assert!(log.counters().lagged.get() >= 1);
    }

    #[tokio::test]
    async fn falling_behind_past_retention_resets_to_head() {
        let log = memory(10);
        let mut sub = Subscription::open(log.clone(), topics("a"), None).await;
        publish(&log, (1..=50).map(|n| ev("a", n)).collect()).await;
        publish(&log, (51..=100).map(|n| ev("a", n)).collect()).await;
        let items = drain(&mut sub).await;
        match &items[0] {
            Item::Reset(r) => {
                assert_eq!(r.reason, ResetReason::CursorExpired);
                assert_eq!(r.cursor, format!("{}-100", log.epoch()));
            }
            other => panic!("expected a reset first, got {other:?}"),
        }
        assert_eq!(items.len(), 1);
    }

    #[tokio::test]
    async fn cursors_from_elsewhere_reset() {
        let log = memory(3);
        publish(&log, (1..=10).map(|n| ev("a", n)).collect()).await;
        let e = log.epoch().to_owned();
        for (cursor, reason) in [
            ("zzzzzz9-3".to_owned(), ResetReason::UnknownEpoch),
            (format!("{e}-11"), ResetReason::CursorAhead),
            (format!("{e}-6"), ResetReason::CursorExpired),
        ] {
            let c = Cursor::parse(&cursor).expect("cursor");
            let mut sub = Subscription::open(log.clone(), topics("a"), Some(&c)).await;
            match sub.try_next() {
                Some(Item::Reset(r)) => assert_eq!(r.reason, reason, "{cursor}"),
                other => panic!("{cursor}: expected reset, got {other:?}"),
            }
            assert!(sub.try_next().is_none());
        }
        // The oldest retained event is 8: a cursor at 7 still resumes.
        let mut sub = Subscription::open(log.clone(), topics("a"), Some(&cursor_at(&log, 7))).await;
        assert_eq!(seqs(&drain(&mut sub).await), vec![8, 9, 10]);
    }

    #[tokio::test]
    async fn resubscribing_with_a_cursor_does_not_repeat_old_topics() {
        let log = memory(10_000);
        let start = cursor_at(&log, 0);
        publish(&log, vec![ev("a", 1), ev("b", 2), ev("a", 3)]).await;
        let mut sub = Subscription::open(log.clone(), topics("a"), Some(&start)).await;
        assert_eq!(seqs(&drain(&mut sub).await), vec![1, 3]);
        sub.subscribe(&topics("b"), Some(&start))
            .await
            .expect("subscribe");
        publish(&log, vec![ev("a", 4)]).await;
        assert_eq!(seqs(&drain(&mut sub).await), vec![2, 4]);
    }
}
