//! Server-Sent Events (SPEC §4.4): the event's shared SSE bytes, written as they are.
//!
//! axum's `Sse` would re-encode every event per subscriber; here a stream writes the
//! event's pre-encoded frame. Control frames carry `id:` too, so an `EventSource` that
//! reconnects by itself resumes from the right place via `Last-Event-ID`.
//!
//! Every SSE stream is written by one engine (`run`) onto a [`SinkIo`]: the
//! connection's own socket when the request came first on its connection (`serve.rs`,
//! the body then delimited by the close), or a pipe into a hyper body when it came later
//! on a kept-alive connection (`serve_hyper`). Either way it parks in the direct
//! fan-out whenever it has nothing of its own to send, which is most of the time.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::timeout;

use super::ws::SEND_TIMEOUT;
use super::{Admitted, ConnGuard, Expiry, Heartbeat};
use crate::fanout::{Locked, SinkIo, gone, write_all};
use crate::log::{Item, Subscription};
use crate::protocol::{Ready, Reconnect, Transport, to_json};

/// `retry:` sent at the start of a stream: how long a bare `EventSource` waits before
/// reconnecting by itself (the switchyard client reconnects on its own schedule).
pub const RETRY_MS: u64 = 2000;
/// Most bytes written in one chunk when several events are ready at once (coalescing:
/// one write for many events).
pub const MAX_COALESCE_BYTES: usize = 64 * 1024;
/// The pipe between a stream and a hyper body, for an SSE request that is not the
/// first on its connection: a full pipe is a full socket to the engine.
pub const HYPER_PIPE_BYTES: usize = 64 * 1024;

/// A comment line (what curl users see, SPEC §4.4) in the same block as a named
/// `heartbeat` event: `EventSource` hides comments, so the named event is what lets a
/// browser client tell a quiet stream from a stalled one. `onmessage` does not see it.
const HEARTBEAT: &[u8] = b": heartbeat\nevent: heartbeat\ndata: {}\n\n";

/// The response headers of every SSE stream.
pub(crate) fn headers() -> [(HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        ),
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ]
}

/// An admitted SSE stream, subscribed: its first frames and where the rest comes from.
pub(crate) struct Session {
    /// Keeps the stream counted for as long as it lives.
    guard: ConnGuard,
    sub: Subscription,
    heartbeat: Duration,
    /// When its token expires (it ends with `reconnect`, `token_expired`).
    expiry: Expiry,
    /// `retry`, padding and `ready`.
    pub(crate) preamble: Bytes,
}

/// Subscribes an admitted stream.
pub(crate) async fn open(admitted: Admitted) -> Session {
    let Admitted {
        guard,
        topics,
        cursor,
        expires,
        ..
    } = admitted;
    let state = guard.state().clone();
    let heartbeat = state.config.heartbeat.get();
    let sub = Subscription::open(state.log.clone(), topics, cursor.as_ref()).await;
    let mut preamble = BytesMut::new();
    preamble.put_slice(format!("retry: {RETRY_MS}\n").as_bytes());
    padding(&mut preamble, state.config.sse_padding);
    let ready = Ready {
        cursor: sub.cursor(),
        transport: Transport::Sse,
        heartbeat_ms: heartbeat.as_millis() as u64,
        topics: sub.topics(),
    };
    control(&mut preamble, "ready", &ready.cursor, &to_json(&ready));
    Session {
        guard,
        sub,
        heartbeat,
        expiry: Expiry::new(expires),
        preamble: preamble.freeze(),
    }
}

/// Answers an SSE request that hyper serves: the engine writes into a pipe that the
/// response body reads.
pub(crate) async fn serve_hyper(admitted: Admitted) -> Response {
    let session = open(admitted).await;
    let tasks = session.guard.state().tasks.clone();
    let (ours, body) = tokio::io::duplex(HYPER_PIPE_BYTES);
    let io: Arc<dyn SinkIo> = Arc::new(Locked::new(ours));
    tasks.spawn(run(io, Vec::new(), session));
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(body)));
    response.headers_mut().extend(headers());
    response
}

/// Writes an SSE stream onto `io`, after `first` (a response head, if the stream owns
/// the connection): each item as it comes, coalesced; parked in the direct fan-out
/// ([`crate::fanout`]) whenever it has nothing of its own to send.
pub(crate) async fn run(io: Arc<dyn SinkIo>, mut first: Vec<u8>, session: Session) {
    let Session {
        guard,
        mut sub,
        heartbeat: every,
        mut expiry,
        preamble,
    } = session;
    first.extend_from_slice(&preamble);
    drop(preamble);
    if !send(&*io, &first).await {
        return;
    }
    drop(first);
    let state = guard.state().clone();
    let Some(output) = state.output(Transport::Sse) else {
        return;
    };
    // Dropped on every way out: the shard lets go of the socket too.
    let sink = state.fanout.sink(io.clone(), output);
    let mut due = Heartbeat::new(every);
    // Whether the stream has had everything ready (at the head, or just opened): then it
    // parks. A stream that lags catches up on its own, coalesced, and parks once it is
    // through.
    let mut caught_up = true;
    loop {
        let mut expired = false;
        if caught_up && sink.park(&mut sub, due.last()) {
            loop {
                tokio::select! {
                    () = sink.handed_back() => break,
                    () = due.due() => if !due.beat_parked(&sink, HEARTBEAT) {
                        break;
                    },
                    () = expiry.wait() => {
                        expired = true;
                        break;
                    }
                    () = gone(&*io) => return,
                }
            }
            caught_up = false;
            if let Some(rest) = sink.take_back(&mut sub) {
                if !send(&*io, &rest).await {
                    return;
                }
                due.wrote();
            }
        }
        let chunk = if expired {
            Chunk::End(reconnect(&sub, Reconnect::token_expired()))
        } else {
            tokio::select! {
                chunk = next_chunk(&mut sub, &mut due) => chunk,
                () = expiry.wait() => Chunk::End(reconnect(&sub, Reconnect::token_expired())),
                () = gone(&*io) => return,
            }
        };
        match chunk {
            Chunk::Events {
                bytes,
                events,
                more,
            } => {
                if !send(&*io, &bytes).await {
                    return;
                }
                guard.delivered.inc_by(events);
                caught_up = !more;
            }
            Chunk::Heartbeat => {
                if !send(&*io, HEARTBEAT).await {
                    return;
                }
            }
            Chunk::End(bytes) => {
                if send(&*io, &bytes).await {
                    // The end of the body (the shard may still hold the socket).
                    let _ = io.shutdown_write();
                }
                return;
            }
        }
        due.wrote();
    }
}

/// What a stream writes next.
enum Chunk {
    /// Events (and resets), coalesced; `more`: it stopped at the size limit.
    Events {
        bytes: Bytes,
        events: u64,
        more: bool,
    },
    /// Nothing was written for a heartbeat interval.
    Heartbeat,
    /// The server drains: the `reconnect` frame, then the end of the stream.
    End(Bytes),
}

/// Waits for the next chunk of a stream. Cancel-safe: it waits only in
/// `Subscription::next` and the heartbeat timer, both cancel-safe.
async fn next_chunk(sub: &mut Subscription, due: &mut Heartbeat) -> Chunk {
    tokio::select! {
        item = sub.next() => match item {
            Some(item) => {
                let (bytes, events, more) =
                    super::coalesce(item, sub, frame, usize::MAX, MAX_COALESCE_BYTES);
                Chunk::Events { bytes, events, more }
            }
            None => Chunk::End(reconnect(sub, sub.ended())),
        },
        () = due.due() => Chunk::Heartbeat,
    }
}

/// Writes all of `bytes`; `false` if the connection failed or the reader took nothing
/// for [`SEND_TIMEOUT`] (it is gone or stuck: drop it; its subscription was bounded by
/// the log all along).
pub(crate) async fn send(io: &dyn SinkIo, bytes: &[u8]) -> bool {
    matches!(
        timeout(SEND_TIMEOUT, write_all(io, bytes)).await,
        Ok(Ok(()))
    )
}

/// The `reconnect` frame ending a stream: the log closed (the server drains), or the
/// token expired.
fn reconnect(sub: &Subscription, reconnect: Reconnect) -> Bytes {
    let mut buf = BytesMut::new();
    control(&mut buf, "reconnect", &sub.cursor(), &to_json(&reconnect));
    buf.freeze()
}

fn frame(item: Item) -> (Bytes, u64) {
    match item {
        Item::Event(event) => (event.sse.clone(), 1),
        Item::Reset(reset) => {
            let mut buf = BytesMut::new();
            control(&mut buf, "reset", &reset.cursor, &to_json(&reset));
            (buf.freeze(), 0)
        }
    }
}

/// Writes a named control event. Everything here is server-made JSON without newlines.
fn control(buf: &mut BytesMut, name: &str, cursor: &str, json: &str) {
    buf.put_slice(format!("event: {name}\nid: {cursor}\ndata: {json}\n\n").as_bytes());
}

/// A comment line of `bytes` bytes (including `:` and the newline), so proxies that hold
/// back the first few kilobytes let the stream through at once.
fn padding(buf: &mut BytesMut, bytes: usize) {
    if bytes < 2 {
        return;
    }
    buf.put_u8(b':');
    buf.put_bytes(b' ', bytes - 2);
    buf.put_u8(b'\n');
}
