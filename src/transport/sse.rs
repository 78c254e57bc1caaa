//! Server-Sent Events (SPEC §4.4): a streaming body of pre-encoded frames.
//!
//! axum's `Sse` would re-encode every event per subscriber; here the body is a stream of
//! the event's shared SSE bytes. Control frames carry `id:` too, so an `EventSource`
//! that reconnects by itself resumes from the right place via `Last-Event-ID`.

use std::convert::Infallible;
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::ws::SEND_TIMEOUT;
use super::{ConnGuard, Heartbeat, Ready, Reconnect, StreamRequest, Transport, to_json};
use crate::fanout::Framing;
use crate::hub::{Item, Subscription};

/// `retry:` sent at the start of a stream: how long a bare `EventSource` waits before
/// reconnecting by itself (the switchyard client reconnects on its own schedule).
pub const RETRY_MS: u64 = 2000;
/// Most bytes written in one chunk when several events are ready at once (coalescing:
/// one write and one flush for many events).
pub const MAX_COALESCE_BYTES: usize = 64 * 1024;

/// A comment line (what curl users see, SPEC §4.4) in the same block as a named
/// `heartbeat` event: `EventSource` hides comments, so the named event is what lets a
/// browser client tell a quiet stream from a stalled one. `onmessage` does not see it.
const HEARTBEAT: &[u8] = b": heartbeat\nevent: heartbeat\ndata: {}\n\n";

/// Answers an SSE request. The response head and the first frames go out at once.
///
/// The response carries its [`Session`] in its extensions: the direct event-stream path
/// (`serve.rs`) takes it out and writes the stream itself ([`write_direct`]); otherwise
/// the body writes it, through hyper.
pub(crate) fn serve(guard: ConnGuard, request: StreamRequest) -> Response {
    let state = guard.state().clone();
    let heartbeat = state.config.heartbeat.get();
    let sub = state.hub.subscribe(request.topics, request.cursor.as_ref());

    let mut head = BytesMut::new();
    head.put_slice(format!("retry: {RETRY_MS}\n").as_bytes());
    padding(&mut head, state.config.sse_padding);
    let ready = Ready {
        cursor: sub.cursor(),
        transport: Transport::Sse,
        heartbeat_ms: heartbeat.as_millis() as u64,
        topics: sub.topics(),
    };
    control(&mut head, "ready", &ready.cursor, &to_json(&ready));
    let session = DirectSession(Arc::new(Mutex::new(Some(Session {
        guard,
        sub,
        heartbeat,
        head: head.freeze(),
    }))));

    let body_session = session.clone();
    let body = async_stream::stream! {
        // Taken by the direct path: the body is never polled.
        let Some(Session { guard, mut sub, heartbeat, head }) = body_session.take() else {
            return;
        };
        yield Ok::<Bytes, Infallible>(head);
        let mut due = Heartbeat::new(heartbeat);
        loop {
            match next_chunk(&mut sub, &mut due).await {
                Chunk::Events { bytes, events, .. } => {
                    guard.delivered.inc_by(events);
                    yield Ok(bytes);
                }
                Chunk::Heartbeat => yield Ok(Bytes::from_static(HEARTBEAT)),
                Chunk::End(bytes) => {
                    yield Ok(bytes);
                    break;
                }
            }
            due.wrote();
        }
    };

    let mut response = Response::new(Body::from_stream(body));
    response.extensions_mut().insert(session);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// An SSE stream not yet begun: its first frames and where the rest comes from.
pub(crate) struct Session {
    /// Keeps the stream counted for as long as it lives.
    guard: ConnGuard,
    sub: Subscription,
    heartbeat: Duration,
    /// `retry`, padding and `ready`.
    head: Bytes,
}

/// The [`Session`] of an SSE response, in its extensions until the direct path or the
/// body takes it.
#[derive(Clone)]
pub(crate) struct DirectSession(Arc<Mutex<Option<Session>>>);

impl DirectSession {
    pub(crate) fn take(&self) -> Option<Session> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Writes an SSE stream on its own socket, after `first` (the response head): each
/// item as it comes, coalesced; parked in the direct fan-out ([`crate::fanout`])
/// whenever it has nothing of its own to send, which is most of the time.
pub(crate) async fn write_direct(stream: TcpStream, mut first: Vec<u8>, session: Session) {
    let Session {
        guard,
        mut sub,
        heartbeat: every,
        head,
    } = session;
    first.extend_from_slice(&head);
    drop(head);
    let stream = Arc::new(stream);
    if !send(&stream, &first).await {
        return;
    }
    drop(first);
    // Dropped on every way out: the shard lets go of the socket too.
    let sink = guard.state().fanout.sink(stream.clone(), Framing::Sse);
    let mut due = Heartbeat::new(every);
    // Whether the stream has had everything ready (at the head, or just opened): then it
    // parks. A stream that lags catches up on its own, coalesced, and parks once it is
    // through.
    let mut caught_up = true;
    loop {
        if caught_up && sink.park(&mut sub, due.last()) {
            loop {
                tokio::select! {
                    () = sink.handed_back() => break,
                    () = due.due() => if !due.beat_parked(&sink, HEARTBEAT) {
                        break;
                    },
                    () = gone(&stream) => return,
                }
            }
            caught_up = false;
            if let Some(rest) = sink.take_back(&mut sub) {
                if !send(&stream, &rest).await {
                    return;
                }
                due.wrote();
            }
        }
        let chunk = tokio::select! {
            chunk = next_chunk(&mut sub, &mut due) => chunk,
            () = gone(&stream) => return,
        };
        match chunk {
            Chunk::Events {
                bytes,
                events,
                more,
            } => {
                if !send(&stream, &bytes).await {
                    return;
                }
                guard.delivered.inc_by(events);
                caught_up = !more;
            }
            Chunk::Heartbeat => {
                if !send(&stream, HEARTBEAT).await {
                    return;
                }
            }
            Chunk::End(bytes) => {
                if send(&stream, &bytes).await {
                    // The end of the body (the shard may still hold the socket).
                    let _ = socket2::SockRef::from(&*stream).shutdown(Shutdown::Write);
                }
                return;
            }
        }
        due.wrote();
    }
}

/// What a stream writes next, whoever writes it (the hyper body or the direct path).
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
                let (bytes, events, more) = coalesce(item, sub);
                Chunk::Events { bytes, events, more }
            }
            None => Chunk::End(reconnect(sub)),
        },
        () = due.due() => Chunk::Heartbeat,
    }
}

/// Writes all of `bytes`; `false` if the socket failed or the reader took nothing for
/// [`SEND_TIMEOUT`] (it is gone or stuck: drop it; its subscription was bounded by the
/// log all along).
pub(crate) async fn send(stream: &TcpStream, bytes: &[u8]) -> bool {
    let write_all = async {
        let mut rest = bytes;
        while !rest.is_empty() {
            stream.writable().await?;
            match stream.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<(), std::io::Error>(())
    };
    matches!(timeout(SEND_TIMEOUT, write_all).await, Ok(Ok(())))
}

/// Resolves when the client has gone (end of stream or an error). A client sends
/// nothing after its request; anything it does send is read and dropped. Cancel-safe.
async fn gone(stream: &TcpStream) {
    let mut scratch = [0u8; 32];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The `reconnect` frame ending a stream: the hub closes only when the server drains
/// (`Hub::close`).
fn reconnect(sub: &Subscription) -> Bytes {
    let reconnect = Reconnect::shutdown();
    let mut buf = BytesMut::new();
    control(&mut buf, "reconnect", &sub.cursor(), &to_json(&reconnect));
    buf.freeze()
}

/// The frame for one item, plus every item ready right after it, up to
/// [`MAX_COALESCE_BYTES`], and whether more may be ready (it stopped at the limit). A
/// single event is its shared bytes, not a copy.
fn coalesce(first: Item, sub: &mut Subscription) -> (Bytes, u64, bool) {
    let (first, mut events) = frame(first);
    let Some(second) = sub.try_next() else {
        return (first, events, false);
    };
    let mut buf = BytesMut::with_capacity(first.len() * 2);
    buf.put_slice(&first);
    let mut item = Some(second);
    while let Some(next) = item {
        let (bytes, n) = frame(next);
        buf.put_slice(&bytes);
        events += n;
        if buf.len() >= MAX_COALESCE_BYTES {
            return (buf.freeze(), events, true);
        }
        item = sub.try_next();
    }
    (buf.freeze(), events, false)
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
