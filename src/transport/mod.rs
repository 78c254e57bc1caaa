//! The transports over one subscription, and the one way a stream is admitted.
//!
//! Each transport is a thin adapter from a [`crate::log::Subscription`] to its wire
//! format (`ws.rs`, `sse.rs`, `longpoll.rs`); [`admit()`] holds every check a stream
//! request passes first. The vocabulary they share (names, paths, control messages)
//! is [`crate::protocol`].

pub mod admit;
pub mod longpoll;
pub mod sse;
pub mod ws;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;

use crate::error::ApiError;
use bytes::{BufMut, Bytes, BytesMut};

use crate::fanout::{Heartbeat as SinkHeartbeat, SinkHandle};
use crate::log::{Item, Subscription};
pub use crate::protocol::{STREAM_PATH, Transport};
use crate::state::AppState;
pub use admit::{Admitted, ConnGuard, Route, accepts_event_stream, admit};
pub(crate) use admit::{enabled_names, refused_reason};

/// Why a transport is off, as shown by negotiate and status.
pub(crate) fn disabled_reason(state: &AppState, transport: Transport) -> Option<&'static str> {
    (!state.config.transports.enabled(transport))
        .then_some("disabled by operator (SWITCHYARD_TRANSPORTS)")
}

/// Every stream endpoint, as served through hyper: the request is admitted, then
/// handed to its transport. (Most streams never get here: `serve.rs` admits an event
/// stream or a WebSocket that comes first on its connection itself.)
pub(crate) async fn handler(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(route) = Route::from_path(parts.uri.path()) else {
        return ApiError::Internal(format!("no transport serves {}", parts.uri.path()))
            .into_response();
    };
    let peer = parts
        .extensions
        .get::<crate::headers::Peer>()
        .copied()
        .unwrap_or_default();
    let admitted = match admit(&state, route, peer, &parts.uri, &parts.headers).await {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    let result = match admitted.transport {
        Transport::WebSocket => ws::serve_upgrade(admitted, parts.extensions.remove::<OnUpgrade>()),
        Transport::Sse => Ok(sse::serve_hyper(admitted).await),
        Transport::LongPoll => longpoll::serve(admitted).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The frame of one item and of every item ready after it, until `max_frames` frames or
/// `max_bytes` bytes; the events among them; whether it stopped at a limit (more may be
/// ready). A single item is its shared frame, not a copy. `frame` gives an item's bytes
/// and whether it is an event.
pub(crate) fn coalesce(
    first: Item,
    sub: &mut Subscription,
    frame: fn(Item) -> (Bytes, u64),
    max_frames: usize,
    max_bytes: usize,
) -> (Bytes, u64, bool) {
    let (first, mut events) = frame(first);
    let Some(second) = sub.try_next() else {
        return (first, events, false);
    };
    let mut buf = BytesMut::with_capacity(first.len() * 2);
    buf.put_slice(&first);
    let mut frames = 1;
    let mut item = Some(second);
    while let Some(next) = item {
        let (bytes, n) = frame(next);
        buf.put_slice(&bytes);
        events += n;
        frames += 1;
        if frames >= max_frames || buf.len() >= max_bytes {
            return (buf.freeze(), events, true);
        }
        item = sub.try_next();
    }
    (buf.freeze(), events, false)
}

/// When a stream's token expires: [`Expiry::wait`] resolves then, and never for a stream
/// that needs no token.
pub(crate) struct Expiry(Option<std::pin::Pin<Box<tokio::time::Sleep>>>);

impl Expiry {
    pub(crate) fn new(at: Option<std::time::SystemTime>) -> Expiry {
        let mut expiry = Expiry(None);
        expiry.set(at);
        expiry
    }

    /// A new expiry (an in-band refresh), or none.
    pub(crate) fn set(&mut self, at: Option<std::time::SystemTime>) {
        self.0 = at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Box::pin(tokio::time::sleep(left))
        });
    }

    /// Resolves when the token expires. Cancel-safe.
    pub(crate) async fn wait(&mut self) {
        match self.0.as_mut() {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

/// When a stream owes its client a heartbeat: after `every` without a write.
///
/// Writes only record the time; the one timer is re-armed when it fires early, so a busy
/// stream does not insert and remove a timer entry per delivery.
pub(crate) struct Heartbeat {
    every: std::time::Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Heartbeat {
    pub(crate) fn new(every: std::time::Duration) -> Heartbeat {
        let last = tokio::time::Instant::now();
        Heartbeat {
            every,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + every)),
        }
    }

    /// Something was just written: the next heartbeat is due `every` from now.
    pub(crate) fn wrote(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Something was written at `at` by someone else (the direct fan-out): the next
    /// heartbeat is due `every` from then.
    pub(crate) fn wrote_at(&mut self, at: tokio::time::Instant) {
        self.last = self.last.max(at);
        self.timer.as_mut().reset(self.last + self.every);
    }

    /// When something was last written.
    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.last
    }

    /// Writes the heartbeat `frame` onto the parked `sink` when it is due (the fan-out
    /// may have written since the timer was set). `false` if the task must take the
    /// sink back first: its socket is full, or the shard handed it back.
    pub(crate) fn beat_parked(&mut self, sink: &SinkHandle, frame: &'static [u8]) -> bool {
        match sink.heartbeat(frame, self.every) {
            SinkHeartbeat::NotDue(at) => self.wrote_at(at),
            SinkHeartbeat::Written => self.wrote(),
            SinkHeartbeat::TaskHolds => return false,
        }
        true
    }

    /// Resolves when a heartbeat is due. Cancel-safe.
    pub(crate) async fn due(&mut self) {
        loop {
            self.timer.as_mut().await;
            let due = self.last + self.every;
            if tokio::time::Instant::now() >= due {
                // Until the caller writes it; then `wrote` moves `last` on.
                self.timer.as_mut().reset(due + self.every);
                return;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests;
