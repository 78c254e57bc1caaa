//! The three transports over one subscription, and the negotiation between them.
//!
//! Each transport is a thin adapter from a [`crate::hub::Subscription`] to its wire
//! format (`ws.rs`, `sse.rs`, `longpoll.rs`). This module holds what they share: query
//! parsing, the operator's on/off switches, origin checks, the connection cap and the
//! control messages (`ready`, `reset`, `reconnect`).

pub mod longpoll;
pub mod sse;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{MatchedPath, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::config::AllowedOrigins;
use crate::error::ApiError;
use crate::event::{Cursor, TopicSet};
use crate::fanout::{Heartbeat as SinkHeartbeat, SinkHandle};
use crate::metrics::{RefusedReason, TransportLabel};

/// The content-negotiated stream endpoint (SPEC §4.2); each transport also has its own
/// ([`Transport::path`]).
pub const STREAM_PATH: &str = "/v1/stream";

/// Range of the `after_ms` a draining server tells clients to wait before reconnecting.
/// Spread at random so a restart does not bring every client back at the same instant.
pub const RECONNECT_AFTER_MS: std::ops::RangeInclusive<u64> = 250..=3000;

/// The three ways to carry a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket, JSON text frames (`/v1/ws`).
    WebSocket,
    /// Server-Sent Events (`/v1/sse`).
    Sse,
    /// HTTP long polling, JSON (`/v1/poll`).
    LongPoll,
}

impl Transport {
    /// Every transport, in the default preference order.
    pub const ALL: [Transport; 3] = [Transport::WebSocket, Transport::Sse, Transport::LongPoll];

    /// The name used in configuration and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
        }
    }

    /// Parses a name as written in `SWITCHYARD_TRANSPORTS`.
    pub fn from_name(name: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The dedicated endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Transport::WebSocket => "/v1/ws",
            Transport::Sse => "/v1/sse",
            Transport::LongPoll => "/v1/poll",
        }
    }
}

impl Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// Query parameters of every stream endpoint. Unknown parameters (cache busters) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamQuery {
    topics: Option<String>,
    cursor: Option<String>,
    timeout: Option<String>,
}

/// A validated stream request.
#[derive(Debug)]
pub(crate) struct StreamRequest {
    pub(crate) topics: TopicSet,
    pub(crate) cursor: Option<Cursor>,
    /// Raw `timeout` (long-poll only; validated there).
    pub(crate) timeout: Option<String>,
}

impl StreamRequest {
    /// Validates the query. `Last-Event-ID` (sent by `EventSource` on reconnect) is newer
    /// than a `cursor` left in the URL, so it wins.
    fn parse(
        query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
        headers: &HeaderMap,
    ) -> Result<StreamRequest, ApiError> {
        let Query(query) = query.map_err(|e| {
            ApiError::bad_request("invalid_query", format!("query string: {}", e.body_text()))
        })?;
        let topics = query.topics.as_deref().ok_or_else(|| {
            ApiError::bad_request(
                "missing_topics",
                "the `topics` query parameter is required, e.g. ?topics=projects/42,notifications/user-7",
            )
        })?;
        let topics = TopicSet::parse_list(topics)
            .map_err(|e| ApiError::bad_request("invalid_topic", e.0))?;
        let last_event_id = match headers.get("last-event-id") {
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "Last-Event-ID is not valid text")
            })?),
            None => None,
        };
        let cursor = match last_event_id
            .filter(|s| !s.is_empty())
            .or(query.cursor.as_deref())
        {
            Some(c) if !c.is_empty() => {
                Some(Cursor::parse(c).map_err(|e| ApiError::bad_request("invalid_cursor", e.0))?)
            }
            _ => None,
        };
        Ok(StreamRequest {
            topics,
            cursor,
            timeout: query.timeout,
        })
    }
}

/// What the operator's switches say about a transport, for errors and negotiation.
pub(crate) fn enabled_names(state: &AppState) -> Vec<&'static str> {
    state.config.transports.0.iter().map(|t| t.name()).collect()
}

/// Refuses `transport` with `503` when the operator switched it off. `named`: whether the
/// error names it (a plain request on `/v1/stream` asked for no transport in particular).
fn require(state: &AppState, transport: Transport, named: bool) -> Result<(), ApiError> {
    if state.config.transports.enabled(transport) {
        return Ok(());
    }
    state.metrics.refuse(RefusedReason::disabled);
    Err(unavailable(state, named.then_some(transport)))
}

/// The `503` for a disabled transport (`Some`) or for no usable transport (`None`).
pub(crate) fn unavailable(state: &AppState, transport: Option<Transport>) -> ApiError {
    let enabled = enabled_names(state);
    let message = if enabled.is_empty() {
        "live updates are switched off; refresh to see changes".to_owned()
    } else {
        match transport {
            Some(t) => format!(
                "the {} transport is disabled by operator (SWITCHYARD_TRANSPORTS); enabled: {}",
                t.name(),
                enabled.join(", ")
            ),
            None => format!(
                "no enabled transport fits this request; enabled: {} (see /v1/negotiate)",
                enabled.join(", ")
            ),
        }
    };
    ApiError::Unavailable {
        code: if enabled.is_empty() {
            "live_updates_off"
        } else {
            "transport_disabled"
        },
        message,
        enabled,
    }
}

/// Why a transport is off, as shown by negotiate and status.
pub(crate) fn disabled_reason(state: &AppState, transport: Transport) -> Option<&'static str> {
    (!state.config.transports.enabled(transport))
        .then_some("disabled by operator (SWITCHYARD_TRANSPORTS)")
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
            SinkHeartbeat::TakenBack => return false,
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

/// Counts one open stream; dropping it closes the count. At most
/// `SWITCHYARD_MAX_CONNECTIONS` exist at once.
pub(crate) struct ConnGuard {
    state: Arc<AppState>,
    open: Gauge,
    /// Delivered-events counter of this stream's transport, fetched once.
    pub(crate) delivered: Counter,
}

impl ConnGuard {
    pub(crate) fn acquire(
        state: &Arc<AppState>,
        transport: Transport,
    ) -> Result<ConnGuard, ApiError> {
        let max = state.config.max_connections;
        let admitted = state
            .open_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            state.metrics.refuse(RefusedReason::capacity);
            return Err(ApiError::Unavailable {
                code: "at_capacity",
                message: format!(
                    "the server holds its maximum of {max} open streams (SWITCHYARD_MAX_CONNECTIONS); retry later"
                ),
                enabled: enabled_names(state),
            });
        }
        let label = TransportLabel { transport };
        let open = state.metrics.open.get_or_create(&label).clone();
        open.inc();
        state.metrics.opened.get_or_create(&label).inc();
        let delivered = state.metrics.delivered.get_or_create(&label).clone();
        Ok(ConnGuard {
            state: state.clone(),
            open,
            delivered,
        })
    }

    pub(crate) fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.open.dec();
        self.state.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `ready`: the first message of every stream.
#[derive(Debug, Serialize)]
pub(crate) struct Ready<'a> {
    pub(crate) cursor: String,
    pub(crate) transport: Transport,
    pub(crate) heartbeat_ms: u64,
    pub(crate) topics: &'a TopicSet,
}

/// `reconnect`: the server is draining; come back after `after_ms`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Reconnect {
    pub(crate) reason: &'static str,
    pub(crate) after_ms: u64,
}

impl Reconnect {
    /// A reconnect for a shutting-down server, with a jittered delay.
    pub(crate) fn shutdown() -> Reconnect {
        Reconnect {
            reason: "shutdown",
            after_ms: rand::rng().random_range(RECONNECT_AFTER_MS),
        }
    }
}

/// Serialises a control message; the structs here cannot fail to serialise.
pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

/// Whether the `Origin` of a browser request may connect. Requests without `Origin`
/// (curl, servers) are not cross-origin and always pass.
fn origin_allowed(allowed: &AllowedOrigins, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_str = origin.to_str().unwrap_or("");
    let ok = match allowed {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin_str)),
        AllowedOrigins::SameOrigin => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let origin_host = origin_str.split_once("://").map(|(_, h)| h);
            matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::OriginNotAllowed(
            origin_str.chars().take(100).collect(),
        ))
    }
}

/// A request that carries `Sec-WebSocket-Key` but no `Upgrade: websocket`: an
/// intermediary stripped the upgrade.
fn upgrade_stripped(headers: &HeaderMap) -> bool {
    headers.contains_key(header::SEC_WEBSOCKET_KEY)
        && !headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

fn stripped_error(state: &AppState) -> ApiError {
    state.metrics.upgrade_stripped.inc();
    tracing::warn!("WebSocket upgrade arrived without its Upgrade header (stripped by a proxy)");
    ApiError::UpgradeStripped {
        enabled: enabled_names(state),
    }
}

/// Whether `Accept` names `text/event-stream` explicitly (with q > 0). `*/*` does not
/// count, so plain curl gets long-poll JSON.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let zero_q = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("text/event-stream") && !zero_q
        })
}

type WsUpgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
type QueryResult = Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>;

/// `GET /v1/stream`: content negotiation (SPEC §4.2).
pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: ws::RawUpgrade,
    upgrade: WsUpgrade,
    query: QueryResult,
) -> Response {
    let result = async {
        if upgrade_stripped(&headers) {
            return Err(stripped_error(&state));
        }
        let transport = match upgrade {
            Ok(_) => Transport::WebSocket,
            Err(_) if accepts_event_stream(&headers) => Transport::Sse,
            Err(_) => Transport::LongPoll,
        };
        // A WebSocket or SSE client cannot read another transport's answer, so only a
        // plain request falls through to long polling; each is refused if its one
        // transport is off.
        require(&state, transport, transport != Transport::LongPoll)?;
        open(&state, transport, &headers, (raw, upgrade), query).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/ws`, `/v1/sse`, `/v1/poll`: one transport each, named by the path.
pub(crate) async fn dedicated(
    State(state): State<Arc<AppState>>,
    path: MatchedPath,
    headers: HeaderMap,
    raw: ws::RawUpgrade,
    upgrade: WsUpgrade,
    query: QueryResult,
) -> Response {
    let Some(transport) = Transport::ALL
        .into_iter()
        .find(|t| t.path() == path.as_str())
    else {
        return ApiError::Internal(format!("no transport serves {}", path.as_str()))
            .into_response();
    };
    serve_one(state, transport, headers, raw, upgrade, query).await
}

async fn serve_one(
    state: Arc<AppState>,
    transport: Transport,
    headers: HeaderMap,
    raw: ws::RawUpgrade,
    upgrade: WsUpgrade,
    query: QueryResult,
) -> Response {
    let result = async {
        if transport == Transport::WebSocket && upgrade_stripped(&headers) {
            return Err(stripped_error(&state));
        }
        require(&state, transport, true)?;
        open(&state, transport, &headers, (raw, upgrade), query).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn open(
    state: &Arc<AppState>,
    transport: Transport,
    headers: &HeaderMap,
    (raw, upgrade): (ws::RawUpgrade, WsUpgrade),
    query: QueryResult,
) -> Result<Response, ApiError> {
    let request = StreamRequest::parse(query, headers)?;
    if let Err(e) = origin_allowed(&state.config.allowed_origins, headers) {
        state.metrics.refuse(RefusedReason::origin);
        return Err(e);
    }
    if transport == Transport::WebSocket {
        let not_a_websocket = |reason: String| {
            ApiError::bad_request(
                "not_a_websocket",
                format!("{reason} (this endpoint only serves WebSocket upgrades)"),
            )
        };
        // axum's extractor checks the request; the session takes the upgrade itself
        // (`raw`), so the extractor's own copy is dropped unused.
        let _checked = upgrade.map_err(|e| not_a_websocket(e.body_text()))?;
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or_else(|| not_a_websocket("`Sec-WebSocket-Key` header is missing".into()))?;
        let guard = ConnGuard::acquire(state, transport)?;
        return ws::serve(guard, raw, key, request);
    }
    let guard = ConnGuard::acquire(state, transport)?;
    match transport {
        Transport::Sse => Ok(sse::serve(guard, request)),
        _ => longpoll::serve(guard, request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A heartbeat is due `every` after the last write, however many writes came before.
    #[tokio::test(start_paused = true)]
    async fn heartbeat_is_due_after_silence_only() {
        let start = tokio::time::Instant::now();
        let mut heartbeat = Heartbeat::new(Duration::from_secs(10));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            heartbeat.wrote();
        }
        heartbeat.due().await;
        let first = start.elapsed();
        assert!(
            first >= Duration::from_secs(22) && first < Duration::from_millis(22_010),
            "due at {first:?}, want 12 s + 10 s"
        );
        heartbeat.wrote();
        heartbeat.due().await;
        let second = start.elapsed() - first;
        assert!(
            second >= Duration::from_secs(10) && second < Duration::from_millis(10_010),
            "next due {second:?} later, want 10 s"
        );
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().expect("header"));
        h
    }

    #[test]
    fn only_an_explicit_event_stream_accept_picks_sse() {
        assert!(accepts_event_stream(&accept("text/event-stream")));
        assert!(accepts_event_stream(&accept(
            "application/json, text/event-stream;q=0.5"
        )));
        assert!(!accepts_event_stream(&accept("*/*")));
        assert!(!accepts_event_stream(&accept("text/event-stream;q=0")));
        assert!(!accepts_event_stream(&HeaderMap::new()));
    }
}
