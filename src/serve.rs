//! One accepted connection: read its first request head, then serve it.
//!
//! The first head is read here, within `SWITCHYARD_HEAD_TIMEOUT`, and checked strictly
//! (lines end in CRLF, exactly one `Host` on HTTP/1.1, at most [`MAX_HEAD`] bytes): a
//! connection that sends nothing, or a head a byte at a time, costs one small buffer
//! until then and is closed. Most connections are then served as HTTP/1.1 by hyper (the
//! head handed to it as the first bytes it reads; a kept-alive connection's next head is
//! hyper's to time, `SWITCHYARD_IDLE_TIMEOUT`). Two kinds are routed differently:
//!
//! - **A `POST` first** (publishing, reports): served by hyper on the API runtime, a
//!   thread of its own, so a publish never queues behind the fan-out it causes.
//! - **A stream that owns its connection**: an event stream (`GET /v1/sse`, or
//!   `/v1/stream` asking for `text/event-stream`) or a WebSocket handshake. Its head is
//!   parsed here, admitted by the one admission path ([`transport::admit`]) and answered
//!   on the socket itself: the error, or the response head and then the stream, written
//!   by its transport onto the socket. hyper would keep two 8 KiB HTTP/1 buffers for the
//!   whole life of a streaming response and copy every chunk through its chunked
//!   encoder; an event stream needs neither (its body is delimited by closing the
//!   connection), and a WebSocket needs no upgrade machinery.
//!
//! Anything this module does not fully understand (HTTP/1.0, a request body, bytes after
//! the head) goes to hyper, which serves every request correctly and hands streams to
//! the same transports.
//!
//! A connection on the budget's reserve ([`SlotKind::Reserve`]) is served only for
//! health, status, metrics and publishing, one request each.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::fanout::{SinkIo, write_all};
use crate::headers::Peer;
use crate::limits::{ConnSlot, SlotKind};
use crate::metrics::ClosedReason;
use crate::state::AppState;
use crate::transport::{self, Route, Transport, accepts_event_stream, sse, ws};

/// Largest request head accepted (request line and headers); a longer one gets `431`.
/// hyper's read buffer ([`HTTP_MAX_BUF`]) holds it whole.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Bytes read at a time while a head arrives (a typical browser head fits).
const HEAD_CHUNK: usize = 2048;
/// Most headers in a request head (hyper's own limit is 100).
const MAX_HEADERS: usize = 100;
/// Longest a refused connection is kept open to read what its client sent, so that the
/// refusal is read rather than lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
/// Largest HTTP/1 read buffer per hyper connection (hyper's minimum is 8 KiB). Requests
/// here are small; publish bodies stream through it.
const HTTP_MAX_BUF: usize = 16 * 1024;
/// Largest non-stream answer (an error) written on the direct path.
const MAX_DIRECT_ANSWER: usize = 64 * 1024;
/// Longest the direct path waits to write a whole answer (an error, a handshake).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request head parsed on the direct path.
#[derive(Debug)]
pub(crate) struct Head {
    uri: Uri,
    headers: HeaderMap,
    route: Route,
}

/// What a connection's first request is.
enum First {
    /// A `POST`: serve on the API runtime, its head first.
    Post(Bytes),
    /// A stream that owns its connection, with its whole head (and nothing after it).
    Stream(Box<Head>),
    /// Anything else: hyper on this runtime, its head first.
    Other(Bytes),
    /// Answered or closed already.
    Done,
}

/// Serves one accepted connection until it closes (or the drain ends it). `slot` is its
/// place in the connection budget, held for as long as the socket is open.
pub(crate) async fn connection(
    mut stream: TcpStream,
    state: Arc<AppState>,
    router: Router,
    shutdown: CancellationToken,
    api: tokio::runtime::Handle,
    slot: ConnSlot,
) {
    // Boxed, so the head buffer is not part of every connection's task for its lifetime.
    // A head still arriving when the drain starts is not waited for.
    let first = tokio::select! {
        first = Box::pin(first_request(&mut stream, &state, slot.kind())) => first,
        () = shutdown.cancelled() => First::Done,
    };
    let http = Http1 {
        router,
        shutdown,
        idle: state.config.idle_timeout.get(),
        keep_alive: slot.kind() == SlotKind::Normal,
    };
    match first {
        First::Post(head) => {
            let _ = api.spawn(http.serve(Conn::new(stream, head, slot))).await;
        }
        First::Stream(head) => Box::pin(direct(stream, state, head, slot)).await,
        First::Other(head) => Box::pin(http.serve(Conn::new(stream, head, slot))).await,
        First::Done => {}
    }
}

/// How a connection is served by hyper.
struct Http1 {
    router: Router,
    shutdown: CancellationToken,
    /// `SWITCHYARD_IDLE_TIMEOUT`: for the next request head of a kept-alive connection.
    idle: Duration,
    /// Whether it may carry more than one request (not on the reserve).
    keep_alive: bool,
}

impl Http1 {
    /// Serves a connection as HTTP/1.1 (with upgrades) until the peer closes; on shutdown
    /// finishes the response in flight (a stream ends after `reconnect`), then closes.
    async fn serve(self, conn: Conn) {
        // The peer's address, for the trusted-proxy check of forwarding headers.
        let peer = Peer(conn.io.peer_addr().ok().map(|a| a.ip()));
        let service = tower::ServiceBuilder::new()
            .layer(axum::Extension(peer))
            .service(self.router);
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(HTTP_MAX_BUF)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.idle)
            .keep_alive(self.keep_alive)
            .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
            .with_upgrades();
        let shutdown = self.shutdown;
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// A connection served by hyper: the first head, read here already, then the socket.
/// It holds the connection's place in the budget for as long as it lives, through an
/// upgrade too.
struct Conn {
    head: Bytes,
    io: TcpStream,
    _slot: ConnSlot,
}

impl Conn {
    fn new(io: TcpStream, head: Bytes, slot: ConnSlot) -> Conn {
        Conn {
            head,
            io,
            _slot: slot,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads a new connection's first request head (within `SWITCHYARD_HEAD_TIMEOUT`),
/// checks it, and says how to serve the connection. Refusals are answered here.
async fn first_request(stream: &mut TcpStream, state: &AppState, kind: SlotKind) -> First {
    let limit = state.config.head_timeout.get();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = BytesMut::with_capacity(HEAD_CHUNK);
    let refuse = |reason, error: ApiError| {
        state.metrics.close(reason);
        error
    };
    let error = loop {
        if buf.len() == buf.capacity() {
            buf.reserve(HEAD_CHUNK);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) if buf.is_empty() => {
                // Nothing sent at all: nothing to answer.
                state.metrics.close(ClosedReason::head_timeout);
                return First::Done;
            }
            Err(_) => {
                break refuse(
                    ClosedReason::head_timeout,
                    ApiError::Status {
                        status: StatusCode::REQUEST_TIMEOUT,
                        code: "head_timeout",
                        message: format!(
                            "the request head did not arrive within {} (SWITCHYARD_HEAD_TIMEOUT)",
                            humantime::format_duration(limit)
                        ),
                    },
                );
            }
            Ok(Ok(0)) | Ok(Err(_)) => return First::Done,
            Ok(Ok(_)) => {}
        }
        match check_head(&buf, kind) {
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => {
                break refuse(
                    ClosedReason::bad_head,
                    ApiError::Status {
                        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        code: "head_too_large",
                        message: format!(
                            "the request head is larger than {MAX_HEAD} bytes (request line and headers)"
                        ),
                    },
                );
            }
            Err(e) => break e,
            Ok(Some(Checked { stream: Some(head) })) => return First::Stream(Box::new(head)),
            Ok(Some(Checked { stream: None })) => {
                let bytes = buf.freeze();
                if bytes.starts_with(b"POST ") {
                    return First::Post(bytes);
                }
                return First::Other(bytes);
            }
        }
    };
    if let ApiError::BadRequest { .. } = &error {
        state.metrics.close(ClosedReason::bad_head);
    }
    answer(stream, retry_soon(error), &[]).await;
    First::Done
}

/// The error's response; a `429` or `503` says `Retry-After: 1`.
fn retry_soon(error: ApiError) -> Response {
    let mut response = error.into_response();
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A whole, acceptable first request head.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The head, when the request is a stream that owns its connection and nothing
    /// follows its head (see [`stream_head`]); else hyper serves it.
    pub(crate) stream: Option<Head>,
}

/// Checks the bytes of a request head read so far: `Ok(None)` while it is incomplete,
/// `Ok(Some(_))` once whole and acceptable, else the error to answer: malformed,
/// a line ending in a bare LF, no `Host` on HTTP/1.1 or two of them (RFC 9112 §3.2),
/// too many headers, or (on the reserve) a request the reserve does not serve. The one
/// parse also gives the stream head of the direct path.
pub(crate) fn check_head(bytes: &[u8], kind: SlotKind) -> Result<Option<Checked>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::Status {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                code: "head_too_large",
                message: format!("the request head has more than {MAX_HEADERS} headers"),
            });
        }
        Err(e) => {
            return Err(ApiError::bad_request(
                "bad_request_head",
                format!("the request head is malformed: {e}"),
            ));
        }
    };
    let head = &bytes[..len];
    if head
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err(ApiError::bad_request(
            "bad_request_head",
            "every line of the request head must end with CRLF (\\r\\n), not a bare LF",
        ));
    }
    let hosts = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 {
        return Err(ApiError::bad_request(
            "bad_request_head",
            "the request has more than one Host header",
        ));
    }
    if hosts == 0 && parsed.version == Some(1) {
        return Err(ApiError::bad_request(
            "bad_request_head",
            "an HTTP/1.1 request needs a Host header",
        ));
    }
    if kind == SlotKind::Reserve && !reserve_serves(parsed.method, parsed.path) {
        return Err(ApiError::Unavailable {
            code: "connection_limit",
            message: "the server holds its maximum of connections (SWITCHYARD_MAX_CONNECTIONS); \
                      only health, status, metrics and publishing are answered now; retry later"
                .into(),
            enabled: Vec::new(),
        });
    }
    let stream = if len == bytes.len() {
        stream_head(&parsed)
    } else {
        None
    };
    Ok(Some(Checked { stream }))
}

/// Whether a request is one the connection reserve serves: health, status, metrics and
/// publishing.
fn reserve_serves(method: Option<&str>, path: Option<&str>) -> bool {
    let path = path.map(|p| p.split('?').next().unwrap_or(p));
    match (method, path) {
        (Some("POST"), Some(p)) => p == "/v1/events",
        (Some("GET" | "HEAD"), Some(p)) => {
            matches!(p, "/healthz" | "/readyz" | "/v1/status" | "/metrics")
        }
        _ => false,
    }
}

/// Answers a connection refused at accept (the budget, or its client's share, is used
/// up) with `error`, then keeps it open up to [`LINGER`] reading what the client sent,
/// so that its request does not turn the close into a reset that loses the answer.
pub(crate) async fn refuse(mut stream: TcpStream, error: ApiError) {
    answer(&stream, retry_soon(error), &[]).await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Parses `bytes` as a complete request head, then [`stream_head`].
#[cfg(test)]
fn parse_stream_head(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = parsed.parse(bytes).ok()? else {
        return None;
    };
    stream_head(&parsed)
}

/// The head of a parsed request when it is a `GET`, with no body, of a stream that
/// owns its connection (an event stream or a WebSocket handshake). `None` for anything
/// else (hyper serves it).
fn stream_head(parsed: &httparse::Request<'_, '_>) -> Option<Head> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
    let route = Route::from_path(uri.path())?;
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let has_body = map.contains_key(header::TRANSFER_ENCODING)
        || map
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let upgrade = map.contains_key(header::UPGRADE) || map.contains_key(header::SEC_WEBSOCKET_KEY);
    let owns_connection = match route {
        Route::Dedicated(Transport::Sse) => !upgrade,
        Route::Dedicated(Transport::WebSocket) => true,
        Route::Dedicated(Transport::LongPoll) => false,
        Route::Negotiated => upgrade || accepts_event_stream(&map),
    };
    if has_body || !owns_connection {
        return None;
    }
    Some(Head {
        uri,
        headers: map,
        route,
    })
}

/// Admits a stream request and answers it on the socket itself: the error, or the
/// response head and the stream. Either way the connection closes afterwards.
///
/// A stream runs as a task of its own (tracked by the drain), holding only its own
/// future, and the connection's task ends here. Measured with 10,000 idle streams
/// (bytes of RSS per connection): an SSE stream 2,980 inside the connection's task,
/// 2,344 – 2,352 as a task of its own; a WebSocket 6,071, then 5,140, then 4,449 once
/// its session is opened here and only its running future is spawned (an async fn
/// keeps room for locals that were moved out, so opening and running in one future
/// held the session twice).
async fn direct(stream: TcpStream, state: Arc<AppState>, head: Box<Head>, slot: ConnSlot) {
    let tasks = state.tasks.clone();
    // The slot goes with the stream's task, which lives as long as the socket.
    match Box::pin(prepare(stream, state, head)).await {
        Some(Stream::Sse(io, head, session)) => drop(tasks.spawn(async move {
            sse::run(io, head, session).await;
            drop(slot);
        })),
        Some(Stream::WebSocket(session)) => drop(tasks.spawn(async move {
            session.run().await;
            drop(slot);
        })),
        None => {}
    }
}

/// An admitted stream, its head written or ready to write.
// Moved into its own task at once: boxing the larger variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Stream {
    /// The connection, the response head, and the subscribed session.
    Sse(Arc<TcpStream>, Vec<u8>, sse::Session),
    /// The session, its handshake answered.
    WebSocket(ws::Session),
}

/// Reads the head, admits the request, and answers what is not a long-lived stream
/// (an error, a long poll, the handshake of a WebSocket). `None` when it is done.
async fn prepare(stream: TcpStream, state: Arc<AppState>, head: Box<Head>) -> Option<Stream> {
    let peer = Peer(stream.peer_addr().ok().map(|a| a.ip()));
    let admitted = transport::admit(&state, head.route, peer, &head.uri, &head.headers).await;
    let common = crate::headers::response_headers(&state.config.allowed_origins, &head.headers);
    drop(head);
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(e) => {
            answer(&stream, e.into_response(), &common).await;
            return None;
        }
    };
    match admitted.transport {
        Transport::Sse => {
            let session = sse::open(admitted).await;
            let headers = sse::headers();
            let head = response_head(StatusCode::OK, pairs(&headers).chain(pairs(&common)), None);
            Some(Stream::Sse(Arc::new(stream), head, session))
        }
        Transport::WebSocket => {
            let accept = match ws::accept_key(&admitted) {
                Ok(accept) => accept,
                Err(e) => {
                    answer(&stream, e.into_response(), &common).await;
                    return None;
                }
            };
            let handshake = ws::switching_protocols(&accept);
            let written = tokio::time::timeout(ANSWER_TIMEOUT, write_all(&stream, &handshake));
            if !matches!(written.await, Ok(Ok(()))) {
                return None;
            }
            ws::Session::open(Arc::new(stream), admitted)
                .await
                .map(Stream::WebSocket)
        }
        Transport::LongPoll => {
            let response = transport::longpoll::serve(admitted).await;
            answer(&stream, response.into_response(), &common).await;
            None
        }
    }
}

/// Writes a whole response (bounded), then ends the connection.
async fn answer(stream: &TcpStream, response: Response, common: &[(HeaderName, HeaderValue)]) {
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_DIRECT_ANSWER).await else {
        return;
    };
    let mut out = response_head(
        parts.status,
        parts.headers.iter().chain(pairs(common)),
        Some(body.len()),
    );
    out.extend_from_slice(&body);
    let written = tokio::time::timeout(ANSWER_TIMEOUT, write_all(stream, &out)).await;
    if matches!(written, Ok(Ok(()))) {
        let _ = SinkIo::shutdown_write(stream);
    }
}

/// `HTTP/1.1` status line and headers of a response, ending the head. The body is
/// `content_length` bytes, or runs until the connection closes.
fn response_head<'a>(
    status: StatusCode,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // What hyper adds to every response (RFC 9110 §6.6.1: an origin server with a clock
    // sends `date`).
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::DATE
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = content_length {
        out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// Name-value pairs as a header iterator.
fn pairs(
    headers: &[(HeaderName, HeaderValue)],
) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().map(|(name, value)| (name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Option<Head> {
        parse_stream_head(head.as_bytes())
    }

    #[test]
    fn streams_that_own_their_connection_take_the_direct_path() {
        let head = "GET /v1/sse?topics=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-2\r\n\r\n";
        let parsed = parse(head).expect("direct");
        assert_eq!(parsed.uri.query(), Some("topics=a"));
        assert_eq!(parsed.headers["last-event-id"], "1-2");
        assert_eq!(parsed.route, Route::Dedicated(Transport::Sse));
        for head in [
            "GET /v1/stream?topics=a HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            "GET /v1/ws?topics=a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /v1/stream?topics=a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            // Errors are answered directly too (then the connection closes).
            "GET /v1/ws?topics=a HTTP/1.1\r\n\r\n",
            "GET /v1/stream?topics=a HTTP/1.1\r\nAccept: text/event-stream\r\nSec-WebSocket-Key: x\r\n\r\n",
        ] {
            assert!(parse(head).is_some(), "{head:?}");
        }
    }

    /// `Ok(Some(direct))`: whole and acceptable, a stream of the direct path or not.
    fn check(head: &str) -> Result<Option<bool>, String> {
        check_head(head.as_bytes(), SlotKind::Normal)
            .map(|checked| checked.map(|c| c.stream.is_some()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_check_gives_the_direct_path_head_only_when_nothing_follows_it() {
        let sse = "GET /v1/sse?topics=a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(check(sse), Ok(Some(true)));
        let pipelined = format!("{sse}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            check(&pipelined),
            Ok(Some(false)),
            "hyper serves pipelining"
        );
        let poll = "GET /v1/poll?topics=a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(check(poll), Ok(Some(false)), "a poll is served by hyper");
    }

    #[test]
    fn heads_are_checked_strictly() {
        let ok = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(check(ok), Ok(Some(false)));
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(
            check("GET / HTTP/1.0\r\n\r\n"),
            Ok(Some(false)),
            "HTTP/1.0 needs no Host"
        );
        let bare_lf = check("GET / HTTP/1.1\nHost: a\n\n").expect_err("refused");
        assert!(bare_lf.contains("CRLF"), "{bare_lf}");
        let no_host = check("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").expect_err("refused");
        assert!(no_host.contains("needs a Host"), "{no_host}");
        let two = check("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").expect_err("refused");
        assert!(two.contains("more than one Host"), "{two}");
        let garbage = check("\u{0}\u{1}garbage\r\n\r\n").expect_err("refused");
        assert!(garbage.contains("malformed"), "{garbage}");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let many = check(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).expect_err("refused");
        assert!(many.contains("more than"), "{many}");
    }

    #[test]
    fn the_reserve_serves_health_status_metrics_and_publishing_only() {
        let reserve = |head: &str| check_head(head.as_bytes(), SlotKind::Reserve).is_ok();
        for ok in [
            "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/status?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /v1/events HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(reserve(ok), "{ok:?}");
        }
        for refused in [
            "GET /v1/sse?topics=a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST /v1/reports HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /v1/events HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(!reserve(refused), "{refused:?}");
        }
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            "GET /v1/sse?topics=a HTTP/1.1\r\nHost: x\r\n",
            "GET /v1/sse?topics=a HTTP/1.0\r\n\r\n",
            "HEAD /v1/sse?topics=a HTTP/1.1\r\n\r\n",
            "GET /v1/stream?topics=a HTTP/1.1\r\nAccept: */*\r\n\r\n",
            "GET /v1/poll?topics=a HTTP/1.1\r\n\r\n",
            "GET /v1/sse?topics=a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /v1/sse?topics=a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /v1/status HTTP/1.1\r\n\r\n",
            "\u{0}\u{1}garbage\r\n\r\n",
        ] {
            assert!(parse(head).is_none(), "{head:?}");
        }
    }
}
