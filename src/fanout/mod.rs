//! Direct fan-out: live events written straight onto the sockets of caught-up streams.
//!
//! A stream's own task costs about 2 µs of user time per delivery on top of the
//! kernel's write (measured over 50 broadcasts to 19,000 SSE subscribers: 12.1 µs per
//! delivery against 9.5 µs for a bare write loop, whose kernel share is the same): the
//! wake-up, a poll through the body layers, the broadcast channel's shared slot and
//! waiter list, all on memory that went cold since the last event. An SSE stream or a
//! WebSocket session that has caught up instead *parks* here: a `Sink` holding its
//! socket, which bytes of an event it takes ([`Output`]), its topics and its position in
//! the log.
//! One of [`SHARDS`] fan-out tasks writes each new event's shared bytes (the SSE frame,
//! or the whole WebSocket frame) to every sink of the shard in turn, in one pass over a
//! vector, as a bare write loop would (9.6 – 9.7 µs per delivery on the same run, two
//! runs; 12.1 – 12.3 µs before, three runs; the bare loop 9.0 – 9.5 µs).
//!
//! A shard reads the log as every reader does ([`crate::log`]): it takes a new append
//! from the head watch ([`Head`]: the events themselves), so it needs no log lock, and
//! reads anything older (a sink that parked behind the head) with `read_after`.
//!
//! The first time a write would block (or fails, or the sink fell out of retention, or
//! the log closes), the shard hands the sink back to the stream's task with its position
//! and the unwritten rest of the frame; the task writes that rest, catches up from the
//! log as any lagging stream does (coalesced, with the send time-out) and parks again
//! once it is through. So a slow reader costs the shard one failed write, never a wait,
//! and nothing is queued per sink. A stream's task can also take its sink back at any
//! time (a WebSocket session that must answer a client frame): after that, the shard
//! writes nothing more to it.
//!
//! The fan-out knows nothing of transports: a stream brings its socket ([`SinkIo`]) and
//! its [`Output`] (which bytes of an event to write, which counter to bump). The hand-off
//! of a socket between a stream's task and a shard is the state machine of `sink.rs`.
//!
//! Work stealing still spreads the fan-out over the runtime's threads: the shards are
//! ordinary tasks, and each yields every [`YIELD_EVERY`] sinks.
//!
//! A busy shard coalesces: when events come faster than one per linger
//! (`SWITCHYARD_FANOUT_LINGER`) and one event's round over every shard takes about as
//! long as the time between events, a shard with one event due waits for up to
//! [`LINGER_EVENTS`] (never past the linger, nor once the next event is late) and
//! writes them in one write per socket. Each write is a segment whose send costs about
//! the same whatever its length, so this divides the CPU per delivery where the fan-out
//! fills the cores; a lightly loaded fan-out never waits (docs/protocol.md has the
//! decision).

mod io;
mod sink;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::event::Event;
use crate::log::{CATCHUP_BATCH, Head, ReadError, SharedLog, Subscription};
pub use io::{Locked, SinkIo, gone, write_all};
pub use sink::Heartbeat;
use sink::{Scratch, Sink, Write, lock};

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
/// Events a busy shard gathers before it writes, if they come within the linger (see
/// `Fanout::busy`). One run each, 2026-12-04, WebSocket fan-out to 1,000 subscribers,
/// one publisher, one event per request, server CPU per delivery: 2 events 4.4 µs, 4
/// events 2.4 µs, 8 events 1.3 µs, 16 events 1.3 µs, at about the same p99 (50 – 64 ms,
/// queueing on the two cores the generator shares); no linger 7.7 µs.
pub const LINGER_EVENTS: u64 = 8;
/// Most events (buffers) one write to one sink carries: the kernel's `IOV_MAX`.
const MAX_WRITE_EVENTS: usize = 1024;

/// Which bytes of an event a kind of stream writes, and where its deliveries are
/// counted. Made once per kind of stream and shared by all its sinks (a shard counts a
/// round's deliveries per `Output`, with one increment each).
pub struct Output {
    /// The shared bytes written for an event.
    pub frame: fn(&Event) -> &Bytes,
    /// Bumped by the number of events written.
    pub delivered: Counter,
}

/// The direct fan-out of one log.
pub struct Fanout {
    log: SharedLog,
    /// Counts sinks handed back because their socket was full.
    handed_back: Counter,
    /// From an append to the first shard's write of it (one observation per append).
    first_write: Histogram,
    /// The newest append observed in `first_write`: the other shards skip it.
    observed: AtomicU64,
    shards: Box<[Shard]>,
    next: AtomicUsize,
    /// Where the shards run: the runtime the fan-out was made on (the stream runtime),
    /// whichever runtime a stream parks from.
    runtime: Option<tokio::runtime::Handle>,
    /// How long a busy shard waits for a second event (see `Fanout::busy`).
    linger: Duration,
}

struct Shard {
    incoming: Mutex<Incoming>,
    /// Wakes the shard's task for new sinks and for sinks that left.
    wake: Notify,
    /// A sink left (its stream ended): the shard lets go of it, and of its socket.
    left: AtomicBool,
    /// Entries of sinks their tasks took back since the shard last pruned its list.
    stale: AtomicUsize,
    /// Entries in the shard's list after its latest round.
    held: AtomicUsize,
    spawned: Once,
}

/// What a shard knows of the pace of events (see [`Fanout::busy`]).
#[derive(Default)]
struct Pace {
    /// When the head last moved.
    last_change: Option<Instant>,
    /// How long the shard's latest round of writes took.
    round: Duration,
}

/// A sink in a shard's list, valid while the sink is parked under this generation.
type Entry = (Arc<Sink>, u64);

#[derive(Default)]
struct Incoming {
    sinks: Vec<Entry>,
    /// The log closed: sinks are no longer taken.
    closed: bool,
}

impl Fanout {
    /// The fan-out of `log`, counting sinks handed back for a full socket in
    /// `handed_back` and the time from an append to its first write in `first_write`;
    /// a busy shard waits up to `linger` for a second event (zero: never;
    /// `SWITCHYARD_FANOUT_LINGER`). Its shards run on the current runtime (else on the runtime of
    /// the first parking).
    pub fn new(
        log: SharedLog,
        handed_back: Counter,
        first_write: Histogram,
        linger: Duration,
    ) -> Fanout {
        Fanout {
            log,
            handed_back,
            first_write,
            observed: AtomicU64::new(0),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    incoming: Mutex::new(Incoming::default()),
                    wake: Notify::new(),
                    left: AtomicBool::new(false),
                    stale: AtomicUsize::new(0),
                    held: AtomicUsize::new(0),
                    spawned: Once::new(),
                })
                .collect(),
            next: Default::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            linger,
        }
    }

    /// A sink for a stream's socket, held by the stream's task until parked. Dropping
    /// it lets go of the socket in the shard too.
    pub fn sink(self: &Arc<Self>, io: Arc<dyn SinkIo>, output: Arc<Output>) -> SinkHandle {
        SinkHandle {
            fanout: self.clone(),
            sink: Arc::new(Sink::new(io, output)),
        }
    }

    /// Parks `sink` at `pos`: a shard writes every event after `pos` on `topics` to it
    /// until it hands it back. `false` if the log is closed (the task keeps it). A sink
    /// parks in the same shard every time, so all its entries (the stale ones of earlier
    /// parkings too) are in one list, which lets go of them when the stream ends.
    fn park(
        self: &Arc<Self>,
        sink: &Arc<Sink>,
        sub: &Subscription,
        pos: u64,
        now: Instant,
    ) -> bool {
        let (index, generation) = {
            let mut state = sink.lock();
            let index = *state
                .shard
                .get_or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed) % SHARDS);
            (index, state.park(pos, sub.shared_topics(), now))
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
            sink.lock().take_back();
            return false;
        }
        incoming.sinks.push((sink.clone(), generation));
        drop(incoming);
        shard.wake.notify_one();
        true
    }

    /// A task took its sink back from shard `from_shard`: that entry is stale now.
    fn stale(&self, from_shard: Option<usize>) {
        if let Some(shard) = from_shard.and_then(|i| self.shards.get(i)) {
            shard.stale.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The stream of `sink` ended: its shard lets go of it (and so of its socket) at
    /// once rather than at the next event.
    fn leave(&self, sink: &Sink) {
        let mut state = sink.lock();
        state.take_back();
        let Some(shard) = state.shard.and_then(|i| self.shards.get(i)) else {
            return; // never parked
        };
        drop(state);
        shard.left.store(true, Ordering::Release);
        shard.wake.notify_one();
    }

    /// Entries (live and stale) in each shard's list after its latest round.
    pub fn held(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| s.held.load(Ordering::Relaxed))
            .collect()
    }

    /// One shard's task: on every new head (and every new sink) writes what each sink
    /// has not had yet, until the log closes.
    async fn run(self: Arc<Self>, index: usize) {
        let shard = &self.shards[index];
        let mut head = self.log.watch();
        let mut sinks: Vec<Entry> = Vec::new();
        // Position every sink of `sinks` has been written up to.
        let mut done = head.as_mut().map_or(0, |h| h.borrow_and_update().seq);
        let mut pace = Pace::default();
        loop {
            let closed = match head.as_mut() {
                None => true,
                Some(head) => self.next_round(shard, head, &mut pace, done).await,
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
                shard.held.store(0, Ordering::Relaxed);
                // A backend that replaced its in-memory copy (the Redis log after a
                // flush: a new epoch) is open again: follow the new one. A closed log
                // (the drain) has no watch.
                if let Some(mut next) = self.log.watch() {
                    done = next.borrow_and_update().seq;
                    head = Some(next);
                    lock(&shard.incoming).closed = false;
                    continue;
                }
                return;
            }
            let mut from = done;
            for (sink, generation) in new {
                if sink.is_parked(generation) {
                    from = from.min(sink.lock().pos);
                }
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
                latest.seq
            } else {
                let start = Instant::now();
                let reached = self.deliver(&mut sinks, from, latest).await;
                pace.round = start.elapsed();
                reached
            };
            shard.held.store(sinks.len(), Ordering::Relaxed);
        }
    }

    /// Waits for a reason to write: a new head (a busy shard then waits a little longer
    /// for more, see [`Fanout::busy`]), or a sink that came or left. `done`: what every
    /// sink of the shard has had. `true` if the log closed.
    async fn next_round(
        &self,
        shard: &Shard,
        head: &mut watch::Receiver<Head>,
        pace: &mut Pace,
        done: u64,
    ) -> bool {
        tokio::select! {
            changed = head.changed() => if changed.is_err() {
                return true;
            },
            () = shard.wake.notified() => return false,
        }
        let now = Instant::now();
        let Some(gap) = pace.last_change.replace(now).map(|t| now - t) else {
            return false;
        };
        let want = done + LINGER_EVENTS;
        if !self.busy(gap, pace.round) || head.borrow().seq >= want {
            return false;
        }
        let closed = self.linger(head, want, gap).await;
        pace.last_change = Some(Instant::now());
        closed
    }

    /// Whether a shard whose latest round took `round` and whose head moved again after
    /// `gap` is busy: events come faster than one per linger, and writing one to every
    /// parked socket (this shard's round times the shards, all of which write every
    /// event) takes about as long as the gap between them. A busy shard with one event
    /// due waits up to the linger for the next, so that both leave in one write to each
    /// socket: on loopback most of a delivery's CPU is the send of its segment (and the
    /// receiver's TCP processing), whatever its length. An idle or lightly loaded
    /// fan-out never waits.
    fn busy(&self, gap: Duration, round: Duration) -> bool {
        gap < self.linger && round * SHARDS as u32 >= gap
    }

    /// Waits until the head reaches `want`, the linger has passed, or the next event is
    /// late (half as long again as the `gap` between the latest two); `true` if the log
    /// closed meanwhile.
    async fn linger(&self, head: &mut watch::Receiver<Head>, want: u64, gap: Duration) -> bool {
        let deadline = Instant::now() + self.linger;
        let mut latest = Instant::now();
        while head.borrow().seq < want {
            let late = (latest + gap.mul_f32(1.5)).min(deadline);
            match tokio::time::timeout_at(late, head.changed()).await {
                Ok(Ok(())) => latest = Instant::now(),
                Ok(Err(_)) => return true,
                Err(_) => break,
            }
        }
        false
    }

    /// Writes the events after `from` up to the head to `sinks` (each skipping what it
    /// already has); returns the position reached. Sinks handed back are removed. The
    /// `latest` append is taken as it is when it follows `from`; anything else is read
    /// from the log.
    async fn deliver(&self, sinks: &mut Vec<Entry>, mut from: u64, latest: Head) -> u64 {
        // A newer append wakes the shard again.
        let target = latest.seq;
        let mut latest = Some(latest);
        // Deliveries of this call, by output (a handful of kinds).
        let mut counts: Vec<(Arc<Output>, u64)> = Vec::new();
        loop {
            let first = latest
                .as_ref()
                .and_then(|l| l.events.first())
                .map(|e| e.seq);
            let mut appended = None;
            let read = match latest.take() {
                Some(latest) if first == Some(from + 1) => {
                    appended = latest.appended;
                    Ok(latest.events)
                }
                _ => self
                    .log
                    .read_after(from, CATCHUP_BATCH)
                    .await
                    .map(Arc::from),
            };
            let events = match read {
                Ok(events) => events,
                Err(ReadError::Expired { first }) => {
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
                Err(ReadError::Unavailable(_)) => {
                    // Every task meets the same error in its subscription and ends.
                    for (sink, generation) in sinks.drain(..) {
                        sink.hand_back(generation, None);
                    }
                    return target;
                }
            };
            let Some(last) = events.last().map(|e| e.seq) else {
                return from;
            };
            // The first shard to write this append times it.
            if let Some(at) = appended
                && !sinks.is_empty()
                && self.observed.fetch_max(last, Ordering::AcqRel) < last
            {
                self.first_write.observe(at.elapsed().as_secs_f64());
            }
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
                    let slot = slot(&mut counts, &sink.output);
                    let delivered = &mut counts[slot].1;
                    match sink.write(*generation, &events, now, &mut scratch, delivered) {
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
            self.handed_back.inc_by(full);
            // Behind live delivery, catching up from the log: lagging, as a reader
            // that falls behind the head is.
            self.log.counters().lagged.inc_by(full);
            from = last;
            if from >= target {
                break;
            }
        }
        for (output, n) in counts {
            output.delivered.inc_by(n);
        }
        from
    }
}

/// The index of `output`'s count in `counts` (a handful of outputs: a linear search).
fn slot(counts: &mut Vec<(Arc<Output>, u64)>, output: &Arc<Output>) -> usize {
    match counts.iter().position(|(o, _)| Arc::ptr_eq(o, output)) {
        Some(i) => i,
        None => {
            counts.push((output.clone(), 0));
            counts.len() - 1
        }
    }
}

/// A stream's sink, held by the stream's task.
pub struct SinkHandle {
    fanout: Arc<Fanout>,
    sink: Arc<Sink>,
}

impl SinkHandle {
    /// Parks the sink (see [`Fanout`]) where `sub` stands, for its topics, if it has
    /// nothing of its own left to hand out (`Subscription::park`); `false` if it has, or
    /// the log is closed, and the task keeps writing. `now`: when the task last wrote.
    pub fn park(&self, sub: &mut Subscription, now: Instant) -> bool {
        let Some(pos) = sub.park() else {
            return false;
        };
        if self.fanout.park(&self.sink, sub, pos, now) {
            return true;
        }
        sub.resume(pos);
        false
    }

    /// Waits until the shard hands the sink back (or the task's [`SinkWriter`] took it).
    pub async fn handed_back(&self) {
        self.sink.handed_back().await;
    }

    /// Takes the sink back (from the shard, or after it handed it back): `sub` resumes
    /// after what was written; returns the unwritten rest of a frame, to be written
    /// first.
    pub fn take_back(&self, sub: &mut Subscription) -> Option<Bytes> {
        let taken = self.sink.lock().take_back();
        self.fanout.stale(taken.from_shard);
        sub.resume(taken.pos);
        taken.rest
    }

    /// Writes a heartbeat `frame` if nothing was written for `every`.
    pub fn heartbeat(&self, frame: &'static [u8], every: std::time::Duration) -> Heartbeat {
        let (beat, from_shard) = self.sink.heartbeat(frame, every);
        self.fanout.stale(from_shard);
        beat
    }

    /// A way to take the sink back from wherever the task's writes happen (the
    /// WebSocket codec's IO): see [`SinkWriter`].
    pub fn writer(&self) -> SinkWriter {
        SinkWriter {
            fanout: self.fanout.clone(),
            sink: self.sink.clone(),
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.fanout.leave(&self.sink);
    }
}

/// Takes a sink back for a write that does not go through the stream's task loop: the
/// WebSocket codec's own replies (a pong, the echo of a close) come out of a read.
pub struct SinkWriter {
    fanout: Arc<Fanout>,
    sink: Arc<Sink>,
}

impl SinkWriter {
    /// Makes the task the sink's writer: a parked sink stops being written by its shard
    /// (and its task is woken as by a handback, to take it back properly). Returns the
    /// unwritten rest of a frame the shard began, which must be written first.
    pub fn take_back(&self) -> Option<Bytes> {
        let taken = self.sink.lock().take_back();
        if taken.from_shard.is_some() {
            self.fanout.stale(taken.from_shard);
            self.sink.wake_task();
        }
        taken.rest
    }
}

#[cfg(test)]
mod tests;
