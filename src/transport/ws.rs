//! WebSocket (SPEC §4.3): JSON text frames both ways.
//!
//! Server → client: `ready`, `event`, `heartbeat`, `reset`, `reconnect`, `subscribed`,
//! `pong`, `error`. Client → server: `subscribe`, `unsubscribe`, `ping`. A `Session`
//! is one task: a `select!` over the subscription (which ends when the server drains),
//! the socket and the heartbeat timer.
//!
//! The session runs on any connection ([`SinkIo`]): the accepted socket itself when
//! the upgrade came first on its connection (`serve.rs` answers the handshake), or
//! hyper's upgraded connection otherwise. Every message the session sends is a
//! pre-encoded frame written as it is (an event's [`Event::ws_frame`] is shared by every
//! subscriber); the codec (tungstenite) reads client frames and writes only its own
//! replies (pongs, close frames). Like an SSE stream, a session that has caught up
//! *parks* its socket in the direct fan-out ([`crate::fanout`]); whatever the codec
//! writes first takes the socket back (`WsIo`), so frames never interleave.
//!
//! [`Event::ws_frame`]: crate::event::Event::ws_frame

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

mod ops;

use super::{Admitted, ConnGuard, Expiry, Heartbeat};
use crate::auth::Grant;
use crate::error::ApiError;
use crate::event::ws_text_frame;
use crate::fanout::{Locked, SinkHandle, SinkIo, SinkWriter, write_all};
use crate::limits::Refill;
use crate::log::{Item, Subscription};
use crate::metrics::RateLimited;
use crate::protocol::{ErrorBody, Ready, Reconnect, Transport, to_json};
use ops::{Reply, handle};

/// Largest client frame the session accepts; larger ones get an error and close 1009.
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// Largest message the WebSocket codec buffers at all before failing the read.
const MAX_CODEC_MESSAGE: usize = 64 * 1024;
/// Longest a write to the client may block (a reader that stopped reading). After this
/// the session closes; the client resumes from its last cursor when it reconnects.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Most events written in one write when several are ready…
pub const MAX_COALESCE_FRAMES: usize = 64;
/// …and most bytes: a batch stops growing at this size.
pub const MAX_COALESCE_BYTES: usize = 64 * 1024;
/// The codec's read buffer, allocated up front for every connection. tungstenite's
/// default is 128 KiB, which would cost 1.3 GB per 10,000 idle sockets. Client frames
/// here are small (pings and subscribes; at most [`MAX_CLIENT_FRAME`], read in several
/// chunks then), so 1 KiB suffices. Measured with 10,000 idle WebSockets: 4.6 kB per
/// connection with 1 KiB, 8.0 kB with 4 KiB.
pub const READ_BUFFER: usize = 1024;
/// How much the codec buffers before it writes on its own (its replies are small).
const WRITE_BUFFER: usize = 4096;

/// `{"op":"heartbeat"}` as a whole frame.
static HEARTBEAT_FRAME: LazyLock<Bytes> = LazyLock::new(|| ws_text_frame(br#"{"op":"heartbeat"}"#));
type Socket = WebSocketStream<WsIo>;

/// How a session ended; logged once.
#[derive(Debug)]
enum CloseReason {
    ClientClosed,
    Shutdown,
    TokenExpired,
    SlowConsumer,
    BadFrame(&'static str),
    SocketError,
}

impl CloseReason {
    fn describe(&self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client closed",
            CloseReason::Shutdown => "server shutdown",
            CloseReason::TokenExpired => "token expired",
            CloseReason::SlowConsumer => "client stopped reading (send timeout)",
            CloseReason::BadFrame(code) => code,
            CloseReason::SocketError => "socket error",
        }
    }
}

#[derive(Serialize)]
struct Op<'a, T: Serialize> {
    op: &'a str,
    #[serde(flatten)]
    body: T,
}

/// Reads `bytes` as what a client sent after the handshake, with the session's codec
/// settings, and parses each text message as an operation, until the bytes run out or
/// the codec refuses them (for the fuzzer). Returns the messages read.
pub(crate) fn read_client_bytes(bytes: &[u8]) -> usize {
    use std::io::{Cursor as IoCursor, Read, Write};
    /// The bytes to read; writes (pongs, closes) go nowhere.
    struct Input<'a>(IoCursor<&'a [u8]>);
    impl Read for Input<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Input<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CODEC_MESSAGE))
        .max_frame_size(Some(MAX_CODEC_MESSAGE))
        .read_buffer_size(READ_BUFFER);
    let mut socket = tokio_tungstenite::tungstenite::WebSocket::from_raw_socket(
        Input(IoCursor::new(bytes)),
        Role::Server,
        Some(config),
    );
    let mut read = 0;
    while let Ok(message) = socket.read() {
        read += 1;
        if let Message::Text(text) = message {
            let _ = ops::parse_client_op(&text);
        }
    }
    read
}

/// A server message as a whole frame.
fn op<T: Serialize>(name: &str, body: T) -> Bytes {
    ws_text_frame(to_json(&Op { op: name, body }).as_bytes())
}

fn error_frame(code: &str, message: &str, topic: Option<&str>) -> Bytes {
    op(
        "error",
        ErrorBody {
            code,
            message,
            topic,
        },
    )
}

/// `Sec-WebSocket-Accept` for an admitted handshake.
pub(crate) fn accept_key(admitted: &Admitted) -> Result<HeaderValue, ApiError> {
    let key = admitted
        .websocket_key
        .as_ref()
        .ok_or_else(|| ApiError::Internal("a WebSocket admitted without its key".into()))?;
    HeaderValue::try_from(derive_accept_key(key.as_bytes()))
        .map_err(|e| ApiError::Internal(format!("Sec-WebSocket-Accept: {e}")))
}

/// The `101 Switching Protocols` head, for a handshake answered on the socket itself.
pub(crate) fn switching_protocols(accept: &HeaderValue) -> Vec<u8> {
    let mut head = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: ".to_vec();
    head.extend_from_slice(accept.as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Answers an admitted handshake that hyper serves with `101` and runs the session on
/// the upgraded connection once hyper hands it over.
pub(crate) fn serve_upgrade(
    admitted: Admitted,
    on_upgrade: Option<OnUpgrade>,
) -> Result<Response, ApiError> {
    let on_upgrade = on_upgrade.ok_or_else(|| {
        ApiError::bad_request(
            "not_a_websocket",
            "this connection cannot be upgraded (HTTP/1.1 with `Connection: upgrade` is needed)",
        )
    })?;
    let accept = accept_key(&admitted)?;
    // Spawned on the tracker before the upgrade completes, so a shutdown that starts in
    // between still waits for this session.
    let tasks = admitted.guard.state().tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(Arc::new(Locked::new(TokioIo::new(upgraded))), admitted).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Opens the session of an admitted stream on `io`, after the handshake, and runs it.
pub(crate) async fn run(io: Arc<dyn SinkIo>, admitted: Admitted) {
    if let Some(session) = Session::open(io, admitted).await {
        session.run().await;
    }
}

/// One WebSocket stream: its socket (read by the codec), its sink in the fan-out, its
/// subscription and its heartbeat.
pub(crate) struct Session {
    /// Keeps the stream counted for as long as it lives.
    guard: ConnGuard,
    heartbeat: Duration,
    /// What the stream's token allows (replaced by an in-band `auth`).
    grant: Option<Grant>,
    /// When it expires, if some topic needs it.
    expiry: Expiry,
    socket: Socket,
    /// The connection, for the session's own (pre-encoded) frames.
    io: Arc<dyn SinkIo>,
    sink: SinkHandle,
    sub: Subscription,
    due: Heartbeat,
    /// The fan-out writes the socket.
    parked: bool,
    /// The session has had everything ready: it parks once it has flushed.
    caught_up: bool,
    /// Client frames it may still send (`SWITCHYARD_WS_OPS_PER_SECOND`).
    ops: Refill,
}

/// Whether a step wrote to the socket (the heartbeat is due a period after a write).
enum Wrote {
    Yes,
    No,
}

type Step = Result<Wrote, CloseReason>;

impl Session {
    /// Subscribes an admitted stream and starts the codec on `io` (after the handshake).
    pub(crate) async fn open(io: Arc<dyn SinkIo>, admitted: Admitted) -> Option<Session> {
        let Admitted {
            guard,
            topics,
            cursor,
            grant,
            expires,
            ..
        } = admitted;
        let state = guard.state().clone();
        let output = state.output(Transport::WebSocket)?;
        let sink = state.fanout.sink(io.clone(), output);
        let codec_io = WsIo {
            stream: io.clone(),
            writer: sink.writer(),
            rest: Bytes::new(),
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CODEC_MESSAGE))
            .max_frame_size(Some(MAX_CODEC_MESSAGE))
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER);
        let socket = WebSocketStream::from_raw_socket(codec_io, Role::Server, Some(config)).await;
        let heartbeat = state.config.heartbeat.get();
        let sub = Subscription::open(state.log.clone(), topics, cursor.as_ref()).await;
        Some(Session {
            guard,
            heartbeat,
            grant,
            expiry: Expiry::new(expires),
            socket,
            io,
            sink,
            sub,
            due: Heartbeat::new(heartbeat),
            parked: false,
            caught_up: true,
            ops: Refill::full(f64::from(state.config.ws_ops_per_second)),
        })
    }

    /// Runs the session until it ends; logs how.
    pub(crate) async fn run(mut self) {
        let reason = self.serve().await;
        tracing::debug!(reason = reason.describe(), "websocket closed");
    }

    async fn serve(&mut self) -> CloseReason {
        let heartbeat = self.heartbeat;
        let ready = op(
            "ready",
            Ready {
                cursor: self.sub.cursor(),
                transport: Transport::WebSocket,
                heartbeat_ms: heartbeat.as_millis() as u64,
                topics: self.sub.topics(),
            },
        );
        if let Err(reason) = self.write(&ready).await {
            return reason;
        }
        loop {
            if self.caught_up && !self.parked {
                // A read may have left a pong in the codec: it goes out before the
                // fan-out's frames.
                if let Err(reason) = self.flush().await {
                    return reason;
                }
                self.parked = self.sink.park(&mut self.sub, self.due.last());
            }
            let step = tokio::select! {
                // The handlers are boxed: an idle session's task holds only what it
                // waits on (measured on the future of open + run: 2,408 bytes instead of
                // 2,680).
                frame = self.socket.next() => Box::pin(self.on_frame(frame)).await,
                () = self.sink.handed_back(), if self.parked => {
                    // The socket was full (or the server drains): the task catches up.
                    self.parked = false;
                    self.caught_up = false;
                    Box::pin(self.unpark()).await.map(|()| Wrote::No)
                },
                item = self.sub.next(), if !self.parked => Box::pin(self.on_item(item)).await,
                () = self.due.due() => Box::pin(self.on_heartbeat()).await,
                () = self.expiry.wait() => Box::pin(self.on_expiry()).await,
            };
            match step {
                Ok(Wrote::Yes) => self.due.wrote(),
                Ok(Wrote::No) => {}
                Err(reason) => return reason,
            }
        }
    }

    /// A client frame (or the end of the stream).
    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        if std::mem::take(&mut self.parked) {
            // The frame may change the subscription, or need a reply.
            self.unpark().await?;
        }
        // Parks again (and the fan-out catches it up from the log) unless the frame
        // asked for older events.
        self.caught_up = true;
        let message = match frame {
            None => return Err(CloseReason::ClientClosed),
            Some(Ok(Message::Close(_))) => {
                // The codec queued the echo of the client's close frame; send it so the
                // client sees a clean close with its own code.
                let _ = timeout(Duration::from_secs(1), self.socket.flush()).await;
                return Err(CloseReason::ClientClosed);
            }
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                let message = format!("client frames are limited to {MAX_CLIENT_FRAME} bytes");
                return Err(self
                    .refuse(CloseCode::Size, "frame_too_large", &message)
                    .await);
            }
            Some(Err(WsError::Protocol(ProtocolError::ControlFrameTooBig))) => {
                let message =
                    "control frames (ping, pong, close) carry at most 125 bytes (RFC 6455 §5.5)";
                return Err(self
                    .refuse(CloseCode::Size, "frame_too_large", message)
                    .await);
            }
            Some(Err(WsError::Protocol(e))) => {
                // Unmasked or reserved-bit frames, reserved opcodes, fragmented control
                // frames, bad close payloads...: 1002, with what was wrong.
                let message = format!("WebSocket protocol error: {e}");
                return Err(self
                    .refuse(CloseCode::Protocol, "protocol_error", &message)
                    .await);
            }
            Some(Err(WsError::Utf8(_))) => {
                let message = "a text frame was not valid UTF-8 (RFC 6455 §8.1)";
                return Err(self
                    .refuse(CloseCode::Invalid, "invalid_utf8", message)
                    .await);
            }
            Some(Err(_)) => return Err(CloseReason::SocketError),
            Some(Ok(message)) => message,
        };
        let state = self.guard.state().clone();
        let rate = f64::from(state.config.ws_ops_per_second);
        if !self.ops.admit(rate, rate) {
            state.metrics.rate_limit(RateLimited::ws_ops);
            let message = format!(
                "more than {rate} client frames a second (SWITCHYARD_WS_OPS_PER_SECOND); reconnect more gently"
            );
            return Err(self
                .refuse(CloseCode::Policy, "rate_limited", &message)
                .await);
        }
        let auth = ops::Auth {
            access: &state.access,
            grant: &mut self.grant,
            expiry: &mut self.expiry,
        };
        match handle(message, &mut self.sub, auth).await {
            Reply::Nothing => Ok(Wrote::No),
            Reply::Frame(frame) => self.write(&frame).await,
            Reply::Refuse {
                code,
                error,
                message,
            } => Err(self.refuse(code, error, &message).await),
        }
    }

    /// The subscription's next item, with every item ready after it, in one write.
    async fn on_item(&mut self, item: Option<Item>) -> Step {
        let Some(item) = item else {
            // The log closes when the server drains, or when it cannot serve.
            let reconnect = op("reconnect", self.sub.ended());
            let _ = timeout(Duration::from_secs(1), async {
                let _ = write_all(&*self.io, &reconnect).await;
                self.socket
                    .send(close(CloseCode::Restart, "server restarting"))
                    .await
            })
            .await;
            return Err(CloseReason::Shutdown);
        };
        let (frames, events, full) = super::coalesce(
            item,
            &mut self.sub,
            frame,
            MAX_COALESCE_FRAMES,
            MAX_COALESCE_BYTES,
        );
        self.guard.delivered.inc_by(events);
        // It stopped at a limit: more may be ready.
        self.caught_up = !full;
        self.write(&frames).await
    }

    /// The token expired: `reconnect` (`token_expired`), then a close.
    async fn on_expiry(&mut self) -> Step {
        if std::mem::take(&mut self.parked) {
            self.unpark().await?;
        }
        let reconnect = op("reconnect", Reconnect::token_expired());
        let _ = timeout(Duration::from_secs(1), async {
            if self.flush().await.is_ok() {
                let _ = write_all(&*self.io, &reconnect).await;
            }
            self.socket
                .send(close(CloseCode::Policy, "token_expired"))
                .await
        })
        .await;
        Err(CloseReason::TokenExpired)
    }

    async fn on_heartbeat(&mut self) -> Step {
        if !self.parked {
            return self.write(&HEARTBEAT_FRAME).await;
        }
        if !self.due.beat_parked(&self.sink, &HEARTBEAT_FRAME) {
            self.parked = false;
            self.caught_up = false;
            self.unpark().await?;
        }
        Ok(Wrote::No)
    }

    /// Writes pre-encoded frames after whatever the codec holds, within the send
    /// time-out.
    async fn write(&mut self, frames: &[u8]) -> Step {
        self.flush().await?;
        within_send_timeout(write_all(&*self.io, frames)).await?;
        Ok(Wrote::Yes)
    }

    /// Takes the socket back from the fan-out: the subscription resumes where the
    /// fan-out stopped, and the rest of a frame it cut short is written first.
    async fn unpark(&mut self) -> Result<(), CloseReason> {
        let Some(rest) = self.sink.take_back(&mut self.sub) else {
            return Ok(());
        };
        // Empty: the codec flushed (writing any earlier rest) before the session parked.
        debug_assert!(self.socket.get_ref().rest.is_empty());
        self.socket.get_mut().rest = rest;
        self.flush().await
    }

    /// Writes whatever the codec holds (and the rest of a cut frame).
    async fn flush(&mut self) -> Result<(), CloseReason> {
        within_send_timeout(self.socket.flush()).await
    }

    /// Sends an `error` frame and closes with `code`.
    async fn refuse(&mut self, code: CloseCode, error: &'static str, message: &str) -> CloseReason {
        let frame = error_frame(error, message, None);
        let _ = timeout(Duration::from_secs(1), async {
            if self.flush().await.is_ok() {
                let _ = write_all(&*self.io, &frame).await;
            }
            let _ = self.socket.send(close(code, error)).await;
        })
        .await;
        CloseReason::BadFrame(error)
    }
}

/// The one way a session's write is bounded: [`SEND_TIMEOUT`].
async fn within_send_timeout<E>(
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), CloseReason> {
    match timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(CloseReason::SocketError),
        Err(_) => Err(CloseReason::SlowConsumer),
    }
}

fn frame(item: Item) -> (Bytes, u64) {
    match item {
        Item::Event(event) => (event.ws_frame.clone(), 1),
        Item::Reset(reset) => (op("reset", &reset), 0),
    }
}

/// The session's socket under the codec. Reads go straight to the connection; every
/// write first makes the session the socket's writer again ([`SinkWriter`]) and writes
/// the rest of any frame the fan-out cut short, so the codec's frames never land inside
/// one of the fan-out's.
struct WsIo {
    stream: Arc<dyn SinkIo>,
    writer: SinkWriter,
    /// The unwritten end of a frame the fan-out began.
    rest: Bytes,
}

impl WsIo {
    /// Takes the socket back and writes the rest of a cut frame.
    fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(rest) = self.writer.take_back() {
            self.rest = rest;
        }
        while !self.rest.is_empty() {
            let n = ready!(self.stream.poll_write(cx, &self.rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.rest.advance(n);
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
        self.stream.poll_read(cx, buf)
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_claim(cx))?;
        self.stream.poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_claim(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_claim(cx))?;
        Poll::Ready(self.stream.shutdown_write())
    }
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}
