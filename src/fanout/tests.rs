//! Unit tests of the sink hand-off, with a pipe for a socket: a writer that takes N
//! bytes and then blocks until the test reads.

use std::time::Duration;

use tokio::io::{AsyncReadExt, DuplexStream};

use super::*;
use crate::event::{NewEvent, TopicSet};
use crate::log::Item;
use crate::log::memory::{MemoryConfig, MemoryLog};

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    log: SharedLog,
    fanout: Arc<Fanout>,
    output: Arc<Output>,
}

fn rig() -> Rig {
    rig_lingering(Duration::ZERO)
}

fn rig_lingering(linger: Duration) -> Rig {
    let log: SharedLog = Arc::new(MemoryLog::new(MemoryConfig::default()));
    Rig {
        fanout: Arc::new(Fanout::new(
            log.clone(),
            Counter::default(),
            prometheus_client::metrics::histogram::Histogram::new([0.001]),
            linger,
        )),
        log,
        output: Arc::new(Output {
            frame: |e| &e.sse,
            delivered: Counter::default(),
        }),
    }
}

impl Rig {
    /// A sink over a pipe that holds `capacity` bytes, and the pipe's other end.
    fn sink(&self, capacity: usize) -> (SinkHandle, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(capacity);
        let io: Arc<dyn SinkIo> = Arc::new(Locked::new(ours));
        (self.fanout.sink(io, self.output.clone()), theirs)
    }

    async fn subscribe(&self) -> Subscription {
        let topics = TopicSet::parse_list("a").expect("topics");
        Subscription::open(self.log.clone(), topics, None).await
    }

    /// Publishes one event whose data is `len` bytes of text.
    async fn publish(&self, len: usize) -> Arc<Event> {
        let event = NewEvent::new("a", "t", serde_json::json!("x".repeat(len))).expect("event");
        let mut stored = self.log.append(vec![event]).await.expect("append");
        stored.pop().expect("one event")
    }
}

/// Reads exactly `n` bytes from the pipe, or fails saying what it waited for.
async fn read(pipe: &mut DuplexStream, n: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(WAIT, pipe.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("timed out reading {n} bytes: {what}"))
        .unwrap_or_else(|e| panic!("reading {what}: {e}"));
    buf
}

/// Nothing more is in the pipe (after whatever was asked for was read).
async fn nothing_more(pipe: &mut DuplexStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), pipe.read(&mut byte)).await;
    assert!(read.is_err(), "unexpected bytes in the pipe: {byte:?}");
}

#[tokio::test]
async fn a_cut_frame_is_finished_by_the_task_before_anything_else() {
    let rig = rig();
    let (sink, mut pipe) = rig.sink(100);
    let mut sub = rig.subscribe().await;
    assert!(sink.park(&mut sub, Instant::now()), "parks at the head");
    let event = rig.publish(300).await;
    assert!(event.sse.len() > 300);
    tokio::time::timeout(WAIT, sink.handed_back())
        .await
        .expect("the full pipe hands the sink back");
    let rest = sink.take_back(&mut sub).expect("the rest of the cut frame");
    assert_eq!(rest.len(), event.sse.len() - 100);
    assert_eq!(
        sub.cursor(),
        *event.id,
        "a begun frame counts as handed out"
    );
    assert_eq!(rig.output.delivered.get(), 1);
    let (head, ()) = tokio::join!(read(&mut pipe, event.sse.len(), "the whole frame"), async {
        write_all(&*sink.sink.io, &rest)
            .await
            .expect("write the rest");
    });
    assert_eq!(head, event.sse);
    // The subscription goes on after the event: nothing is delivered twice.
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn entries_of_earlier_parkings_write_nothing() {
    let rig = rig();
    let (sink, mut pipe) = rig.sink(64 * 1024);
    let mut sub = rig.subscribe().await;
    assert!(sink.park(&mut sub, Instant::now()));
    assert_eq!(sink.take_back(&mut sub), None);
    assert!(
        sink.park(&mut sub, Instant::now()),
        "parks again: two entries"
    );
    let first = rig.publish(10).await;
    assert_eq!(
        read(&mut pipe, first.sse.len(), "the first event").await,
        first.sse
    );
    let second = rig.publish(10).await;
    assert_eq!(
        read(&mut pipe, second.sse.len(), "the second event").await,
        second.sse
    );
    nothing_more(&mut pipe).await;
    assert_eq!(rig.output.delivered.get(), 2);
    // Taken back for good: the shard writes nothing more.
    assert_eq!(sink.take_back(&mut sub), None);
    rig.publish(10).await;
    nothing_more(&mut pipe).await;
    assert_eq!(
        sub.cursor(),
        *second.id,
        "resumes after what the shard wrote"
    );
}

#[tokio::test]
async fn a_shard_prunes_the_entries_of_sinks_taken_back() {
    let rig = rig();
    let (sink, _pipe) = rig.sink(64 * 1024);
    let mut sub = rig.subscribe().await;
    for _ in 0..300 {
        assert!(sink.park(&mut sub, Instant::now()));
        assert_eq!(sink.take_back(&mut sub), None);
    }
    assert!(sink.park(&mut sub, Instant::now()));
    rig.publish(10).await;
    let held = tokio::time::timeout(WAIT, async {
        loop {
            let held: usize = rig.fanout.held().iter().sum();
            // 0 until the shard's first round; 301 entries if it did not prune.
            if (1..=PRUNE_SLACK + 1).contains(&held) {
                return held;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("entries not pruned: {:?}", rig.fanout.held()));
    assert!(held <= PRUNE_SLACK + 1);
    drop(sink);
    tokio::time::timeout(WAIT, async {
        while rig.fanout.held().iter().sum::<usize>() > 0 {
            rig.publish(1).await;
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a sink that left is let go");
}

/// A reader that stops reading: the shard hands the sink back at the first write that
/// does not fit; the task finishes the cut frame and catches up from the log. The
/// reader then sees every event once, in order.
#[tokio::test]
async fn a_hand_back_under_load_loses_and_repeats_nothing() {
    let rig = rig();
    let (sink, mut pipe) = rig.sink(4096);
    let mut sub = rig.subscribe().await;
    assert!(sink.park(&mut sub, Instant::now()));
    let mut events = Vec::new();
    for _ in 0..200 {
        events.push(rig.publish(100).await);
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(WAIT, sink.handed_back())
        .await
        .expect("handed back once the pipe is full");
    let want: Vec<u8> = events.iter().flat_map(|e| e.sse.to_vec()).collect();
    let reader = tokio::spawn(async move { read(&mut pipe, want.len(), "every event").await });
    let mut out = sink
        .take_back(&mut sub)
        .map(|rest| rest.to_vec())
        .unwrap_or_default();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
        match item {
            Item::Event(e) => out.extend_from_slice(&e.sse),
            Item::Reset(r) => panic!("unexpected reset {r:?}"),
        }
    }
    write_all(&*sink.sink.io, &out)
        .await
        .expect("the task writes the rest");
    let got = reader.await.expect("reader");
    let want: Vec<u8> = events.iter().flat_map(|e| e.sse.to_vec()).collect();
    assert!(
        got == want,
        "the reader's bytes are not every frame once, in order"
    );
    assert_eq!(sub.cursor(), *events[199].id);
}

#[test]
fn a_shard_is_busy_only_when_events_come_faster_than_it_writes_them() {
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    let fanout = rig_lingering(ms(10)).fanout;
    // 8 shards × 1 ms of writing per event ≥ 5 ms between events.
    assert!(fanout.busy(ms(5), ms(1)));
    // Writing one event takes 4 ms of the 5 between them: keeping up.
    assert!(!fanout.busy(ms(5), us(500)));
    // Events further apart than the linger: never worth waiting for the next.
    assert!(!fanout.busy(ms(20), ms(10)));
    let never = rig().fanout;
    assert!(
        !never.busy(Duration::ZERO, ms(100)),
        "a zero linger never waits"
    );
}

/// On the paused clock: the gaps are exact, and a linger's wait ends as soon as nothing
/// else can run.
#[tokio::test(start_paused = true)]
async fn a_lingering_shard_writes_every_event_once_in_order() {
    let rig = rig_lingering(Duration::from_millis(50));
    let (sink, mut pipe) = rig.sink(1 << 20);
    let mut sub = rig.subscribe().await;
    assert!(sink.park(&mut sub, Instant::now()));
    let mut events = Vec::new();
    // Back to back, then one by one further apart than the linger: both kinds of gap.
    for i in 0..60 {
        events.push(rig.publish(100).await);
        if i >= 50 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    let want: Vec<u8> = events.iter().flat_map(|e| e.sse.to_vec()).collect();
    let got = read(&mut pipe, want.len(), "every event").await;
    assert!(got == want, "the bytes are not every frame once, in order");
    nothing_more(&mut pipe).await;
}
