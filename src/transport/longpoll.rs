//! Long polling (SPEC §4.5): everything after the cursor at once, else wait for the next.
//!
//! One answer is `{"events":[…],"cursor":"…"}` plus `"reset"` / `"reconnect"` when they
//! apply. Event envelopes are spliced in as their shared pre-encoded bytes.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};

use super::{Admitted, Expiry};
use crate::error::ApiError;
use crate::event::Event;
use crate::log::{Item, Reset, Subscription};
use crate::protocol::{Reconnect, to_json};

/// Most bytes of events in one long-poll answer: the answer ends with the event that
/// reaches it (so it holds at most this plus one event), and the next poll goes on from
/// its cursor.
pub const MAX_POLL_BYTES: usize = 1 << 20;

/// Answers one poll.
pub(crate) async fn serve(admitted: Admitted) -> Result<Response, ApiError> {
    let Admitted {
        guard,
        topics,
        cursor,
        timeout,
        expires,
        ..
    } = admitted;
    let state = guard.state().clone();
    let wait = wait_time(timeout.as_deref(), state.config.poll_timeout.get())?;
    let batch = state.config.poll_batch;
    let mut sub = Subscription::open(state.log.clone(), topics, cursor.as_ref()).await;

    let mut answer = Answer::default();
    answer.collect(&mut sub, batch);
    let mut reconnect = None;
    if answer.is_empty() {
        let mut expiry = Expiry::new(expires);
        tokio::select! {
            item = sub.next() => match item {
                Some(item) => {
                    answer.push(item);
                    answer.collect(&mut sub, batch);
                }
                // The log closes when the server drains (`Log::close`), as for the
                // streams (a poll made during the drain gets here at once), or when it
                // cannot serve.
                None => reconnect = Some(sub.ended()),
            },
            () = tokio::time::sleep(wait) => {}
            () = expiry.wait() => reconnect = Some(Reconnect::token_expired()),
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

/// One answer. A reset, when there is one, comes before every event in it: a reset that
/// turns up after some events ends the answer just before it (its cursor is the last
/// event's), and the next poll, from that cursor, gets the reset first.
#[derive(Default)]
struct Answer {
    events: Vec<Arc<Event>>,
    reset: Option<Reset>,
    /// Set when the answer was cut before a reset.
    cut: bool,
    /// Bytes of the events' JSON so far.
    bytes: usize,
}

impl Answer {
    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.reset.is_none()
    }

    /// Adds one item. Returns false once the answer must end (a reset after events).
    fn push(&mut self, item: Item) -> bool {
        match item {
            Item::Event(e) => {
                self.bytes += e.json.len() + 1;
                self.events.push(e);
                true
            }
            Item::Reset(r) if self.events.is_empty() => {
                self.reset = Some(r);
                true
            }
            Item::Reset(_) => {
                self.cut = true;
                false
            }
        }
    }

    /// Takes whatever is ready now, up to `batch` events.
    fn collect(&mut self, sub: &mut Subscription, batch: usize) {
        while !self.cut && self.events.len() < batch && self.bytes < MAX_POLL_BYTES {
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
        let cursor = match self.events.last() {
            Some(last) if self.cut => last.id.to_string(),
            _ => sub.cursor(),
        };
        body.put_slice(to_json(&cursor).as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, TopicSet};
    use crate::log::memory::{MemoryConfig, MemoryLog};
    use crate::log::{ResetReason, SharedLog};

    fn body(answer: Answer, sub: &Subscription) -> serde_json::Value {
        let response = answer.into_response(sub, None);
        let bytes = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
            response.into_body(),
            usize::MAX,
        ))
        .expect("body ready")
        .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    fn reset() -> Item {
        Item::Reset(Reset {
            reason: ResetReason::CursorExpired,
            cursor: "x-99".into(),
        })
    }

    /// A reset never follows events inside one answer: the answer ends before it, with
    /// the last event's cursor, so the next poll gets the reset first.
    #[tokio::test]
    async fn a_reset_after_events_cuts_the_answer_before_it() {
        let log: SharedLog = Arc::new(MemoryLog::new(MemoryConfig::default()));
        let events = log
            .append(
                (0..3)
                    .map(|i| NewEvent::new("t", "x", serde_json::json!(i)).expect("event"))
                    .collect(),
            )
            .await
            .expect("append");
        let sub = Subscription::open(log, TopicSet::parse_list("t").expect("topics"), None).await;
        let mut answer = Answer::default();
        assert!(answer.push(Item::Event(events[0].clone())));
        assert!(answer.push(Item::Event(events[1].clone())));
        assert!(
            !answer.push(reset()),
            "a reset after events ends the answer"
        );
        let v = body(answer, &sub);
        assert_eq!(v["events"].as_array().expect("events").len(), 2);
        assert_eq!(v["cursor"], *events[1].id);
        assert!(v.get("reset").is_none());

        let mut answer = Answer::default();
        assert!(answer.push(reset()), "a reset first is kept");
        assert!(answer.push(Item::Event(events[2].clone())));
        let v = body(answer, &sub);
        assert_eq!(v["reset"]["reason"], "cursor_expired");
        assert_eq!(v["events"].as_array().expect("events").len(), 1);
    }
}
