//! WebSocket (SPEC §4.3): JSON text frames both ways.
//!
//! Server → client: `ready`, `event`, `heartbeat`, `reset`, `reconnect`, `subscribed`,
//! `pong`, `error`. Client → server: `subscribe`, `unsubscribe`, `ping`. The session is
//! one task: a `select!` over the subscription (which ends when the server drains), the
//! socket and the heartbeat timer. It is registered with the server's `TaskTracker`
//! before the upgrade completes, so shutdown waits for it (axum#3003).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

use super::{ConnGuard, Heartbeat, Ready, Reconnect, StreamRequest, Transport, to_json};
use crate::event::{Cursor, TopicSet};
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
const PONG: Utf8Bytes = Utf8Bytes::from_static(r#"{"op":"pong"}"#);

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

/// Upgrades and runs the session.
pub(crate) fn serve(
    guard: ConnGuard,
    upgrade: WebSocketUpgrade,
    request: StreamRequest,
) -> Response {
    // Taken before the upgrade completes, so a shutdown that starts in between still
    // waits for this session.
    let token = guard.state().tasks.token();
    upgrade
        .max_message_size(MAX_CODEC_MESSAGE)
        .max_frame_size(MAX_CODEC_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let reason = session(socket, &guard, request).await;
            tracing::debug!(reason = reason.describe(), "websocket closed");
            drop(token);
        })
}

/// One owner for both directions of the socket: `select!` drops the read future before a
/// handler writes, so no lock between split halves is needed on every frame.
async fn session(mut socket: WebSocket, guard: &ConnGuard, request: StreamRequest) -> CloseReason {
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

    loop {
        let outcome = tokio::select! {
            frame = socket.next() => match frame {
                None => return CloseReason::ClientClosed,
                Some(Ok(Message::Close(_))) => {
                    // The codec queued the echo of the client's close frame; send it so
                    // the client sees a clean close with its own code.
                    let _ = timeout(Duration::from_secs(1), socket.flush()).await;
                    return CloseReason::ClientClosed;
                }
                Some(Err(e)) => {
                    // The codec refuses messages over MAX_CODEC_MESSAGE with an error.
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                        return refuse(&mut socket, close_code::SIZE, "frame_too_large",
                            &format!("client frames are limited to {MAX_CLIENT_FRAME} bytes")).await;
                    }
                    return CloseReason::SocketError;
                }
                Some(Ok(message)) => handle(message, &mut sub).await,
            },
            item = sub.next() => match item {
                None => {
                    // The hub closes only when the server drains (`Hub::close`).
                    let reconnect = Reconnect::shutdown();
                    let _ = timeout(Duration::from_secs(1), async {
                        socket.feed(op("reconnect", &reconnect)).await?;
                        socket.send(close(close_code::RESTART, "server restarting")).await
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
                    match fed {
                        Ok(Ok(())) => Step::Continue,
                        Ok(Err(_)) => Step::End(CloseReason::SocketError),
                        Err(_) => Step::End(CloseReason::SlowConsumer),
                    }
                }
            },
            () = due.due() => {
                match timeout(SEND_TIMEOUT, socket.send(Message::Text(HEARTBEAT))).await {
                    Ok(Ok(())) => Step::Continue,
                    Ok(Err(_)) => Step::End(CloseReason::SocketError),
                    Err(_) => Step::End(CloseReason::SlowConsumer),
                }
            }
        };
        match outcome {
            Step::Continue => {}
            Step::Reply(message) => {
                if socket.send(message).await.is_err() {
                    return CloseReason::SocketError;
                }
            }
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

enum Step {
    Continue,
    Reply(Message),
    Refuse {
        code: u16,
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

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Sends an `error` frame and closes with `code`.
async fn refuse<S>(sink: &mut S, code: u16, error: &'static str, message: &str) -> CloseReason
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
        Message::Ping(_) | Message::Pong(_) => return Step::Continue,
        Message::Binary(_) => {
            return Step::Refuse {
                code: close_code::POLICY,
                error: "binary_frame",
                message: "binary frames are not supported; send JSON text frames".into(),
            };
        }
        // Handled by the session loop before it gets here.
        Message::Close(_) => return Step::End(CloseReason::ClientClosed),
    };
    if text.len() > MAX_CLIENT_FRAME {
        return Step::Refuse {
            code: close_code::SIZE,
            error: "frame_too_large",
            message: format!("client frames are limited to {MAX_CLIENT_FRAME} bytes"),
        };
    }
    let request: ClientOp = match serde_json::from_str(&text) {
        Ok(op) => op,
        Err(e) => {
            return Step::Refuse {
                code: close_code::POLICY,
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
