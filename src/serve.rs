//! One accepted connection: look at its first request, then serve it.
//!
//! Most connections are served as HTTP/1.1 by hyper. Two kinds are routed differently,
//! decided from the first bytes (looked at with `peek`, not read):
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
//! Anything this module does not fully understand (a head split over several packets,
//! HTTP/1.0, a request body) goes to hyper, which serves every request correctly and
//! hands streams to the same transports.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::fanout::{SinkIo, write_all};
use crate::headers::Peer;
use crate::state::AppState;
use crate::transport::{self, Route, Transport, accepts_event_stream, sse, ws};

/// How long a new connection's first bytes are waited for to choose how to serve it; a
/// connection that sends nothing by then is served by hyper on the stream runtime.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);
/// Largest request head looked at for the direct path; a longer one (huge cookies) is
/// served by hyper instead.
const MAX_PEEK_HEAD: usize = 4096;
/// Most headers in a request head looked at for the direct path.
const MAX_PEEK_HEADERS: usize = 48;
/// Largest HTTP/1 read buffer per hyper connection (hyper's minimum is 8 KiB). Requests
/// here are small; publish bodies stream through it.
const HTTP_MAX_BUF: usize = 16 * 1024;
/// Largest non-stream answer (an error) written on the direct path.
const MAX_DIRECT_ANSWER: usize = 64 * 1024;
/// Longest the direct path waits to write a whole answer (an error, a handshake).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request head parsed on the direct path.
struct Head {
    uri: Uri,
    headers: HeaderMap,
    /// Its length in bytes, all of them already in the socket.
    len: usize,
    route: Route,
}

/// What a connection's first request is.
enum First {
    /// A `POST`: serve on the API runtime.
    Post,
    /// A stream that owns its connection, with its whole head.
    Stream(Box<Head>),
    /// Anything else: hyper on this runtime.
    Other,
}

/// Serves one accepted connection until it closes (or the drain ends it).
pub(crate) async fn connection(
    stream: TcpStream,
    state: Arc<AppState>,
    router: Router,
    shutdown: CancellationToken,
    api: tokio::runtime::Handle,
) {
    // Boxed, so the peek buffer is not part of every connection's task for its lifetime.
    match Box::pin(first_request(&stream)).await {
        First::Post => {
            let _ = api.spawn(http1(stream, router, shutdown)).await;
        }
        First::Stream(head) => Box::pin(direct(stream, state, head)).await,
        First::Other => Box::pin(http1(stream, router, shutdown)).await,
    }
}

/// Serves a connection as HTTP/1.1 (with upgrades) until the peer closes; on shutdown
/// finishes the response in flight (a stream ends after `reconnect`), then closes.
async fn http1(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    // The peer's address, for the trusted-proxy check of forwarding headers.
    let peer = Peer(stream.peer_addr().ok().map(|a| a.ip()));
    let service = tower::ServiceBuilder::new()
        .layer(axum::Extension(peer))
        .service(router);
    let service = hyper_util::service::TowerToHyperService::new(service);
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(HTTP_MAX_BUF)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Looks at (does not read) the first bytes waiting on a new connection.
async fn first_request(stream: &TcpStream) -> First {
    let mut buf = vec![0u8; MAX_PEEK_HEAD];
    match tokio::time::timeout(FIRST_BYTES_WAIT, stream.peek(&mut buf)).await {
        Ok(Ok(n)) if buf[..n].starts_with(b"POST ") => First::Post,
        Ok(Ok(n)) => match parse_stream_head(&buf[..n]) {
            Some(head) => First::Stream(Box::new(head)),
            None => First::Other,
        },
        _ => First::Other,
    }
}

/// Parses `bytes` as a complete HTTP/1.1 `GET` head, with no body, of a stream that
/// owns its connection (an event stream or a WebSocket handshake). `None` for anything
/// else (hyper serves it).
fn parse_stream_head(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PEEK_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(bytes).ok()? else {
        return None;
    };
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
        len,
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
async fn direct(stream: TcpStream, state: Arc<AppState>, head: Box<Head>) {
    let tasks = state.tasks.clone();
    match Box::pin(prepare(stream, state, head)).await {
        Some(Stream::Sse(io, head, session)) => drop(tasks.spawn(sse::run(io, head, session))),
        Some(Stream::WebSocket(session)) => drop(tasks.spawn(session.run())),
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
async fn prepare(mut stream: TcpStream, state: Arc<AppState>, head: Box<Head>) -> Option<Stream> {
    // Consume the head that was only looked at so far (it is already in the socket).
    let mut consumed = vec![0u8; head.len];
    stream.read_exact(&mut consumed).await.ok()?;
    drop(consumed);
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
        assert_eq!(parsed.len, head.len());
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
