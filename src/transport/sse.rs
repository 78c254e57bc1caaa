//! Server-Sent Events (SPEC §4.4): a streaming body of pre-encoded frames.
//!
//! axum's `Sse` would re-encode every event per subscriber; here the body is a stream of
//! the event's shared SSE bytes. Control frames carry `id:` too, so an `EventSource`
//! that reconnects by itself resumes from the right place via `Last-Event-ID`.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};

use super::{ConnGuard, Heartbeat, Ready, Reconnect, StreamRequest, Transport, to_json};
use crate::hub::Item;

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
pub(crate) fn serve(guard: ConnGuard, request: StreamRequest) -> Response {
    let state = guard.state().clone();
    let heartbeat = state.config.heartbeat.get();
    let mut sub = state.hub.subscribe(request.topics, request.cursor.as_ref());

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
    let head = head.freeze();

    let body = async_stream::stream! {
        // Keeps the stream counted for as long as the body lives.
        let guard = guard;
        yield Ok::<Bytes, Infallible>(head);
        let mut due = Heartbeat::new(heartbeat);
        loop {
            tokio::select! {
                item = sub.next() => {
                    let Some(item) = item else {
                        // The hub closes only when the server drains (`Hub::close`).
                        let reconnect = Reconnect::shutdown();
                        let mut buf = BytesMut::new();
                        control(&mut buf, "reconnect", &sub.cursor(), &to_json(&reconnect));
                        yield Ok(buf.freeze());
                        break;
                    };
                    let (chunk, events) = coalesce(item, &mut sub);
                    guard.delivered.inc_by(events);
                    yield Ok(chunk);
                }
                () = due.due() => {
                    yield Ok(Bytes::from_static(HEARTBEAT));
                }
            }
            due.wrote();
        }
    };

    let mut response = Response::new(Body::from_stream(body));
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

/// The frame for one item, plus every item ready right after it, up to
/// [`MAX_COALESCE_BYTES`]. A single event is its shared bytes, not a copy.
fn coalesce(first: Item, sub: &mut crate::hub::Subscription) -> (Bytes, u64) {
    let (first, mut events) = frame(first);
    let Some(second) = sub.try_next() else {
        return (first, events);
    };
    let mut buf = BytesMut::with_capacity(first.len() * 2);
    buf.put_slice(&first);
    let mut item = Some(second);
    while let Some(next) = item {
        let (bytes, n) = frame(next);
        buf.put_slice(&bytes);
        events += n;
        if buf.len() >= MAX_COALESCE_BYTES {
            break;
        }
        item = sub.try_next();
    }
    (buf.freeze(), events)
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
