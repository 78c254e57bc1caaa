//! Long polling (SPEC §4.5): everything after the cursor at once, else wait for the next.
//!
//! One answer is `{"events":[…],"cursor":"…"}` plus `"reset"` / `"reconnect"` when they
//! apply. Event envelopes are spliced in as their shared pre-encoded bytes.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};

use super::{ConnGuard, Reconnect, StreamRequest, to_json};
use crate::error::ApiError;
use crate::event::Event;
use crate::hub::{Item, Reset, Subscription};

/// Answers one poll.
pub(crate) async fn serve(guard: ConnGuard, request: StreamRequest) -> Result<Response, ApiError> {
    let state = guard.state().clone();
    let wait = wait_time(request.timeout.as_deref(), state.config.poll_timeout.get())?;
    let batch = state.config.poll_batch;
    let mut sub = state.hub.subscribe(request.topics, request.cursor.as_ref());

    let mut answer = Answer::default();
    answer.collect(&mut sub, batch);
    let mut reconnect = None;
    if answer.is_empty() {
        if state.shutdown.is_cancelled() {
            reconnect = Some(Reconnect::shutdown());
        } else {
            tokio::select! {
                biased;
                () = state.shutdown.cancelled() => reconnect = Some(Reconnect::shutdown()),
                item = sub.next() => {
                    if let Some(item) = item {
                        answer.push(item);
                        answer.collect(&mut sub, batch);
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
    guard.delivered.inc_by(answer.events.len() as u64);
    Ok(answer.into_response(&sub, reconnect))
}

/// The `timeout` parameter: whole seconds, capped at `SWITCHYARD_POLL_TIMEOUT`.
fn wait_time(raw: Option<&str>, cap: Duration) -> Result<Duration, ApiError> {
    let Some(raw) = raw else { return Ok(cap) };
    let secs: u64 = raw.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_timeout",
            format!(
                "timeout {:?} must be a whole number of seconds (0 answers at once; at most {} s are waited)",
                raw.chars().take(20).collect::<String>(),
                cap.as_secs()
            ),
        )
    })?;
    Ok(Duration::from_secs(secs).min(cap))
}

#[derive(Default)]
struct Answer {
    events: Vec<Arc<Event>>,
    reset: Option<Reset>,
}

impl Answer {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.reset.is_none()
    }

    /// Adds one item. Returns false once the answer must end (a reset after events: the
    /// client handles those events, then the reset).
    fn push(&mut self, item: Item) -> bool {
        match item {
            Item::Event(e) => {
                self.events.push(e);
                true
            }
            Item::Reset(r) => {
                let first = self.events.is_empty();
                self.reset = Some(r);
                first
            }
        }
    }

    /// Takes whatever is ready now, up to `batch` events.
    fn collect(&mut self, sub: &mut Subscription, batch: usize) {
        if self.reset.is_some() && !self.events.is_empty() {
            return;
        }
        while self.events.len() < batch {
            match sub.try_next() {
                Some(item) => {
                    if !self.push(item) {
                        break;
                    }
                }
                None => break,
            }
        }
    }

    fn into_response(self, sub: &Subscription, reconnect: Option<Reconnect>) -> Response {
        let size: usize = self.events.iter().map(|e| e.json.len() + 1).sum();
        let mut body = BytesMut::with_capacity(size + 128);
        body.put_slice(b"{\"events\":[");
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                body.put_u8(b',');
            }
            body.put_slice(&event.json);
        }
        body.put_slice(b"],\"cursor\":");
        body.put_slice(to_json(&sub.cursor()).as_bytes());
        if let Some(reset) = &self.reset {
            body.put_slice(b",\"reset\":");
            body.put_slice(to_json(reset).as_bytes());
        }
        if let Some(reconnect) = &reconnect {
            body.put_slice(b",\"reconnect\":");
            body.put_slice(to_json(reconnect).as_bytes());
        }
        body.put_slice(b"}\n");
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body.freeze(),
        )
            .into_response()
    }
}
