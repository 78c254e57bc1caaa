//! Direct fan-out: live events written straight onto the sockets of caught-up streams.
//!
//! A stream's own task costs about 2 µs of user time per delivery on top of the
//! kernel's write (measured over 50 broadcasts to 19,000 SSE subscribers: 12.1 µs per
//! delivery against 9.5 µs for a bare write loop, whose kernel share is the same): the
//! wake-up, a poll through the body layers, the broadcast channel's shared slot and
//! waiter list, all on memory that went cold since the last event. An SSE stream or a
//! WebSocket session that has caught up instead *parks* here: a `Sink` holding its
//! socket, how it frames events ([`Framing`]), its topics and its position in the log.
//! One of [`SHARDS`] fan-out tasks writes each new event's shared bytes (the SSE frame,
//! or the whole WebSocket frame) to every sink of the shard in turn, in one pass over a
//! vector, as a bare write loop would (9.6 – 9.7 µs per delivery on the same run, two
//! runs; 12.1 – 12.3 µs before, three runs; the bare loop 9.0 – 9.5 µs).
//!
//! A shard takes a new publish from the hub's watch ([`Published`]: the events
//! themselves, sent before the live receivers are woken), so it starts writing while
//! the publishing thread is still waking the streams that are not parked, and needs no
//! log lock; anything older (a sink that parked behind the head) it reads from the log.
//!
//! The first time a write would block (or fails, or the sink fell out of retention, or
//! the hub closes), the shard hands the sink back to the stream's task with its position
//! and the unwritten rest of the frame; the task writes that rest, catches up from the
//! log as any lagging stream does (coalesced, with the send time-out) and parks again
//! once it is through. So a slow reader costs the shard one failed write, never a wait,
//! and nothing is queued per sink. A stream's task can also take its sink back at any
//! time (a WebSocket session that must answer a client frame): after that, the shard
//! writes nothing more to it.
//!
//! Work stealing still spreads the fan-out over the runtime's threads: the shards are
//! ordinary tasks, and each yields every [`YIELD_EVERY`] sinks.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::event::{Event, TopicSet};
use crate::hub::{CATCHUP_BATCH, Hub, Published, Subscription};
use crate::metrics::TransportLabel;
use crate::transport::Transport;

/// Number of fan-out tasks. Enough for the runtime's threads to share a broadcast (a
/// shard yields every [`YIELD_EVERY`] sinks, and a yielded task can be stolen by an idle
/// thread), few enough that one event wakes only a handful of tasks: with 100 SSE
/// subscribers at 20 events/s, 8 shards measured p99 1.6 ms (1.5 – 1.8, 6 runs) and 32
/// shards 1.8 ms (1.7 – 2.0), each woken shard being one more wake-up per event; the
/// broadcast to 19,000 was the same with both.
pub const SHARDS: usize = 8;
/// Most bytes one write to one sink carries when several events are due at once.
pub const MAX_WRITE_BYTES: usize = 64 * 1024;
/// Sinks a shard writes to before it lets the other tasks of its thread run (256
/// writes: about 2.5 ms here), so that one broadcast's shards and the streams it woke
/// that are not parked (each its own task) share the threads instead of taking turns.
pub const YIELD_EVERY: usize = 256;
/// Entries a shard may hold for sinks their tasks took back (each re-parking adds one)
/// beyond a quarter of its sinks before it drops them all in one pass: a client that
/// keeps a parked WebSocket busy with pings cannot grow a shard's list.
pub const PRUNE_SLACK: usize = 64;
/// Most events (buffers) one write to one sink carries: the kernel's `IOV_MAX`.
const MAX_WRITE_EVENTS: usize = 1024;

/// How a sink's stream frames an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Server-Sent Events: [`Event::sse`].
    Sse,
    /// WebSocket text frames: [`Event::ws_frame`].
    WebSocket,
}

impl Framing {
    fn frame(self, event: &Event) -> &Bytes {
        match self {
            Framing::Sse => &event.sse,
            Framing::WebSocket => &event.ws_frame,
        }
    }

    fn transport(self) -> Transport {
        match self {
            Framing::Sse => Transport::Sse,
            Framing::WebSocket => Transport::WebSocket,
        }
    }
}

/// The direct fan-out of one hub.
pub struct Fanout {
    hub: Hub,
    /// Where delivered events are counted, by transport (a series is created with its
    /// first delivery, so an unused transport shows none).
    delivered: Family<TransportLabel, Counter>,
    /// Counts sinks handed back because their socket was full.
    handed_back: Counter,
    shards: Box<[Shard]>,
    next: AtomicUsize,
    /// Where the shards run: the runtime the fan-out was made on (the stream runtime),
    /// whichever runtime a stream parks from.
    runtime: Option<tokio::runtime::Handle>,
}

struct Shard {
    incoming: Mutex<Incoming>,
    /// Wakes the shard's task for new sinks and for sinks that left.
    wake: Notify,
    /// A sink left (its stream ended): the shard lets go of it, and of its socket.
    left: AtomicBool,
    /// Entries of sinks their tasks took back since the shard last pruned its list.
    stale: AtomicUsize,
    spawned: Once,
}

/// A sink in a shard's list, valid while the sink is parked under this generation.
type Entry = (Arc<Sink>, u64);

#[derive(Default)]
struct Incoming {
    sinks: Vec<Entry>,
    /// The hub closed: sinks are no longer taken.
    closed: bool,
}

/// A stream's socket as the shards see it.
struct Sink {
    stream: Arc<TcpStream>,
    framing: Framing,
    state: Mutex<SinkState>,
    /// Tells the stream's task that the shard handed the sink back.
    handback: Notify,
}

struct SinkState {
    owner: Owner,
    /// Counts parkings: a shard's entry from an earlier one is stale.
    generation: u64,
    /// The shard of the latest parking.
    shard: usize,
    /// The stream's topics as of its latest parking, shared with its subscription.
    topics: Arc<TopicSet>,
    /// Sequence number of the last log entry written (or skipped: other topics).
    pos: u64,
    /// When something was last written to the socket (heartbeats are due after it).
    last_write: Instant,
    /// The unwritten end of a frame the shard began, for the task to write first.
    rest: Option<Bytes>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Parked: the shard writes.
    Shard,
    /// The stream's task writes (handed back, or taken back by the task).
    Task,
}

/// Buffers of one round, reused from sink to sink.
#[derive(Default)]
struct Scratch<'a> {
    /// The frames of one write.
    slices: Vec<IoSlice<'a>>,
    /// Their events.
    batch: Vec<&'a Arc<Event>>,
    /// Deliveries, by framing (SSE, WebSocket).
    delivered: [u64; 2],
}

/// What `Sink::write` did.
enum Write {
    /// Everything written: the sink stays in the shard.
    Done,
    /// The socket was full (or failed): the sink went back to its task.
    HandedBack,
    /// The sink is no longer parked under this entry: dropped from the shard.
    NotParked,
}

/// What `Sink::heartbeat` did.
pub enum Heartbeat {
    /// Not due: something was written at this instant.
    NotDue(Instant),
    /// Written now.
    Written,
    /// The socket is full: the task owns the sink again, with the rest to write.
    TakenBack,
}

impl Fanout {
    /// The fan-out of `hub`, counting deliveries in `delivered` by transport and
    /// sinks handed back for a full socket in `handed_back`. Its shards run on the
    /// current runtime (else on the runtime of the first parking).
    pub fn new(
        hub: Hub,
        delivered: Family<TransportLabel, Counter>,
        handed_back: Counter,
    ) -> Fanout {
        Fanout {
            hub,
            delivered,
            handed_back,
            shards: (0..SHARDS)
                .map(|_| Shard {
                    incoming: Mutex::new(Incoming::default()),
                    wake: Notify::new(),
                    left: AtomicBool::new(false),
                    stale: AtomicUsize::new(0),
                    spawned: Once::new(),
                })
                .collect(),
            next: Default::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// A sink for a stream's socket, owned by the stream's task until parked. Dropping
    /// it lets go of the socket in the shard too.
    pub fn sink(self: &Arc<Self>, stream: Arc<TcpStream>, framing: Framing) -> SinkHandle {
        SinkHandle {
            fanout: self.clone(),
            sink: Arc::new(Sink {
                stream,
                framing,
                state: Mutex::new(SinkState {
                    owner: Owner::Task,
                    generation: 0,
                    shard: 0,
                    topics: Arc::default(),
                    pos: 0,
                    last_write: Instant::now(),
                    rest: None,
                }),
                handback: Notify::new(),
            }),
        }
    }

    /// Parks `sink` at position `pos`: a shard writes every event after `pos` on
    /// `topics` to it until it hands it back. `false` if the hub is closed (the task
    /// keeps it). A sink parks in the same shard every time, so all its entries (the
    /// stale ones of earlier parkings too) are in one list, which lets go of them when
    /// the stream ends.
    fn park(
        self: &Arc<Self>,
        sink: &Arc<Sink>,
        pos: u64,
        topics: Arc<TopicSet>,
        now: Instant,
    ) -> bool {
        let (index, generation) = {
            let mut state = sink.lock();
            if state.generation == 0 {
                state.shard = self.next.fetch_add(1, Ordering::Relaxed) % SHARDS;
            }
            state.owner = Owner::Shard;
            state.generation += 1;
            state.pos = pos;
            state.topics = topics;
            state.rest = None;
            state.last_write = state.last_write.max(now);
            (state.shard, state.generation)
        };
        let shard = &self.shards[index];
        shard.spawned.call_once(|| {
            let run = self.clone().run(index);
            match &self.runtime {
                Some(runtime) => drop(runtime.spawn(run)),
                None => drop(tokio::spawn(run)),
            }
        });
        let mut incoming = lock(&shard.incoming);
        if incoming.closed {
            drop(incoming);
            sink.lock().owner = Owner::Task;
            return false;
        }
        incoming.sinks.push((sink.clone(), generation));
        drop(incoming);
        shard.wake.notify_one();
        true
    }

    /// The task of the sink whose state is `state` takes it back: if its shard held it,
    /// the shard's entry is stale from now on.
    fn take_from_shard(&self, state: &mut SinkState) -> bool {
        if state.owner != Owner::Shard {
            return false;
        }
        state.owner = Owner::Task;
        self.shards[state.shard]
            .stale
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The stream of `sink` ended: its shard lets go of it (and so of its socket) at
    /// once rather than at the next event.
    fn leave(&self, sink: &Sink) {
        let mut state = sink.lock();
        if state.generation == 0 {
            return; // never parked
        }
        state.owner = Owner::Task;
        let shard = &self.shards[state.shard];
        drop(state);
        shard.left.store(true, Ordering::Release);
        shard.wake.notify_one();
    }

    /// One shard's task: on every new head (and every new sink) writes what each sink
    /// has not had yet, until the hub closes.
    async fn run(self: Arc<Self>, index: usize) {
        let shard = &self.shards[index];
        let mut head = self.hub.watch_head();
        let mut sinks: Vec<Entry> = Vec::new();
        // The delivered counter of each framing, fetched at its first delivery.
        let mut counters: [Option<Counter>; 2] = Default::default();
        // Position every sink of `sinks` has been written up to.
        let mut done = head.as_mut().map_or(0, |h| h.borrow_and_update().head);
        loop {
            let closed = match head.as_mut() {
                None => true,
                Some(head) => tokio::select! {
                    changed = head.changed() => changed.is_err(),
                    () = shard.wake.notified() => false,
                },
            };
            let new = {
                let mut incoming = lock(&shard.incoming);
                incoming.closed |= closed;
                std::mem::take(&mut incoming.sinks)
            };
            if closed {
                // Every sink to its task, which sees the close in its subscription
                // after the events it has not had.
                for (sink, generation) in sinks.drain(..).chain(new) {
                    sink.hand_back(generation, None);
                }
                return;
            }
            let mut from = done;
            for (sink, generation) in new {
                let state = sink.lock();
                if state.owner == Owner::Shard && state.generation == generation {
                    from = from.min(state.pos);
                }
                drop(state);
                sinks.push((sink, generation));
            }
            // Entries of sinks their tasks took back go at once when a stream ended (its
            // socket is let go now), else once there are more than a quarter of them.
            let stale = shard.stale.load(Ordering::Relaxed);
            if shard.left.swap(false, Ordering::Acquire) || stale > sinks.len() / 4 + PRUNE_SLACK {
                shard.stale.fetch_sub(stale, Ordering::Relaxed);
                sinks.retain(|(sink, generation)| sink.is_parked(*generation));
            }
            let latest = head
                .as_ref()
                .map(|h| h.borrow().clone())
                .unwrap_or_default();
            done = if sinks.is_empty() {
                // Nobody to write to: nothing to read either.
                latest.head
            } else {
                self.deliver(&mut sinks, from, latest, &mut counters).await
            };
        }
    }

    /// Writes the events after `from` up to the head to `sinks` (each skipping what it
    /// already has); returns the position reached. Sinks handed back are removed. The
    /// `latest` publish is taken as it is when it follows `from`; anything else is read
    /// from the log.
    async fn deliver(
        &self,
        sinks: &mut Vec<Entry>,
        mut from: u64,
        latest: Published,
        counters: &mut [Option<Counter>; 2],
    ) -> u64 {
        // A newer publish wakes the shard again.
        let target = latest.head;
        let mut latest = Some(latest);
        loop {
            let first = latest
                .as_ref()
                .and_then(|l| l.events.first())
                .map(|e| e.seq);
            let read = match latest.take() {
                Some(latest) if first == Some(from + 1) => Ok(latest.events),
                _ => self.hub.read_after(from, CATCHUP_BATCH).map(Arc::from),
            };
            let events = match read {
                Ok(events) => events,
                Err(first) => {
                    // Those that fell out of retention reset in their tasks.
                    sinks.retain(|(sink, generation)| {
                        let behind = sink.lock().pos + 1 < first;
                        if behind {
                            sink.hand_back(*generation, None);
                        }
                        !behind
                    });
                    from = first - 1;
                    continue;
                }
            };
            let Some(last) = events.last().map(|e| e.seq) else {
                return from;
            };
            let mut full = 0;
            let mut scratch = Scratch::default();
            let mut i = 0;
            while i < sinks.len() {
                // Every YIELD_EVERY sinks, the other tasks of this thread (other
                // streams' deliveries) get their turn.
                let now = Instant::now();
                for _ in 0..YIELD_EVERY {
                    let Some((sink, generation)) = sinks.get(i) else {
                        break;
                    };
                    match sink.write(*generation, &events, now, &mut scratch) {
                        Write::Done => i += 1,
                        Write::HandedBack => {
                            full += 1;
                            sinks.swap_remove(i);
                        }
                        Write::NotParked => {
                            sinks.swap_remove(i);
                        }
                    }
                }
                if i < sinks.len() {
                    tokio::task::yield_now().await;
                }
            }
            for framing in [Framing::Sse, Framing::WebSocket] {
                let n = scratch.delivered[framing as usize];
                if n > 0 {
                    counters[framing as usize]
                        .get_or_insert_with(|| {
                            let label = TransportLabel {
                                transport: framing.transport(),
                            };
                            self.delivered.get_or_create(&label).clone()
                        })
                        .inc_by(n);
                }
            }
            self.handed_back.inc_by(full);
            // Behind live delivery, catching up from the log: lagging, as a
            // subscriber that fell out of the broadcast ring is.
            self.hub.counters().lagged.inc_by(full);
            from = last;
            if from >= target {
                return from;
            }
        }
    }
}

/// A stream's `Sink`, held by the stream's task.
pub struct SinkHandle {
    fanout: Arc<Fanout>,
    sink: Arc<Sink>,
}

impl SinkHandle {
    /// Parks the sink (see [`Fanout`]) where `sub` stands, for its topics, if it has
    /// nothing of its own left to hand out (`Subscription::park`); `false` if it has, or
    /// the hub is closed, and the task keeps writing. `now`: when the task last wrote.
    pub fn park(&self, sub: &mut Subscription, now: Instant) -> bool {
        let Some(pos) = sub.park() else {
            return false;
        };
        if self.fanout.park(&self.sink, pos, sub.shared_topics(), now) {
            return true;
        }
        sub.resume(pos);
        false
    }

    /// A way to take the sink back from wherever the task's writes happen (the
    /// WebSocket codec's IO): see [`Claim`].
    pub fn claim(&self) -> Claim {
        Claim {
            fanout: self.fanout.clone(),
            sink: self.sink.clone(),
        }
    }

    /// Waits until the shard hands the sink back.
    pub async fn handed_back(&self) {
        self.sink.handback.notified().await;
    }

    /// Takes the sink back from the shard (or after it handed it back): `sub` resumes
    /// after what was written; returns the unwritten rest of a frame, to be written
    /// first.
    pub fn take_back(&self, sub: &mut Subscription) -> Option<Bytes> {
        let mut state = self.sink.lock();
        self.fanout.take_from_shard(&mut state);
        let (pos, rest) = (state.pos, state.rest.take());
        drop(state);
        sub.resume(pos);
        rest
    }

    /// Writes a heartbeat `frame` if nothing was written for `every`.
    pub fn heartbeat(&self, frame: &'static [u8], every: std::time::Duration) -> Heartbeat {
        let mut state = self.sink.lock();
        if state.owner != Owner::Shard {
            // Handed back: the task takes it (and any rest of a frame) first.
            return Heartbeat::TakenBack;
        }
        let now = Instant::now();
        if state.last_write + every > now {
            return Heartbeat::NotDue(state.last_write);
        }
        match self.sink.stream.try_write(frame) {
            Ok(n) if n == frame.len() => {
                state.last_write = now;
                Heartbeat::Written
            }
            written => {
                // The socket is full (or failed): the task waits, with its time-out.
                self.fanout.take_from_shard(&mut state);
                let n = written.unwrap_or(0);
                state.rest = (n > 0).then(|| Bytes::from_static(&frame[n..]));
                Heartbeat::TakenBack
            }
        }
    }
}

/// Takes a sink back for a write that does not go through the stream's task loop: the
/// WebSocket codec's own replies (a pong, the echo of a close) come out of a read.
pub struct Claim {
    fanout: Arc<Fanout>,
    sink: Arc<Sink>,
}

impl Claim {
    /// Makes the task the sink's writer: a parked sink stops being written by its shard
    /// (and its task is woken as by a handback). Returns the unwritten rest of a frame
    /// the shard began, which must be written before anything else.
    pub fn claim(&self) -> Option<Bytes> {
        let mut state = self.sink.lock();
        if self.fanout.take_from_shard(&mut state) {
            drop(state);
            self.sink.handback.notify_one();
            return None;
        }
        state.rest.take()
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.fanout.leave(&self.sink);
    }
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, SinkState> {
        lock(&self.state)
    }

    /// Whether the sink is parked under `generation`.
    fn is_parked(&self, generation: u64) -> bool {
        let state = self.lock();
        state.owner == Owner::Shard && state.generation == generation
    }

    /// Hands the sink to its task, with the unwritten `rest` of a frame, if it is
    /// still parked under `generation`.
    fn hand_back(&self, generation: u64, rest: Option<Bytes>) {
        let state = self.lock();
        if state.generation == generation {
            give_back(state, rest, &self.handback);
        }
    }

    /// Writes the events of `events` (consecutive, oldest first) it has not had.
    fn write<'a>(
        &self,
        generation: u64,
        events: &'a [Arc<Event>],
        now: Instant,
        scratch: &mut Scratch<'a>,
    ) -> Write {
        let Scratch {
            slices,
            batch,
            delivered,
        } = scratch;
        let framing = self.framing;
        let delivered = &mut delivered[framing as usize];
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.owner != Owner::Shard || state.generation != generation {
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
            // One write for as many due events as fit.
            slices.clear();
            batch.clear();
            let mut bytes = 0;
            while let Some(event) = due.next_if(|e| {
                batch.is_empty()
                    || (batch.len() < MAX_WRITE_EVENTS
                        && bytes + framing.frame(e).len() <= MAX_WRITE_BYTES)
            }) {
                let frame = framing.frame(event);
                bytes += frame.len();
                batch.push(event);
                slices.push(IoSlice::new(frame));
            }
            let written = if let [one] = slices.as_slice() {
                self.stream.try_write(one)
            } else {
                self.stream.try_write_vectored(slices)
            };
            // Would block, or failed: the task waits (with its time-out) or notices.
            let mut written = written.unwrap_or(0);
            for event in batch.iter() {
                let frame = framing.frame(event);
                if written >= frame.len() {
                    written -= frame.len();
                    state.pos = event.seq;
                    state.last_write = now;
                    *delivered += 1;
                    continue;
                }
                // This frame is cut short (or not begun): the task takes over here.
                let rest = (written > 0).then(|| frame.slice(written..));
                if rest.is_some() {
                    state.pos = event.seq;
                    state.last_write = now;
                    *delivered += 1;
                }
                give_back(guard, rest, &self.handback);
                return Write::HandedBack;
            }
        }
        state.pos = state.pos.max(last.seq);
        Write::Done
    }
}

/// Gives a parked sink (its state locked) to its task with the unwritten `rest` of a
/// frame, and wakes the task. Done under the lock, so nothing can be written between
/// the cut frame and its rest.
fn give_back(mut state: MutexGuard<'_, SinkState>, rest: Option<Bytes>, handback: &Notify) {
    if state.owner == Owner::Shard {
        state.owner = Owner::Task;
        state.rest = rest;
        drop(state);
        handback.notify_one();
    }
}

/// A poisoned lock is still consistent here: every critical section is a few
/// assignments and a non-blocking write.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
