//! One accepted connection: look at its first request, then serve it.
//!
//! Most connections are served as HTTP/1.1 by hyper. Two kinds are routed differently,
//! decided from the first bytes (looked at with `peek`, not read):
//!
//! - **A `POST` first** (publishing, reports): served by hyper on the API runtime, a
//!   thread of its own, so a publish never queues behind the fan-out it causes.
//! - **An event-stream request** (`GET /v1/sse`, or `GET /v1/stream` asking for
//!   `text/event-stream`): its head is parsed here and answered by the same router, but
//!   the stream is written straight onto the socket. hyper keeps two 8 KiB HTTP/1
//!   buffers for the whole life of a streaming response and copies every chunk through
//!   its chunked encoder; an SSE stream needs neither. Each event's shared bytes go to
//!   the socket as they are (coalesced when several are ready), the body is delimited by
//!   closing the connection (an event stream never ends any other way), and an idle
//!   stream costs a third of the memory. Once caught up, the stream's socket is written
//!   by the direct fan-out ([`crate::fanout`]) rather than by this connection's task.
//!
//! Anything this module does not fully understand (a head split over several packets,
//! HTTP/1.0, a request body, an `Upgrade`) goes to hyper, which serves every request
//! correctly; the direct path is only ever an optimisation.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::response::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::transport::{STREAM_PATH, Transport, accepts_event_stream, sse};

/// How long a new connection's first bytes are waited for to choose how to serve it; a
/// connection that sends nothing by then is served by hyper on the stream runtime.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);
/// Largest request head looked at for the direct event-stream path; a longer one (huge
/// cookies) is served by hyper instead.
const MAX_PEEK_HEAD: usize = 4096;
/// Most headers in a request head looked at for the direct path.
const MAX_PEEK_HEADERS: usize = 48;
/// Largest HTTP/1 read buffer per hyper connection (hyper's minimum is 8 KiB). Requests
/// here are small; publish bodies stream through it.
const HTTP_MAX_BUF: usize = 16 * 1024;
/// Largest non-stream answer (an error) written on the direct path.
const MAX_DIRECT_ANSWER: usize = 64 * 1024;

/// What a connection's first request is.
enum First {
    /// A `POST`: serve on the API runtime.
    Post,
    /// An event-stream `GET` whose whole head is in `head_len` bytes.
    EventStream {
        request: Box<Request<Body>>,
        head_len: usize,
    },
    /// Anything else: hyper on this runtime.
    Other,
}

/// Serves one accepted connection until it closes (or the drain ends it).
pub(crate) async fn connection(
    stream: TcpStream,
    router: Router,
    shutdown: CancellationToken,
    api: tokio::runtime::Handle,
) {
    // Boxed, so the peek buffer is not part of every connection's task for its lifetime.
    match Box::pin(first_request(&stream)).await {
        First::Post => {
            let _ = api.spawn(http1(stream, router, shutdown)).await;
        }
        First::EventStream { request, head_len } => {
            Box::pin(event_stream(stream, head_len, *request, router)).await;
        }
        First::Other => Box::pin(http1(stream, router, shutdown)).await,
    }
}

/// Serves a connection as HTTP/1.1 (with upgrades) until the peer closes; on shutdown
/// finishes the response in flight (a stream ends after `reconnect`), then closes.
async fn http1(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    let service = hyper_util::service::TowerToHyperService::new(router);
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
        Ok(Ok(n)) => match parse_event_stream_head(&buf[..n]) {
            Some((request, head_len)) => First::EventStream {
                request: Box::new(request),
                head_len,
            },
            None => First::Other,
        },
        _ => First::Other,
    }
}

/// Parses `bytes` as a complete HTTP/1.1 `GET` head asking for an event stream, with no
/// body and no upgrade. `None` for anything else (hyper serves it).
fn parse_event_stream_head(bytes: &[u8]) -> Option<(Request<Body>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PEEK_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let uri: Uri = parsed.path?.parse().ok()?;
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
    if has_body || map.contains_key(header::UPGRADE) || map.contains_key(header::SEC_WEBSOCKET_KEY)
    {
        return None;
    }
    let wants_events = match uri.path() {
        p if p == Transport::Sse.path() => true,
        STREAM_PATH => accepts_event_stream(&map),
        _ => false,
    };
    if !wants_events {
        return None;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    Some((request, head_len))
}

/// Answers an event-stream request on the socket itself: the router makes the response;
/// an event stream is written frame by frame as it comes, anything else (an error) whole.
/// Either way the connection closes afterwards.
async fn event_stream(
    mut stream: TcpStream,
    head_len: usize,
    request: Request<Body>,
    router: Router,
) {
    // Consume the head that was only looked at so far (it is already in the socket).
    let mut head = vec![0u8; head_len];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    drop(head);
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let session = parts
        .extensions
        .get::<sse::DirectSession>()
        .and_then(sse::DirectSession::take);
    let Some(session) = session.filter(|_| parts.status.is_success()) else {
        // Not a stream (an error): the whole answer, then the end.
        let Ok(body) = axum::body::to_bytes(body, MAX_DIRECT_ANSWER).await else {
            return;
        };
        let mut out = response_head(&parts, Some(body.len()));
        out.extend_from_slice(&body);
        if sse::send(&stream, &out).await {
            let _ = stream.shutdown().await;
        }
        return;
    };
    drop(body);
    // The response's headers are not kept for the life of the stream: they are about
    // 1 kB per idle connection (4.3 kB instead of 3.3 kB, measured with 5,000 SSE
    // subscribers).
    let head = response_head(&parts, None);
    drop(parts);
    sse::write_direct(stream, head, session).await;
}

/// `HTTP/1.1` status line and headers of a response, ending the head. The body is
/// `content_length` bytes, or runs until the connection closes.
fn response_head(parts: &Parts, content_length: Option<usize>) -> Vec<u8> {
    let status = parts.status;
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
    for (name, value) in &parts.headers {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Option<(Request<Body>, usize)> {
        parse_event_stream_head(head.as_bytes())
    }

    #[test]
    fn event_stream_heads_take_the_direct_path() {
        let head = "GET /v1/sse?topics=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-2\r\n\r\n";
        let (request, len) = parse(head).expect("direct");
        assert_eq!(len, head.len());
        assert_eq!(request.uri().query(), Some("topics=a"));
        assert_eq!(request.headers()["last-event-id"], "1-2");
        let negotiated = "GET /v1/stream?topics=a HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n";
        assert!(parse(negotiated).is_some());
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
            "GET /v1/stream?topics=a HTTP/1.1\r\nAccept: text/event-stream\r\nSec-WebSocket-Key: x\r\n\r\n",
            "\u{0}\u{1}garbage\r\n\r\n",
        ] {
            assert!(parse(head).is_none(), "{head:?}");
        }
    }
}
