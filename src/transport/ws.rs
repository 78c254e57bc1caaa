//! WebSocket (SPEC §4.3): JSON text frames both ways.
//!
//! Server → client: `ready`, `event`, `heartbeat`, `reset`, `reconnect`, `subscribed`,
//! `pong`, `error`. Client → server: `subscribe`, `unsubscribe`, `ping`. The session is
//! one task: a `select!` over the subscription (which ends when the server drains), the
//! socket and the heartbeat timer. It is registered with the server's `TaskTracker`
//! before the upgrade completes, so shutdown waits for it (axum#3003).
//!
//! axum's extractor checks the upgrade request; the upgrade itself is taken here, so the
//! session holds the connection's own `TcpStream` under the codec (tungstenite). Like an
//! SSE stream, a session that has caught up *parks* its socket in the direct fan-out
//! ([`crate::fanout`]), which writes each event's pre-encoded frame
//! ([`Event::ws_frame`](crate::event::Event::ws_frame)) to every parked socket in one
//! pass, while the session task goes on reading client frames. Whatever the session or
//! the codec writes itself (a reply, a pong, a close) first takes the socket back from
//! the fan-out (`WsIo`), so frames never interleave.

use std::convert::Infallible;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{ConnGuard, Heartbeat, Ready, Reconnect, StreamRequest, Transport, to_json};
use crate::error::ApiError;
use crate::event::{Cursor, TopicSet, ws_text_frame};
use crate::fanout::{Claim, Framing, SinkHandle};
use crate::hub::{Item, Subscription};

/// Largest client frame the session accepts; larger ones get an error and close 1009.
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// Largest message the WebSocket codec buffers at all before failing the read.
const MAX_CODEC_MESSAGE: usize = 64 * 1024;
/// Longest a write to the client may block (a reader that stopped reading). After this
/// the session closes; the client resumes from its last cursor when it reconnects.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most events written before one flush when several are ready…
pub const MAX_COALESCE_FRAMES: usize = 64;
/// …and most bytes: a batch stops growing at this size.
pub const MAX_COALESCE_BYTES: usize = 64 * 1024;
/// The codec's read buffer, allocated up front for every connection. tungstenite's
/// default is 128 KiB, which would cost 1.3 GB per 10,000 idle sockets. Client frames
/// here are small (pings and subscribes; at most [`MAX_CLIENT_FRAME`], read in several
/// chunks then), so 1 KiB suffices. Measured with 10,000 idle WebSockets: 4.6 kB per
/// connection with 1 KiB, 8.0 kB with 4 KiB.
pub const READ_BUFFER: usize = 1024;
/// How much the codec buffers before it writes on its own (we flush after each batch).
const WRITE_BUFFER: usize = MAX_COALESCE_BYTES;

const HEARTBEAT: Utf8Bytes = Utf8Bytes::from_static(r#"{"op":"heartbeat"}"#);
/// [`HEARTBEAT`] as a whole frame, for the fan-out to write onto a parked socket.
static HEARTBEAT_FRAME: LazyLock<Bytes> = LazyLock::new(|| ws_text_frame(HEARTBEAT.as_bytes()));
const PONG: Utf8Bytes = Utf8Bytes::from_static(r#"{"op":"pong"}"#);

type Socket = WebSocketStream<WsIo>;

/// How a session ended; logged once.
#[derive(Debug)]
enum CloseReason {
    ClientClosed,
    Shutdown,
    SlowConsumer,
    BadFrame(&'static str),
    SocketError,
}

impl CloseReason {
    fn describe(&self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client closed",
            CloseReason::Shutdown => "server shutdown",
            CloseReason::SlowConsumer => "client stopped reading (send timeout)",
            CloseReason::BadFrame(code) => code,
            CloseReason::SocketError => "socket error",
        }
    }
}

/// Client → server operations.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ClientOp {
    Subscribe {
        topics: Vec<String>,
        cursor: Option<String>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Ping,
}

#[derive(Serialize)]
struct Op<'a, T: Serialize> {
    op: &'a str,
    #[serde(flatten)]
    body: T,
}

fn op<T: Serialize>(name: &str, body: T) -> Message {
    Message::Text(to_json(&Op { op: name, body }).into())
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// The connection's upgrade, taken before axum's `WebSocketUpgrade` (which removes it
/// from the request) checks the request: the session is run here, on the connection's
/// own socket. Must come before `WebSocketUpgrade` in a handler's arguments.
pub(crate) struct RawUpgrade(Option<OnUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for RawUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(RawUpgrade(parts.extensions.get::<OnUpgrade>().cloned()))
    }
}

/// Answers a checked WebSocket upgrade request (`key`: its `Sec-WebSocket-Key`) with
/// `101 Switching Protocols` and runs the session once the upgrade completes.
pub(crate) fn serve(
    guard: ConnGuard,
    upgrade: RawUpgrade,
    key: &HeaderValue,
    request: StreamRequest,
) -> Result<Response, ApiError> {
    let not_upgradable = || {
        ApiError::bad_request(
            "not_a_websocket",
            "this connection cannot be upgraded (HTTP/1.1 with `Connection: upgrade` is needed)",
        )
    };
    let on_upgrade = upgrade.0.ok_or_else(not_upgradable)?;
    let accept = HeaderValue::try_from(derive_accept_key(key.as_bytes()))
        .map_err(|e| ApiError::Internal(format!("Sec-WebSocket-Accept: {e}")))?;
    // Taken before the upgrade completes, so a shutdown that starts in between still
    // waits for this session.
    let token = guard.state().tasks.token();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        // The server hands hyper the accepted `TcpStream` itself (`serve.rs`). What
        // hyper read past the request is copied out at once: its buffer shares hyper's
        // read buffer, a page per idle connection if kept (measured: 8.7 kB instead of
        // 4.5 kB per idle WebSocket).
        let (stream, unread) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Arc::new(parts.io.into_inner()), parts.read_buf.to_vec()),
            Err(_) => {
                tracing::error!("websocket upgrade on a connection that is not a TCP stream");
                return;
            }
        };
        let sink = guard
            .state()
            .fanout
            .sink(stream.clone(), Framing::WebSocket);
        let io = WsIo {
            stream,
            claim: sink.claim(),
            rest: Bytes::new(),
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CODEC_MESSAGE))
            .max_frame_size(Some(MAX_CODEC_MESSAGE))
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER);
        let socket = if unread.is_empty() {
            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
        } else {
            WebSocketStream::from_partially_read(io, unread, Role::Server, Some(config)).await
        };
        let reason = session(socket, &sink, &guard, request).await;
        tracing::debug!(reason = reason.describe(), "websocket closed");
        drop(token);
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// One owner for both directions of the socket: `select!` drops the read future before a
/// handler writes, so no lock between split halves is needed on every frame.
async fn session(
    mut socket: Socket,
    sink: &SinkHandle,
    guard: &ConnGuard,
    request: StreamRequest,
) -> CloseReason {
    let state = guard.state().clone();
    let heartbeat = state.config.heartbeat.get();
    let mut sub = state.hub.subscribe(request.topics, request.cursor.as_ref());

    let ready = Ready {
        cursor: sub.cursor(),
        transport: Transport::WebSocket,
        heartbeat_ms: heartbeat.as_millis() as u64,
        topics: sub.topics(),
    };
    if socket.send(op("ready", &ready)).await.is_err() {
        return CloseReason::SocketError;
    }
    let mut due = Heartbeat::new(heartbeat);
    // Whether the session has had everything ready; then it parks (the fan-out writes)
    // until something hands the socket back: a full socket, a client frame, shutdown.
    let mut caught_up = true;
    let mut parked = false;

    loop {
        if caught_up && !parked {
            // `send` and the batches flush, but a read may have left a pong in the
            // codec: it goes out before the fan-out's frames.
            if let Some(reason) = flush(&mut socket).await {
                return reason;
            }
            parked = sink.park(&mut sub, due.last());
        }
        let outcome = tokio::select! {
            frame = socket.next() => {
                if std::mem::take(&mut parked) {
                    // The frame may change the subscription, or need a reply.
                    if let Some(reason) = unpark(&mut socket, sink, &mut sub).await {
                        return reason;
                    }
                }
                // Parks again (and the fan-out catches it up from the log) unless the
                // frame asked for older events.
                caught_up = true;
                match frame {
                    None => return CloseReason::ClientClosed,
                    Some(Ok(Message::Close(_))) => {
                        // The codec queued the echo of the client's close frame; send it
                        // so the client sees a clean close with its own code.
                        let _ = timeout(Duration::from_secs(1), socket.flush()).await;
                        return CloseReason::ClientClosed;
                    }
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        return refuse(&mut socket, CloseCode::Size, "frame_too_large",
                            &format!("client frames are limited to {MAX_CLIENT_FRAME} bytes")).await;
                    }
                    Some(Err(WsError::Protocol(ProtocolError::ControlFrameTooBig))) => {
                        return refuse(&mut socket, CloseCode::Size, "frame_too_large",
                            "control frames (ping, pong, close) carry at most 125 bytes (RFC 6455 §5.5)").await;
                    }
                    Some(Err(_)) => return CloseReason::SocketError,
                    Some(Ok(message)) => handle(message, &mut sub).await,
                }
            },
            () = sink.handed_back(), if parked => {
                // The socket was full (or the server drains): the task catches up.
                parked = false;
                caught_up = false;
                match unpark(&mut socket, sink, &mut sub).await {
                    Some(reason) => Step::End(reason),
                    None => Step::Idle,
                }
            },
            item = sub.next(), if !parked => match item {
                None => {
                    // The hub closes only when the server drains (`Hub::close`).
                    let reconnect = Reconnect::shutdown();
                    let _ = timeout(Duration::from_secs(1), async {
                        socket.feed(op("reconnect", &reconnect)).await?;
                        socket.send(close(CloseCode::Restart, "server restarting")).await
                    }).await;
                    return CloseReason::Shutdown;
                }
                Some(item) => {
                    let mut events = 0;
                    let mut frames = 0;
                    let mut bytes = 0;
                    let mut item = Some(item);
                    let fed = timeout(SEND_TIMEOUT, async {
                        while let Some(next) = item.take() {
                            events += u64::from(matches!(next, Item::Event(_)));
                            let message = frame(next);
                            bytes += message_len(&message);
                            socket.feed(message).await?;
                            frames += 1;
                            if frames < MAX_COALESCE_FRAMES && bytes < MAX_COALESCE_BYTES {
                                item = sub.try_next();
                            }
                        }
                        socket.flush().await
                    }).await;
                    guard.delivered.inc_by(events);
                    // It stopped at a limit: more may be ready.
                    caught_up = frames < MAX_COALESCE_FRAMES && bytes < MAX_COALESCE_BYTES;
                    match fed {
                        Ok(Ok(())) => Step::Continue,
                        Ok(Err(_)) => Step::End(CloseReason::SocketError),
                        Err(_) => Step::End(CloseReason::SlowConsumer),
                    }
                }
            },
            () = due.due() => {
                if parked {
                    if due.beat_parked(sink, &HEARTBEAT_FRAME) {
                        Step::Idle
                    } else {
                        parked = false;
                        caught_up = false;
                        match unpark(&mut socket, sink, &mut sub).await {
                            Some(reason) => Step::End(reason),
                            None => Step::Idle,
                        }
                    }
                } else {
                    match timeout(SEND_TIMEOUT, socket.send(Message::Text(HEARTBEAT))).await {
                        Ok(Ok(())) => Step::Continue,
                        Ok(Err(_)) => Step::End(CloseReason::SocketError),
                        Err(_) => Step::End(CloseReason::SlowConsumer),
                    }
                }
            }
        };
        match outcome {
            Step::Idle => continue,
            Step::Continue => {}
            Step::Reply(message) => match timeout(SEND_TIMEOUT, socket.send(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return CloseReason::SocketError,
                Err(_) => return CloseReason::SlowConsumer,
            },
            Step::Refuse {
                code,
                error,
                message,
            } => {
                return refuse(&mut socket, code, error, &message).await;
            }
            Step::End(reason) => return reason,
        }
        due.wrote();
    }
}

/// Takes the socket back from the fan-out: the subscription resumes where the fan-out
/// stopped, and the rest of a frame it cut short is written first. `Some` if the
/// session must end.
async fn unpark(
    socket: &mut Socket,
    sink: &SinkHandle,
    sub: &mut Subscription,
) -> Option<CloseReason> {
    let rest = sink.take_back(sub)?;
    // Empty: the codec flushed (writing any earlier rest) before the session parked.
    debug_assert!(socket.get_ref().rest.is_empty());
    socket.get_mut().rest = rest;
    flush(socket).await
}

/// Writes whatever the codec holds, within [`SEND_TIMEOUT`]; `Some` if the session
/// must end.
async fn flush(socket: &mut Socket) -> Option<CloseReason> {
    match timeout(SEND_TIMEOUT, socket.flush()).await {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(CloseReason::SocketError),
        Err(_) => Some(CloseReason::SlowConsumer),
    }
}

enum Step {
    /// Nothing was written.
    Idle,
    /// Something was written.
    Continue,
    Reply(Message),
    Refuse {
        code: CloseCode,
        error: &'static str,
        message: String,
    },
    End(CloseReason),
}

fn frame(item: Item) -> Message {
    match item {
        Item::Event(event) => Message::Text(event.ws.clone()),
        Item::Reset(reset) => op("reset", &reset),
    }
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(t) => t.len(),
        _ => 0,
    }
}

/// The session's socket under the codec. Reads go straight to the socket; every write
/// first makes the session the socket's writer again ([`Claim`]) and writes the rest
/// of any frame the fan-out cut short, so the codec's frames never land inside one of
/// the fan-out's.
struct WsIo {
    stream: Arc<TcpStream>,
    claim: Claim,
    /// The unwritten end of a frame the fan-out began.
    rest: Bytes,
}

impl WsIo {
    /// Takes the socket back and writes the rest of a cut frame.
    fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(rest) = self.claim.claim() {
            self.rest = rest;
        }
        while !self.rest.is_empty() {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(&self.rest) {
                Ok(n) => self.rest.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_claim(cx))?;
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_claim(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_claim(cx))?;
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write))
    }
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Sends an `error` frame and closes with `code`.
async fn refuse<S>(sink: &mut S, code: CloseCode, error: &'static str, message: &str) -> CloseReason
where
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = timeout(Duration::from_secs(1), async {
        let _ = sink
            .feed(op(
                "error",
                ErrorBody {
                    code: error,
                    message,
                },
            ))
            .await;
        let _ = sink.send(close(code, error)).await;
    })
    .await;
    CloseReason::BadFrame(error)
}

/// Handles one client frame. Malformed frames end the session (1008, or 1009 when too
/// large); a well-formed request with a bad value gets an `error` frame and the session
/// goes on.
async fn handle(message: Message, sub: &mut Subscription) -> Step {
    let text = match message {
        Message::Text(text) => text,
        // Protocol pings are answered by the codec; pongs need nothing.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Step::Continue,
        Message::Binary(_) => {
            return Step::Refuse {
                code: CloseCode::Policy,
                error: "binary_frame",
                message: "binary frames are not supported; send JSON text frames".into(),
            };
        }
        // Handled by the session loop before it gets here.
        Message::Close(_) => return Step::End(CloseReason::ClientClosed),
    };
    if text.len() > MAX_CLIENT_FRAME {
        return Step::Refuse {
            code: CloseCode::Size,
            error: "frame_too_large",
            message: format!("client frames are limited to {MAX_CLIENT_FRAME} bytes"),
        };
    }
    let request: ClientOp = match serde_json::from_str(&text) {
        Ok(op) => op,
        Err(e) => {
            return Step::Refuse {
                code: CloseCode::Policy,
                error: "bad_frame",
                message: format!(
                    "could not read the frame ({e}); expected JSON such as {{\"op\":\"subscribe\",\"topics\":[\"a\"]}}, {{\"op\":\"unsubscribe\",\"topics\":[\"a\"]}} or {{\"op\":\"ping\"}}"
                ),
            };
        }
    };
    let result = match request {
        ClientOp::Ping => return Step::Reply(Message::Text(PONG)),
        ClientOp::Subscribe { topics, cursor } => subscribe(sub, &topics, cursor.as_deref()),
        ClientOp::Unsubscribe { topics } => TopicSet::from_names(&topics)
            .map(|topics| sub.unsubscribe(&topics))
            .map_err(|e| ("invalid_topic", e.0)),
    };
    match result {
        Ok(()) => Step::Reply(op_subscribed(sub)),
        Err((code, message)) => Step::Reply(op(
            "error",
            ErrorBody {
                code,
                message: &message,
            },
        )),
    }
}

fn subscribe(
    sub: &mut Subscription,
    topics: &[String],
    cursor: Option<&str>,
) -> Result<(), (&'static str, String)> {
    let topics = TopicSet::from_names(topics).map_err(|e| ("invalid_topic", e.0))?;
    let cursor = cursor
        .filter(|c| !c.is_empty())
        .map(Cursor::parse)
        .transpose()
        .map_err(|e| ("invalid_cursor", e.0))?;
    sub.subscribe(&topics, cursor.as_ref())
        .map_err(|e| ("invalid_topic", e.0))
}

#[derive(Serialize)]
struct Subscribed<'a> {
    topics: &'a TopicSet,
    cursor: String,
}

fn op_subscribed(sub: &Subscription) -> Message {
    op(
        "subscribed",
        Subscribed {
            topics: sub.topics(),
            cursor: sub.cursor(),
        },
    )
}
