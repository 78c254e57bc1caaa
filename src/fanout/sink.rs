//! A stream's socket as the fan-out holds it: a two-state machine with one verb per
//! change of hands.
//!
//! ```text
//!            park (task)
//!   Task ─────────────────▶ Shard
//!     ▲                       │
//!     ├── hand_back (shard) ──┤   the socket is full or failed, the log closed,
//!     │                       │   the sink fell out of retention
//!     └── take_back (task) ───┘   the task must write itself (a reply, a heartbeat
//!                                 that did not fit) or the subscription changes
//! ```
//!
//! Whoever holds the sink is the only writer of its socket. Each parking is a new
//! *generation*: the shard's entry of an earlier one is stale and writes nothing. A
//! frame the shard began but could not finish stays with the sink as its `rest`; the
//! task writes it before anything else, so frames never interleave.

use std::io::IoSlice;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::io::SinkIo;
use super::{MAX_WRITE_BYTES, MAX_WRITE_EVENTS, Output};
use crate::event::{Event, TopicSet};

/// A stream's socket as the shards see it.
pub(super) struct Sink {
    pub(super) io: Arc<dyn SinkIo>,
    pub(super) output: Arc<Output>,
    state: Mutex<SinkState>,
    /// Tells the stream's task that the shard handed the sink back.
    handback: Notify,
}

/// Who writes the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    /// The stream's task.
    Task,
    /// A shard of the fan-out (the sink is parked).
    Shard,
}

pub(super) struct SinkState {
    pub(super) holder: Holder,
    /// Counts parkings: a shard's entry from an earlier one is stale.
    pub(super) generation: u64,
    /// The shard of the latest parking (a sink always parks in the same one).
    pub(super) shard: Option<usize>,
    /// The stream's topics as of its latest parking, shared with its subscription.
    topics: Arc<TopicSet>,
    /// Sequence number of the last log entry written (or skipped: other topics).
    pub(super) pos: u64,
    /// When something was last written to the socket (heartbeats are due after it).
    last_write: Instant,
    /// The unwritten end of a frame the shard began, for the task to write first.
    rest: Option<Bytes>,
}

/// What the task gets back with the sink.
#[derive(Debug, Default)]
pub(super) struct TakenBack {
    /// Sequence number written up to.
    pub(super) pos: u64,
    /// The end of a frame the shard cut short.
    pub(super) rest: Option<Bytes>,
    /// Whether a shard held it (its entry is stale from now on).
    pub(super) from_shard: Option<usize>,
}

/// What [`Sink::write`] did.
pub(super) enum Write {
    /// Everything written: the sink stays in the shard.
    Done,
    /// The socket was full (or failed): the sink went back to its task.
    HandedBack,
    /// The sink is no longer parked under this entry: dropped from the shard.
    NotParked,
}

impl SinkState {
    /// Task → Shard. Returns the new generation.
    pub(super) fn park(&mut self, pos: u64, topics: Arc<TopicSet>, now: Instant) -> u64 {
        self.holder = Holder::Shard;
        self.generation += 1;
        self.pos = pos;
        self.topics = topics;
        self.rest = None;
        self.last_write = self.last_write.max(now);
        self.generation
    }

    /// Shard → Task, by the shard, if still parked under `generation`. `true` if it was.
    fn hand_back(&mut self, generation: u64, rest: Option<Bytes>) -> bool {
        if self.holder != Holder::Shard || self.generation != generation {
            return false;
        }
        self.holder = Holder::Task;
        self.rest = rest;
        true
    }

    /// Shard → Task, by the task (or already the task's): where it stands.
    pub(super) fn take_back(&mut self) -> TakenBack {
        let from_shard = (self.holder == Holder::Shard)
            .then_some(self.shard)
            .flatten();
        self.holder = Holder::Task;
        TakenBack {
            pos: self.pos,
            rest: self.rest.take(),
            from_shard,
        }
    }
}

/// What a heartbeat on a parked sink did.
pub enum Heartbeat {
    /// Not due: something was written at this instant.
    NotDue(Instant),
    /// Written now.
    Written,
    /// The task holds the sink again (the shard handed it back, or the heartbeat did
    /// not fit) and must take it back before writing.
    TaskHolds,
}

impl Sink {
    pub(super) fn new(io: Arc<dyn SinkIo>, output: Arc<Output>) -> Sink {
        Sink {
            io,
            output,
            state: Mutex::new(SinkState {
                holder: Holder::Task,
                generation: 0,
                shard: None,
                topics: Arc::default(),
                pos: 0,
                last_write: Instant::now(),
                rest: None,
            }),
            handback: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.state)
    }

    /// Whether the sink is parked under `generation`.
    pub(super) fn is_parked(&self, generation: u64) -> bool {
        let state = self.lock();
        state.holder == Holder::Shard && state.generation == generation
    }

    /// The shard hands the sink to its task (see [`SinkState::hand_back`]) and wakes it.
    pub(super) fn hand_back(&self, generation: u64, rest: Option<Bytes>) {
        if self.lock().hand_back(generation, rest) {
            self.handback.notify_one();
        }
    }

    /// Waits until a shard hands the sink back.
    pub(super) async fn handed_back(&self) {
        self.handback.notified().await;
    }

    /// Wakes the task as a handback does (its writer took the sink back).
    pub(super) fn wake_task(&self) {
        self.handback.notify_one();
    }

    /// Writes `frame` if nothing was written for `every` (and the shard holds the sink).
    pub(super) fn heartbeat(
        &self,
        frame: &'static [u8],
        every: std::time::Duration,
    ) -> (Heartbeat, Option<usize>) {
        let mut state = self.lock();
        if state.holder != Holder::Shard {
            return (Heartbeat::TaskHolds, None);
        }
        let now = Instant::now();
        if state.last_write + every > now {
            return (Heartbeat::NotDue(state.last_write), None);
        }
        match self.io.try_write_vectored(&[IoSlice::new(frame)]) {
            Ok(n) if n == frame.len() => {
                state.last_write = now;
                (Heartbeat::Written, None)
            }
            written => {
                // The socket is full (or failed): the task waits, with its time-out.
                let n = written.unwrap_or(0);
                let taken = state.take_back();
                state.rest = (n > 0).then(|| Bytes::from_static(&frame[n..]));
                (Heartbeat::TaskHolds, taken.from_shard)
            }
        }
    }

    /// Writes the events of `events` (consecutive, oldest first) it has not had, in as
    /// few writes as fit; counts each whole frame written in `delivered`.
    pub(super) fn write<'a>(
        &self,
        generation: u64,
        events: &'a [Arc<Event>],
        now: Instant,
        scratch: &mut Scratch<'a>,
        delivered: &mut u64,
    ) -> Write {
        let Scratch { slices, batch } = scratch;
        let frame = self.output.frame;
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.holder != Holder::Shard || state.generation != generation {
            return Write::NotParked;
        }
        let Some(last) = events.last() else {
            return Write::Done;
        };
        let start = state.pos;
        let topics = &state.topics;
        let mut due = events
            .iter()
            .skip_while(|e| e.seq <= start)
            .filter(|e| topics.contains(e.topic.as_str()))
            .peekable();
        while due.peek().is_some() {
            slices.clear();
            batch.clear();
            let mut bytes = 0;
            while let Some(event) = due.next_if(|e| {
                batch.is_empty()
                    || (batch.len() < MAX_WRITE_EVENTS && bytes + frame(e).len() <= MAX_WRITE_BYTES)
            }) {
                bytes += frame(event).len();
                batch.push(event);
                slices.push(IoSlice::new(frame(event)));
            }
            // Would block, or failed: the task waits (with its time-out) or notices.
            let mut written = self.io.try_write_vectored(slices).unwrap_or(0);
            for event in batch.iter() {
                let bytes = frame(event);
                if written >= bytes.len() {
                    written -= bytes.len();
                    state.pos = event.seq;
                    state.last_write = now;
                    *delivered += 1;
                    continue;
                }
                // This frame is cut short (or not begun): the task takes over here,
                // under the lock, so nothing is written between the cut and the rest.
                let rest = (written > 0).then(|| bytes.slice(written..));
                if rest.is_some() {
                    state.pos = event.seq;
                    state.last_write = now;
                    *delivered += 1;
                }
                let generation = state.generation;
                state.hand_back(generation, rest);
                drop(guard);
                self.handback.notify_one();
                return Write::HandedBack;
            }
        }
        state.pos = state.pos.max(last.seq);
        Write::Done
    }
}

/// Buffers of one round, reused from sink to sink.
#[derive(Default)]
pub(super) struct Scratch<'a> {
    /// The frames of one write.
    slices: Vec<IoSlice<'a>>,
    /// Their events.
    batch: Vec<&'a Arc<Event>>,
}

/// A poisoned lock is still consistent here: every critical section is a few
/// assignments and a non-blocking write.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
