//! The non-streaming endpoints: publish, negotiate, reports, status, metrics, health.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{AuthError, TicketError, request_token};
use crate::error::ApiError;
use crate::event::{NewEvent, TopicSet};
use crate::headers::Peer;
use crate::idempotency::{Begin, Claim};
#[allow(unused_imports)] // The schemas are named in the `#[utoipa::path]` attributes only.
use schema::{
    ErrorBody, NegotiateParams, Negotiated, PublishBody, Published, Ready, ReportBody, Ticket,
};

pub mod schema;
use crate::metrics::{
    ClosedLabel, ClosedReason, FallbackLabel, RateLimited, RefusedLabel, RefusedReason,
    TransportLabel,
};
use crate::state::AppState;
use crate::transport::{Transport, disabled_reason};

/// Largest publish body, in bytes.
pub const MAX_PUBLISH_BODY: usize = 1024 * 1024;
/// Most events in one publish request.
pub const MAX_PUBLISH_BATCH: usize = 1000;
/// Largest report body, in bytes.
pub const MAX_REPORT_BODY: usize = 1024;
pub use crate::limits::REPORTS_PER_SECOND;
pub use crate::protocol::REPORT_REASONS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishEvent {
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

/// `POST /v1/events`: one event or an array of them → `201 {"ids":[…]}`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "api",
    summary = "Publish one event, or several in order",
    request_body(content = PublishBody, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "1–255 visible ASCII characters: a retry with the same key and body within SWITCHYARD_IDEMPOTENCY_WINDOW gets the first ids and stores nothing"),
    ),
    security((), ("publish_key" = [])),
    responses(
        (status = 201, description = "Stored (or replayed)", body = Published,
            headers(("Idempotent-Replayed" = String, description = "`true` when answered from an earlier publish with the same Idempotency-Key and body"))),
        (status = 400, description = "Invalid JSON, event or Idempotency-Key", body = ErrorBody),
        (status = 401, description = "The publish key is missing or wrong", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 408, description = "The body took longer than SWITCHYARD_REQUEST_TIMEOUT", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for another body, or is in use", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds, when a retry can succeed"))),
        (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 429, description = "Too many wrong publish keys from this client", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "The log (or the idempotency store) could not store it; nothing was published", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn publish(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let client = client_of(&state, peer, &headers);
    authorize(&state, client, &headers)?;
    require_json(&headers)?;
    let body = body.map_err(|e| body_error(e, MAX_PUBLISH_BODY))?;
    let events = parse_publish_body(&body)?;
    let Some(claim) = idempotency_claim(&headers, &body)? else {
        let stored = state.publish(events).await?;
        let ids: Vec<&str> = stored.iter().map(|e| &*e.id).collect();
        return Ok(published(&ids, false));
    };
    let store = &state.idempotency;
    match store.begin(&claim).await.map_err(idempotency_unavailable)? {
        Begin::New => {}
        Begin::Replay(ids) => {
            state.metrics.idempotent_replays.inc();
            return Ok(published(&ids, true));
        }
        Begin::Reused => {
            return Err(ApiError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for another body within SWITCHYARD_IDEMPOTENCY_WINDOW; use a new key for a new publish".into(),
                retry_after: None,
            });
        }
        Begin::InUse => {
            return Err(ApiError::Conflict {
                code: "idempotency_key_in_use",
                message: "a request with this Idempotency-Key is being stored now; retry in a moment to get its ids".into(),
                retry_after: Some(1),
            });
        }
    }
    let stored = match state.publish(events).await {
        Ok(stored) => stored,
        Err(e) => {
            store.abandon(&claim).await;
            return Err(e);
        }
    };
    let ids: Vec<String> = stored.iter().map(|e| e.id.to_string()).collect();
    if let Err(e) = store.complete(&claim, &ids).await {
        // Published already: answer the ids; a retry may then publish again.
        tracing::warn!(error = %e, "an idempotency key could not be recorded");
    }
    Ok(published(&ids, false))
}

/// `201 {"ids":[…]}`; with `Idempotent-Replayed: true` when answered from an earlier
/// publish with the same Idempotency-Key and body.
fn published<S: Serialize>(ids: &[S], replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response();
    if replayed {
        response.headers_mut().insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// The request's `Idempotency-Key` as a claim on `body`, if it has one.
fn idempotency_claim(headers: &HeaderMap, body: &[u8]) -> Result<Option<Claim>, ApiError> {
    let mut keys = headers.get_all("idempotency-key").iter();
    let Some(key) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "send one Idempotency-Key header, not several",
        ));
    }
    Claim::new(key.as_bytes(), body)
        .map(Some)
        .map_err(|m| ApiError::bad_request("invalid_idempotency_key", m))
}

fn idempotency_unavailable(e: crate::idempotency::Unavailable) -> ApiError {
    ApiError::Unavailable {
        code: "idempotency_unavailable",
        message: format!("{e}; nothing was published, retry later"),
        enabled: Vec::new(),
    }
}

/// A publish body: one event or an array of 1 to [`MAX_PUBLISH_BATCH`], each checked,
/// or the error that says which is wrong and why.
pub(crate) fn parse_publish_body(body: &[u8]) -> Result<Vec<NewEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("body is not valid JSON ({e}); expected {{\"topic\",\"type\",\"data\"}} or an array of them"),
        )
    })?;
    let (items, array) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_event",
            "the array of events is empty",
        ));
    }
    if items.len() > MAX_PUBLISH_BATCH {
        return Err(ApiError::bad_request(
            "too_many_events",
            format!(
                "at most {MAX_PUBLISH_BATCH} events per request, got {}",
                items.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = if array {
            format!("event {i}: ")
        } else {
            String::new()
        };
        let raw: PublishEvent = serde_json::from_value(item).map_err(|e| {
            ApiError::bad_request(
                "invalid_event",
                format!(
                    "{at}{e}; an event is {{\"topic\":string,\"type\":string,\"data\":any JSON}}"
                ),
            )
        })?;
        let event = NewEvent::new(&raw.topic, &raw.kind, raw.data)
            .map_err(|e| ApiError::bad_request("invalid_event", format!("{at}{}", e.0)))?;
        events.push(event);
    }
    Ok(events)
}

/// The client's address of a request (see [`crate::headers::client_ip`]).
fn client_of(
    state: &AppState,
    peer: Option<axum::Extension<Peer>>,
    headers: &HeaderMap,
) -> Option<std::net::IpAddr> {
    let peer = peer.map_or(Peer(None), |axum::Extension(p)| p);
    crate::headers::client_ip(&state.config.trusted_proxies, peer, headers)
}

/// Checks the publish key. A client that sent too many wrong ones is refused with 429
/// before its key is even looked at.
fn authorize(
    state: &AppState,
    client: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(key) = &state.config.publish_key else {
        return Ok(());
    };
    if client.is_some_and(|ip| state.key_failures.exhausted(ip)) {
        state.metrics.rate_limit(RateLimited::publish_key);
        return Err(ApiError::RateLimited {
            code: "rate_limited",
            message: "too many wrong publish keys from this address (SWITCHYARD_KEY_FAILURES_PER_MINUTE); retry later".into(),
            retry_after: 60_u64.div_ceil(u64::from(state.config.key_failures_per_minute)),
        });
    }
    let failed = |e: ApiError| {
        if let Some(ip) = client {
            state.key_failures.admit(ip);
        }
        e
    };
    authorize_key(key, headers).map_err(failed)
}

fn authorize_key(key: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "publishing needs `Authorization: Bearer <SWITCHYARD_PUBLISH_KEY>`",
        ))?
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        })
        .ok_or(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <key>`",
        ))?;
    if constant_time_eq::constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the publish key is wrong"))
    }
}

/// Bodies must be declared JSON. Besides clarity, this is what stops a web page on
/// another site from publishing through the user's browser: a cross-origin JSON POST
/// needs a CORS preflight, which only allowed origins pass (a text/plain or form POST
/// would not).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(if content_type.is_empty() {
            "missing".to_owned()
        } else {
            content_type.chars().take(60).collect()
        }))
    }
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::bad_request("invalid_body", e.body_text())
    }
}

/// `mode` as the spec names it, for a client that takes the operator's first choice:
/// `live` when that is WebSocket, `degraded` when it is a fallback, `off` when nothing
/// is enabled.
fn mode(state: &AppState) -> &'static str {
    match state.config.transports.0.first() {
        Some(Transport::WebSocket) => "live",
        Some(_) => "degraded",
        None => "off",
    }
}

#[derive(Deserialize)]
pub(crate) struct NegotiateQuery {
    topics: Option<String>,
}

#[derive(Serialize)]
struct Offered {
    name: Transport,
    url: &'static str,
}

#[derive(Serialize)]
struct Disabled {
    name: Transport,
    reason: &'static str,
}

/// `GET /v1/negotiate`: transports to try, in order, and the settings a client needs.
#[utoipa::path(
    get,
    path = "/v1/negotiate",
    tag = "api",
    summary = "Transports to try, in order, and what a client needs to connect",
    params(NegotiateParams),
    security((), ("token" = [])),
    responses(
        (status = 200, description = "The offer", body = Negotiated),
        (status = 400, description = "Bad query or topics", body = ErrorBody),
        (status = 401, description = "A private topic without a usable token", body = ErrorBody),
        (status = 403, description = "A topic the token does not allow", body = ErrorBody),
    )
)]
pub(crate) async fn negotiate(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    query: Result<Query<NegotiateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request("invalid_query", format!("query string: {}", e.body_text()))
    })?;
    let mut token_left = None;
    if let Some(topics) = query.topics.as_deref() {
        let topics = TopicSet::parse_list(topics)
            .map_err(|e| ApiError::bad_request("invalid_topic", e.0))?;
        // The stream would be refused for its topics: say so here, where a browser can
        // read the answer (it cannot read a refused WebSocket upgrade or EventSource).
        let cookies = state.cookies_count(peer.map(|p| p.0).unwrap_or_default(), &headers);
        let grant = state.access.request_grant(&headers, cookies)?;
        if state.access.check(&topics, grant.as_ref())? {
            // By the server's clock, so a client with a skewed clock still knows when
            // to fetch the next token before a poll would carry an expired one.
            token_left = grant.map(|g| {
                g.expires
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .as_millis() as u64
            });
        }
    }
    let transports: Vec<Offered> = state
        .config
        .transports
        .0
        .iter()
        .map(|&name| Offered {
            name,
            url: name.path(),
        })
        .collect();
    let disabled: Vec<Disabled> = Transport::ALL
        .into_iter()
        .filter_map(|name| disabled_reason(&state, name).map(|reason| Disabled { name, reason }))
        .collect();
    let mut body = json!({
        "transports": transports,
        "disabled": disabled,
        "mode": mode(&state),
        "cursor": state.log.stats().head,
        "heartbeat_ms": state.config.heartbeat.get().as_millis() as u64,
        "poll_timeout_ms": state.config.poll_timeout.get().as_millis() as u64,
    });
    if let (Some(left), Some(obj)) = (token_left, body.as_object_mut()) {
        obj.insert("token_expires_in_ms".into(), left.into());
    }
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    from: String,
    to: String,
    reason: String,
}

/// `POST /v1/tickets`: the request's token (Bearer, or the `switchyard_token` cookie)
/// for a one-time ticket, good for one stream open (`?ticket=`) within 30 s.
#[utoipa::path(
    post,
    path = "/v1/tickets",
    tag = "api",
    summary = "A one-time ticket for a stream, for the request's token",
    security(("token" = [])),
    responses(
        (status = 201, description = "The ticket", body = Ticket),
        (status = 400, description = "This server verifies no tokens", body = ErrorBody),
        (status = 401, description = "No usable token", body = ErrorBody),
        (status = 408, description = "The request took longer than SWITCHYARD_REQUEST_TIMEOUT", body = ErrorBody),
        (status = 413, description = "A body over 1024 bytes", body = ErrorBody),
        (status = 429, description = "Too many tickets waiting", body = ErrorBody),
        (status = 503, description = "The ticket store is unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn ticket(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !state.access.has_key() {
        return Err(ApiError::bad_request(
            "tokens_off",
            "this server verifies no tokens (no SWITCHYARD_TOKEN_SECRET or SWITCHYARD_TOKEN_PUBLIC_KEY_FILE): connect without a ticket",
        ));
    }
    let cookies = state.cookies_count(peer.map(|p| p.0).unwrap_or_default(), &headers);
    let token = request_token(&headers, cookies)?.ok_or_else(|| ApiError::Token {
        code: "token_required",
        message: "POST /v1/tickets takes the token as `Authorization: Bearer <jwt>` or the switchyard_token cookie".into(),
        topic: None,
    })?;
    let grant = state
        .access
        .verify(token)
        .inspect_err(|e| refused(&state, e))?;
    let (ticket, ttl) = state
        .access
        .tickets
        .issue(grant)
        .await
        .map_err(|e| match e {
            TicketError::Full => ApiError::TooManyRequests(
                "too many tickets are waiting for their streams; retry in a few seconds",
            ),
            TicketError::Unavailable(why) => ApiError::Unavailable {
                code: "log_unavailable",
                message: format!("the ticket store is unavailable: {why}"),
                enabled: Vec::new(),
            },
        })?;
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(json!({ "ticket": ticket, "expires_in_ms": ttl.as_millis() as u64 })),
    )
        .into_response())
}

/// Counts a refused token.
fn refused(state: &AppState, e: &AuthError) {
    state.metrics.refuse(crate::transport::refused_reason(e));
}

/// `POST /v1/reports`: a browser client says it fell back, and why. Counted, not stored.
#[utoipa::path(
    post,
    path = "/v1/reports",
    tag = "api",
    summary = "A browser client reports a fallback (counted, not stored)",
    request_body(content = ReportBody, content_type = "application/json"),
    responses(
        (status = 204, description = "Counted"),
        (status = 400, description = "Not a report", body = ErrorBody),
        (status = 408, description = "The body took longer than SWITCHYARD_REQUEST_TIMEOUT", body = ErrorBody),
        (status = 413, description = "A body over 1024 bytes", body = ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = ErrorBody),
        (status = 429, description = "Too many reports (from this client, or all together)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(crate) async fn report(
    State(state): State<Arc<AppState>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let client = client_of(&state, peer, &headers);
    require_json(&headers)?;
    let body = body.map_err(|e| body_error(e, MAX_REPORT_BODY))?;
    let report: Report = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_report",
            format!("{e}; a report is {{\"from\":transport,\"to\":transport or \"none\",\"reason\":string}}"),
        )
    })?;
    let transport_or_none = |name: &str| name == "none" || Transport::from_name(name).is_some();
    if !transport_or_none(&report.from) || !transport_or_none(&report.to) {
        return Err(ApiError::bad_request(
            "invalid_report",
            format!("from and to must each be {} or none", Transport::names()),
        ));
    }
    if !REPORT_REASONS.contains(&report.reason.as_str()) {
        return Err(ApiError::bad_request(
            "invalid_report",
            format!("reason must be one of {}", REPORT_REASONS.join(", ")),
        ));
    }
    if client.is_some_and(|ip| !state.client_reports.admit(ip)) {
        state.metrics.reports_dropped.inc();
        state.metrics.rate_limit(RateLimited::reports);
        return Err(ApiError::RateLimited {
            code: "rate_limited",
            message: "too many reports from this address (SWITCHYARD_REPORTS_PER_CLIENT); this one was not counted".into(),
            retry_after: 1,
        });
    }
    if !state.reports.admit() {
        state.metrics.reports_dropped.inc();
        return Err(ApiError::TooManyRequests(
            "too many reports; this one was not counted",
        ));
    }
    tracing::info!(from = %report.from, to = %report.to, reason = %report.reason, "client fell back");
    state
        .metrics
        .fallbacks
        .get_or_create(&FallbackLabel {
            from: report.from.to_ascii_lowercase(),
            to: report.to.to_ascii_lowercase(),
            reason: report.reason,
        })
        .inc();
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/status`: the server's state as JSON.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    summary = "Connections, transports, the log and counters (docs/protocol.md §6.3)",
    responses(
        (status = 200, description = "The figures", body = Object),
    )
)]
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let mut transports = serde_json::Map::new();
    for t in Transport::ALL {
        let label = TransportLabel { transport: t };
        transports.insert(
            t.name().to_owned(),
            json!({
                "enabled": state.config.transports.enabled(t),
                "reason": disabled_reason(&state, t),
                "open": m.open.get_or_create(&label).get(),
                "total": m.opened.get_or_create(&label).get(),
                "delivered": m.delivered.get_or_create(&label).get(),
            }),
        );
    }
    let mut fallbacks = serde_json::Map::new();
    let ends: Vec<&str> = Transport::ALL
        .iter()
        .map(|t| t.name())
        .chain(["none"])
        .collect();
    for t_from in &ends {
        for t_to in &ends {
            for reason in REPORT_REASONS {
                let label = FallbackLabel {
                    from: (*t_from).into(),
                    to: (*t_to).into(),
                    reason: (*reason).into(),
                };
                // Read without creating entries for label sets never seen.
                let n = m.fallbacks.get(&label).map_or(0, |c| c.get());
                if n > 0 {
                    let entry = fallbacks.entry(*reason).or_insert(json!(0));
                    *entry = json!(entry.as_u64().unwrap_or(0) + n);
                }
            }
        }
    }
    let delivered: u64 = Transport::ALL
        .iter()
        .map(|&t| {
            m.delivered
                .get_or_create(&TransportLabel { transport: t })
                .get()
        })
        .sum();
    let refused = counts(RefusedReason::ALL.iter().map(|&reason| {
        let n = m
            .refused
            .get(&RefusedLabel { reason })
            .map_or(0, |c| c.get());
        (reason.name(), n)
    }));
    let closed = counts(ClosedReason::ALL.iter().map(|&reason| {
        let n = m.closed.get(&ClosedLabel { reason }).map_or(0, |c| c.get());
        (reason.name(), n)
    }));
    let rate_limited = counts(RateLimited::ALL.iter().map(|&limit| {
        let label = crate::metrics::RateLimitedLabel { limit };
        (
            limit.name(),
            m.rate_limited.get(&label).map_or(0, |c| c.get()),
        )
    }));
    let log = state.log.stats();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "epoch": state.log.epoch(),
        "cursor": log.head,
        "mode": mode(&state),
        "draining": state.shutdown.is_cancelled(),
        "transports": transports,
        "connections": {
            "open": state.open_streams(),
            "max": state.budget.max(),
            "sockets": state.budget.open(),
            "reserve": crate::limits::RESERVE_CONNECTIONS,
            "per_client": state.budget.per_client(),
            "streams_per_client": state.client_streams.max(),
            "stream_clients": state.client_streams.clients(),
            "new_per_client_per_s": state.config.new_connections_per_client,
            "configured_max": state.config.max_connections,
            "refused": closed,
        },
        "log": {
            "retained": log.retained,
            "oldest": log.oldest,
            "backend": state.log_backend(),
            "unavailable": state.log.ready().err(),
            "errors": m.log.errors.get(),
            "lag_ms": m.log.lag_ms.get(),
            "retained_bytes": log.retained_bytes,
            "retain": state.config.retain,
            "retain_bytes": state.config.retain_bytes.get(),
            "retain_age_s": state.config.retain_age.get().as_secs(),
        },
        "counters": {
            "published": m.log.published.get(),
            "delivered": delivered,
            "resets": m.log.resets.get(),
            "lagged": m.log.lagged.get(),
            "upgrade_stripped": m.upgrade_stripped.get(),
            "fallbacks": fallbacks,
            "reports_dropped": m.reports_dropped.get(),
            "idempotent_replays": m.idempotent_replays.get(),
            "idempotency_evicted": state.idempotency.evicted(),
            "refused": refused,
            "rate_limited": rate_limited,
        },
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

/// A JSON object of counts by name, for status.
fn counts<'a>(pairs: impl Iterator<Item = (&'a str, u64)>) -> serde_json::Map<String, Value> {
    pairs.map(|(name, n)| (name.to_owned(), json!(n))).collect()
}

/// `GET /metrics`: Prometheus / OpenMetrics text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus text, or OpenMetrics when `Accept` asks for it",
    responses(
        (status = 200, description = "The metrics",
            content((String = "text/plain"), (String = "application/openmetrics-text"))),
    )
)]
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let m = &state.metrics;
    m.connections.set(i64::from(state.budget.open()));
    let log = state.log.stats();
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.log_retained.set(gauge(log.retained as u64));
    m.log_retained_bytes.set(gauge(log.retained_bytes));
    m.log_lag.set(m.log.lag_ms.get() as f64 / 1000.0);
    // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets 0.0.4 text.
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (text, content_type) = m
        .encode(openmetrics)
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response())
}

/// `GET /readyz` (SPEC §10): `200` when this node can serve — not draining, and its log
/// answers — else `503`, with the reason; for load balancers and orchestrators.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: for load balancers and orchestrators",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready (draining, or the log cannot serve)", body = Ready),
    )
)]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let backend = state.log_backend();
    let (status, ready, reason) = if state.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            Some("draining".to_owned()),
        )
    } else if let Err(why) = state.log.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, false, Some(why))
    } else {
        (StatusCode::OK, true, None)
    };
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(json!({ "ready": ready, "reason": reason, "log": backend })),
    )
        .into_response()
}

/// `GET /healthz`: 200 while serving, 503 while draining.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses(
        (status = 200, description = "`ok`", body = String, content_type = "text/plain"),
        (status = 503, description = "`draining`", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
