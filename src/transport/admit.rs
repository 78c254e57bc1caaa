//! The one admission path of a stream: every check between a request head and an open
//! stream, in one function ([`admit`]) that both the axum handlers and the direct socket
//! path (`serve.rs`) call. The token check of private topics belongs here too.
//!
//! In order: a stripped WebSocket upgrade, which transport the request asks for, the
//! operator's switch for it, the query (topics, cursor), the `Origin`, the token (a
//! ticket, a bearer token or the cookie) against every topic, the WebSocket handshake
//! headers, and last the client's share of streams (so a refused request never holds one).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;

use crate::auth::{AuthError, Grant};
use crate::config::AllowedOrigins;
use crate::error::ApiError;
use crate::event::{Cursor, TopicSet};
use crate::headers::{Authority, Peer, limited_client, same_origin};
use crate::metrics::{RefusedReason, TransportLabel};
use crate::protocol::{STREAM_PATH, Transport};
use crate::state::AppState;

/// Which endpoint a stream request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v1/stream`: the transport follows from the request (SPEC §4.2).
    Negotiated,
    /// A transport's own endpoint.
    Dedicated(Transport),
}

impl Route {
    /// The stream route of `path`, if it is one.
    pub fn from_path(path: &str) -> Option<Route> {
        if path == STREAM_PATH {
            return Some(Route::Negotiated);
        }
        Transport::from_path(path).map(Route::Dedicated)
    }
}

/// Query parameters of every stream endpoint. Unknown parameters (cache busters) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
struct StreamQuery {
    topics: Option<String>,
    cursor: Option<String>,
    timeout: Option<String>,
    ticket: Option<String>,
}

/// A stream that passed every check, holding its slot under the connection cap.
pub struct Admitted {
    /// The transport that carries it.
    pub transport: Transport,
    /// Its topics.
    pub topics: TopicSet,
    /// Where it resumes (`Last-Event-ID` over a `cursor` parameter).
    pub cursor: Option<Cursor>,
    /// Raw `timeout` (long-poll only; validated there).
    pub timeout: Option<String>,
    /// `Sec-WebSocket-Key` of a WebSocket handshake.
    pub websocket_key: Option<HeaderValue>,
    /// What the request's token allows, if it carried one.
    pub grant: Option<Grant>,
    /// When the stream must end because its token expires: set when some topic is not
    /// public.
    pub expires: Option<SystemTime>,
    /// Counts the stream as open for as long as it lives.
    pub guard: ConnGuard,
}

/// Admits the stream request `uri` + `headers` came with to `route`, or says why not.
pub async fn admit(
    state: &Arc<AppState>,
    route: Route,
    peer: Peer,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Admitted, ApiError> {
    let authority = state.check_host(peer, headers)?;
    let upgrade = wants_websocket(headers);
    if headers.contains_key(header::SEC_WEBSOCKET_KEY)
        && !upgrade
        && route != Route::Dedicated(Transport::Sse)
        && route != Route::Dedicated(Transport::LongPoll)
    {
        return Err(stripped_error(state));
    }
    let transport = match route {
        Route::Dedicated(transport) => transport,
        Route::Negotiated if upgrade => Transport::WebSocket,
        Route::Negotiated if accepts_event_stream(headers) => Transport::Sse,
        Route::Negotiated => Transport::LongPoll,
    };
    // A WebSocket or SSE client cannot read another transport's answer, so only a plain
    // request on /v1/stream falls through to long polling, and the error names the
    // transport otherwise.
    let named = route != Route::Negotiated || transport != Transport::LongPoll;
    if !state.config.transports.enabled(transport) {
        state.metrics.refuse(RefusedReason::disabled);
        return Err(unavailable(state, named.then_some(transport)));
    }
    let (topics, cursor, timeout, ticket) = parse_query(uri, headers)?;
    if let Err(e) = origin_allowed(&state.config.allowed_origins, &authority, headers) {
        state.refuse(RefusedReason::origin, || {
            format!(
                "{e}; compared with host {:?} (from {}) and scheme {}",
                authority.host.as_deref().unwrap_or(""),
                authority.source,
                authority
                    .scheme
                    .as_deref()
                    .unwrap_or("http or https (no trusted proxy said which)")
            )
        });
        return Err(e);
    }
    let cookies = crate::headers::cookies_count(&state.config.allowed_origins, &authority, headers);
    let (grant, expires) = authorize(state, &topics, ticket.as_deref(), headers, cookies)
        .await
        .map_err(|e| {
            state.metrics.refuse(refused_reason(&e));
            tracing::debug!(code = e.code(), error = %e, "stream refused");
            ApiError::from(e)
        })?;
    let websocket_key = match transport {
        Transport::WebSocket => Some(websocket_handshake(headers)?.clone()),
        _ => None,
    };
    let client = limited_client(&state.config.trusted_proxies, peer, headers);
    let guard = ConnGuard::acquire(state, transport, client)?;
    Ok(Admitted {
        transport,
        topics,
        cursor,
        timeout,
        websocket_key,
        grant,
        expires,
        guard,
    })
}

/// The grant a request carries (a ticket, else a bearer token or the cookie), checked
/// against its topics; and when the stream must end for it. Tokens are not looked at
/// when the server verifies none.
async fn authorize(
    state: &AppState,
    topics: &TopicSet,
    ticket: Option<&str>,
    headers: &HeaderMap,
    cookies: bool,
) -> Result<(Option<Grant>, Option<SystemTime>), AuthError> {
    let access = &state.access;
    let grant = match ticket.filter(|_| access.has_key()) {
        Some(ticket) => Some(
            access
                .tickets
                .redeem(ticket)
                .await
                .map_err(|e| AuthError::Invalid(e.to_string()))?
                .ok_or_else(|| {
                    AuthError::Invalid(
                        "the ticket is unknown, used or expired (a ticket opens one stream, within 30 s of POST /v1/tickets)".into(),
                    )
                })?,
        ),
        None => access.request_grant(headers, cookies)?,
    };
    let needed = access.check(topics, grant.as_ref())?;
    let expires = grant.as_ref().filter(|_| needed).map(|g| g.expires);
    Ok((grant, expires))
}

/// The refusal counter of a token error.
pub(crate) fn refused_reason(e: &AuthError) -> RefusedReason {
    match e {
        AuthError::Required(_) => RefusedReason::token_required,
        AuthError::Invalid(_) => RefusedReason::token_invalid,
        AuthError::Expired => RefusedReason::token_expired,
        AuthError::Forbidden(..) => RefusedReason::topic_forbidden,
    }
}

/// Validates the query. `Last-Event-ID` (sent by `EventSource` on reconnect) is newer
/// than a `cursor` left in the URL, so it wins.
type Query4 = (TopicSet, Option<Cursor>, Option<String>, Option<String>);

pub(crate) fn parse_query(uri: &Uri, headers: &HeaderMap) -> Result<Query4, ApiError> {
    let Query(query) = Query::<StreamQuery>::try_from_uri(uri).map_err(|e| {
        ApiError::bad_request("invalid_query", format!("query string: {}", e.body_text()))
    })?;
    let topics = query.topics.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "missing_topics",
            "the `topics` query parameter is required, e.g. ?topics=projects/42,notifications/user-7",
        )
    })?;
    let topics =
        TopicSet::parse_list(topics).map_err(|e| ApiError::bad_request("invalid_topic", e.0))?;
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
    Ok((topics, cursor, query.timeout, query.ticket))
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`).
fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

/// The handshake headers of RFC 6455 §4.2.1; returns `Sec-WebSocket-Key`.
fn websocket_handshake(headers: &HeaderMap) -> Result<&HeaderValue, ApiError> {
    let not_a_websocket = |reason: &str| {
        ApiError::bad_request(
            "not_a_websocket",
            format!("{reason} (this endpoint only serves WebSocket upgrades)"),
        )
    };
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") {
        return Err(not_a_websocket(
            "Connection header did not include 'upgrade'",
        ));
    }
    if !wants_websocket(headers) {
        return Err(not_a_websocket(
            "`Upgrade` header did not include 'websocket'",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(not_a_websocket(
            "`Sec-WebSocket-Version` header did not include '13'",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| not_a_websocket("`Sec-WebSocket-Key` header is missing"))
}

fn stripped_error(state: &AppState) -> ApiError {
    state.metrics.upgrade_stripped.inc();
    tracing::warn!("WebSocket upgrade arrived without its Upgrade header (stripped by a proxy)");
    ApiError::UpgradeStripped {
        enabled: enabled_names(state),
    }
}

/// What the operator's switches say about a transport, for errors and negotiation.
pub(crate) fn enabled_names(state: &AppState) -> Vec<&'static str> {
    state.config.transports.0.iter().map(|t| t.name()).collect()
}

/// The `503` for a disabled transport (`Some`) or for no usable transport (`None`).
fn unavailable(state: &AppState, transport: Option<Transport>) -> ApiError {
    let enabled = enabled_names(state);
    let message = if enabled.is_empty() {
        "live updates are switched off; refresh to see changes".to_owned()
    } else {
        match transport {
            Some(t) => format!(
                "the {t} transport is disabled by operator (SWITCHYARD_TRANSPORTS); enabled: {}",
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

/// Whether the `Origin` of a browser request may connect. Requests without `Origin`
/// (curl, servers) are not cross-origin and always pass.
fn origin_allowed(
    allowed: &AllowedOrigins,
    request: &Authority,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_str = origin.to_str().unwrap_or("");
    let ok = match allowed {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin_str)),
        AllowedOrigins::SameOrigin => same_origin(origin_str, request),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::OriginNotAllowed(
            origin_str.chars().take(100).collect(),
        ))
    }
}

/// Whether `Accept` names `text/event-stream` explicitly (with q > 0). `*/*` does not
/// count, so plain curl gets long-poll JSON.
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
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

/// Counts one open stream, and its client's share; dropping it closes the count. A
/// client holds at most `SWITCHYARD_MAX_STREAMS_PER_CLIENT` at once. (The server-wide
/// cap is the connection budget's: every stream holds a connection.)
pub struct ConnGuard {
    state: Arc<AppState>,
    open: Gauge,
    /// The client counted in [`AppState::client_streams`], if any.
    client: Option<IpAddr>,
    /// Delivered-events counter of this stream's transport, fetched once.
    pub(crate) delivered: Counter,
    /// `stream_duration_seconds` of this stream's transport, fetched once, and when the
    /// stream opened.
    duration: Histogram,
    opened: std::time::Instant,
}

impl ConnGuard {
    fn acquire(
        state: &Arc<AppState>,
        transport: Transport,
        client: Option<IpAddr>,
    ) -> Result<ConnGuard, ApiError> {
        if let Some(ip) = client
            && !state.client_streams.take(ip)
        {
            state.metrics.refuse(RefusedReason::per_client);
            return Err(ApiError::RateLimited {
                code: "too_many_streams",
                message: format!(
                    "this client holds its maximum of {} open streams \
                     (SWITCHYARD_MAX_STREAMS_PER_CLIENT); close some (one connection per \
                     browser is enough: SPEC §11), then retry",
                    state.client_streams.max()
                ),
                retry_after: 1,
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
            client,
            delivered,
            duration: state.metrics.stream_duration.get_or_create(&label).clone(),
            opened: std::time::Instant::now(),
        })
    }

    /// The server's state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.open.dec();
        if let Some(ip) = self.client {
            self.state.client_streams.release(ip);
        }
        self.duration.observe(self.opened.elapsed().as_secs_f64());
    }
}
