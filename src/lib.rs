//! switchyard: one event source feeding three transports — WebSocket, Server-Sent Events
//! and long polling — with negotiation that picks the best one that works.
//!
//! # Layout
//!
//! ```text
//! event.rs        topics, cursors, the envelope; each event encoded once (JSON, SSE, WS)
//! protocol.rs     the wire vocabulary: the transport table, control messages
//! log/            the Log trait; memory.rs; subscription.rs (replay then live, resets)
//! fanout/         writes live events straight onto parked sockets (sink.rs: the hand-off)
//! transport/      admit.rs (the one admission path) and one file per transport:
//!   ws.rs sse.rs longpoll.rs
//! api.rs          publish, negotiate, reports, status, metrics, health
//! serve.rs        one connection: hyper, the API thread, or a stream on the socket
//! metrics.rs      counters and gauges behind /v1/status and /metrics
//! config.rs       SWITCHYARD_* environment variables, --help
//! error.rs        ApiError → {"error":{"code","message"}}
//! ```
//!
//! `docs/architecture.md` has the data path and what a new transport or log backend
//! touches.
//!
//! [`run`] serves a bound listener until a shutdown future resolves, then drains: every
//! stream gets `reconnect`, polls answer at once, WebSockets close with 1012, and the
//! process returns within [`DRAIN_TIMEOUT`].

pub mod api;
pub mod assets;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod event;
pub mod fanout;
pub mod headers;
pub mod idempotency;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod openapi;
pub mod protocol;
mod serve;
pub mod state;
pub mod transport;

pub use state::AppState;

/// Entry points for the fuzz targets in `fuzz/` (every parser a client reaches). Not an
/// API: each takes raw input and must return without panicking, whatever it is.
#[doc(hidden)]
pub mod fuzzing {
    use axum::http::{HeaderMap, HeaderValue, Uri};

    /// A request head as the first bytes of a connection: the strict check and the
    /// direct-path parse it includes (normal and reserve connections).
    pub fn request_head(bytes: &[u8]) {
        for kind in [
            crate::limits::SlotKind::Normal,
            crate::limits::SlotKind::Reserve,
        ] {
            let _ = crate::serve::check_head(bytes, kind);
        }
    }

    /// A stream request's query string and `Last-Event-ID` (the one admission path's
    /// parse), and the cursor, topic list and pattern list parsers on their own.
    pub fn query(query: &str, last_event_id: &[u8]) {
        let _ = crate::event::Cursor::parse(query);
        let _ = crate::event::TopicSet::parse_list(query);
        let _ = crate::event::Patterns::parse_list(query);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(last_event_id) {
            headers.insert("last-event-id", v);
        }
        if let Ok(uri) = format!("/v1/sse?{query}").parse::<Uri>() {
            let _ = crate::transport::admit::parse_query(&uri, &headers);
        }
    }

    /// A publish body (`POST /v1/events`).
    pub fn publish_body(body: &[u8]) {
        let _ = crate::api::parse_publish_body(body);
    }

    /// What a WebSocket client sends after the handshake: frames, then operations.
    pub fn websocket_client(bytes: &[u8]) {
        let _ = crate::transport::ws::read_client_bytes(bytes);
    }
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::protocol::{STREAM_PATH, TRANSPORTS};

/// Longest the server waits, after the shutdown signal, for streams to say `reconnect`
/// and for connections to close, before it returns anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause after a failed `accept` (e.g. out of file descriptors); it doubles with
/// each failure in a row up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one "accept failed" log line per this interval (with how many were not logged).
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Refuses a configuration that cannot be served on `addr`: publishing without a key, and
/// topics public by default (no token key, no explicit `SWITCHYARD_PUBLIC_TOPICS`), are
/// allowed only on loopback.
pub fn check_config(config: &Config, addr: SocketAddr) -> Result<(), String> {
    if config.publish_key.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "SWITCHYARD_PUBLISH_KEY is unset but SWITCHYARD_ADDR={addr} is not a loopback address: \
             anyone could publish. Set SWITCHYARD_PUBLISH_KEY (16+ characters) or listen on 127.0.0.1"
        ));
    }
    if config.data_dir.is_some() && config.redis_url.is_some() {
        return Err(
            "set SWITCHYARD_DATA_DIR (a durable log on this node) or SWITCHYARD_REDIS_URL (a log shared by many nodes), not both"
                .into(),
        );
    }
    let has_key = config.token_secret.is_some() || config.token_public_key_file.is_some();
    if !has_key && config.public_topics.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "SWITCHYARD_ADDR={addr} is not a loopback address and no token key is set: anyone \
             could read every topic (notifications/<user> too). Set SWITCHYARD_TOKEN_SECRET or \
             SWITCHYARD_TOKEN_PUBLIC_KEY_FILE, or SWITCHYARD_PUBLIC_TOPICS (\"*\" to make every \
             topic public knowingly)"
        ));
    }
    Ok(())
}

/// The router: API, transports, and static files.
pub fn app(state: Arc<AppState>) -> Router {
    let mut api = Router::new()
        .route(
            "/v1/events",
            post(api::publish).layer(DefaultBodyLimit::max(api::MAX_PUBLISH_BODY)),
        )
        .route(
            "/v1/reports",
            post(api::report).layer(DefaultBodyLimit::max(api::MAX_REPORT_BODY)),
        )
        .route(
            "/v1/tickets",
            post(api::ticket).layer(DefaultBodyLimit::max(api::MAX_REPORT_BODY)),
        )
        .route("/v1/negotiate", get(api::negotiate))
        .route("/v1/status", get(api::status))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz));

    // Streams: no timeout and no body limit layers (they would cut or buffer them).
    let streams = TRANSPORTS.iter().fold(
        Router::new().route(STREAM_PATH, get(transport::handler)),
        |router, spec| router.route(spec.path, get(transport::handler)),
    );

    let mut files = assets::Source::new(state.config.static_dir.as_deref()).router();
    if demo_on(&state.config) {
        api = api.merge(demo::routes(state.clone()));
    } else {
        let off = || async {
            (
                StatusCode::NOT_FOUND,
                "switchyard is running; the demo page is switched off (SWITCHYARD_DEMO=off)\n",
            )
        };
        files = files.route("/", get(off)).route("/index.html", get(off));
    }

    let api = api.layer(axum::middleware::from_fn_with_state(
        state.config.request_timeout.get(),
        request_timeout,
    ));

    let request_id = HeaderName::from_static("x-request-id");
    let hosts = axum::middleware::from_fn_with_state(state.clone(), host_guard);
    Router::new()
        .merge(api)
        .merge(streams)
        .merge(files)
        .layer(headers::cors(&state.config.allowed_origins))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), uri = %req.uri(), id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(hosts)
        .with_state(state)
}

/// Answers `408 request_timeout` to a non-stream request (its body included) that takes
/// longer than `SWITCHYARD_REQUEST_TIMEOUT`.
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = error::ApiError::Status {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "request_timeout",
                message: format!(
                    "the request (its body included) took longer than {} (SWITCHYARD_REQUEST_TIMEOUT)",
                    humantime::format_duration(limit)
                ),
            }
            .into_response();
            // The rest of the body is never read: the connection cannot carry another request.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// Whether the demo is served: see [`Config::demo_on`].
pub fn demo_on(config: &Config) -> bool {
    config.demo_on()
}

/// Refuses a request with no `Host` or two (`400`), or whose `Host` this server does
/// not answer to (DNS rebinding, `421`), before any route sees it.
async fn host_guard(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = request
        .extensions()
        .get::<headers::Peer>()
        .copied()
        .unwrap_or_default();
    // The first head of a connection was checked strictly before hyper saw it; a later
    // one on a kept-alive connection is checked here (hyper accepts a bare LF, which
    // RFC 9112 §2.2 permits a server to, but not a missing or repeated Host).
    let hosts = request
        .headers()
        .get_all(axum::http::header::HOST)
        .iter()
        .count();
    if request.version() == axum::http::Version::HTTP_11 && hosts != 1 {
        let message = if hosts == 0 {
            "an HTTP/1.1 request needs a Host header"
        } else {
            "the request has more than one Host header"
        };
        return error::ApiError::bad_request("bad_request_head", message).into_response();
    }
    match state.check_host(peer, request.headers()) {
        Ok(_) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains within [`DRAIN_TIMEOUT`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    check_config(&config, addr).map_err(std::io::Error::other)?;
    let static_files = assets::Source::new(config.static_dir.as_deref());
    if let Some(problem) = static_files.problem() {
        tracing::warn!("{problem}");
    }
    // The names the server answers to by default are those of the address it listens on.
    let mut config = config;
    config.addr = addr;
    let state = AppState::open(config)
        .await
        .map_err(std::io::Error::other)?;
    tracing::info!(
        %addr,
        epoch = state.log.epoch(),
        transports = ?transport::enabled_names(&state),
        static_files = %static_files.describe(),
        tcp_nodelay = state.config.tcp_nodelay,
        "switchyard listening"
    );
    let drain = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        drain.shutdown.cancel();
        // Streams learn of the drain from their subscription (no shared signal polled
        // per delivery): each says `reconnect` once it has handed out what it had.
        drain.log.close();
    });

    let router = app(state.clone());
    // HTTP/1 only, served by hyper directly rather than axum::serve (its HTTP/1-or-2
    // auto-detection costs ~50 kB per idle connection), and event streams written on the
    // socket itself (see serve.rs). Connections are tracked so the drain can wait for them.
    let connections = TaskTracker::new();
    // Publishing must not wait behind the fan-out it causes: a connection whose first
    // request is a POST (publish, reports, demo changes) is served on a runtime thread of
    // its own, which the OS schedules beside the two busy stream threads, instead of
    // queueing behind up to thousands of woken stream tasks.
    let api_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchyard-api")
        .enable_all()
        .build()?;
    let api = api_runtime.handle().clone();
    let mut failures = AcceptFailures::default();
    let lingering = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: say so (rate-limited), back
                    // off, go on.
                    let pause = failures.failed(&e);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = state.shutdown.cancelled() => break,
                    }
                }
            },
            () = state.shutdown.cancelled() => break,
        };
        failures.ok();
        let limited = !state.config.trusted_proxies.contains(peer.ip());
        let slot = match state.budget.take(peer.ip(), limited) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse_connection(&state, stream, refusal, &lingering);
                continue;
            }
        };
        let _ = stream.set_nodelay(state.config.tcp_nodelay);
        let (router, shutdown, api) = (router.clone(), state.shutdown.clone(), api.clone());
        connections.spawn(serve::connection(
            stream,
            state.clone(),
            router,
            shutdown,
            api,
            slot,
        ));
    }
    // The API runtime's last connections are waited for below; its thread ends with it.
    let api_runtime = ApiRuntime(Some(api_runtime));
    drop(listener);
    tracing::info!(open = state.open_streams(), "draining");
    state.tasks.close();
    connections.close();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        connections.wait().await;
        state.tasks.wait().await;
    })
    .await;
    drop(api_runtime);
    match drained {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(
            open = state.open_streams(),
            "drain time ({DRAIN_TIMEOUT:?}) ran out; closing the remaining connections"
        ),
    }
    Ok(())
}

/// Answers a connection the budget refused (`503 connection_limit`; `429
/// too_many_connections` or `429 connection_rate` for its client's share), counted by
/// reason. At most
/// [`limits::REFUSALS_LINGERING`] are answered at once; past that the socket is closed
/// at once.
fn refuse_connection(
    state: &Arc<AppState>,
    stream: tokio::net::TcpStream,
    refusal: limits::ConnRefusal,
    lingering: &Arc<std::sync::atomic::AtomicUsize>,
) {
    use limits::ConnRefusal;
    use std::sync::atomic::Ordering;
    let (reason, error) = match refusal {
        ConnRefusal::Full => (
            metrics::ClosedReason::connection_limit,
            error::ApiError::Unavailable {
                code: "connection_limit",
                message: format!(
                    "the server holds its maximum of {} connections (SWITCHYARD_MAX_CONNECTIONS); retry later",
                    state.budget.max()
                ),
                enabled: Vec::new(),
            },
        ),
        ConnRefusal::PerClient => (
            metrics::ClosedReason::per_client,
            error::ApiError::RateLimited {
                code: "too_many_connections",
                message: format!(
                    "this address holds its maximum of {} open connections (SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT); close some, then retry",
                    state.budget.per_client()
                ),
                retry_after: 1,
            },
        ),
        ConnRefusal::Rate => (
            metrics::ClosedReason::connect_rate,
            error::ApiError::RateLimited {
                code: "connection_rate",
                message: format!(
                    "this address opens connections faster than {} a second (SWITCHYARD_NEW_CONNECTIONS_PER_CLIENT); reuse connections, then retry",
                    state.config.new_connections_per_client
                ),
                retry_after: 1,
            },
        ),
    };
    state.metrics.close(reason);
    if state.refusal_log_admits() {
        tracing::warn!(reason = reason.name(), peer = ?stream.peer_addr().ok(), "connection refused");
    }
    let taken = lingering
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limits::REFUSALS_LINGERING).then_some(n + 1)
        })
        .is_ok();
    if !taken {
        return;
    }
    let lingering = lingering.clone();
    tokio::spawn(async move {
        serve::refuse(stream, error).await;
        lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Failed `accept`s in a row: the pause before the next, and a log line at most every
/// [`ACCEPT_LOG_EVERY`].
#[derive(Default)]
struct AcceptFailures {
    in_a_row: u32,
    not_logged: u64,
    logged: Option<std::time::Instant>,
}

impl AcceptFailures {
    /// Records a failure; returns the pause before the next `accept`.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        let due = self
            .logged
            .is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY);
        if due {
            tracing::warn!(error = %e, not_logged = self.not_logged, "accept failed (out of file descriptors? see SWITCHYARD_MAX_CONNECTIONS)");
            self.logged = Some(std::time::Instant::now());
            self.not_logged = 0;
        } else {
            self.not_logged += 1;
        }
        ACCEPT_BACKOFF
            .saturating_mul(1 << self.in_a_row.min(7).saturating_sub(1))
            .min(ACCEPT_BACKOFF_MAX)
    }

    /// An `accept` succeeded: the next failure pauses briefly again.
    fn ok(&mut self) {
        self.in_a_row = 0;
    }
}

/// Shuts a runtime down without blocking (dropping one inside async code panics).
struct ApiRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ApiRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
