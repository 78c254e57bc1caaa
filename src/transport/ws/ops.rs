//! The client's operations on a WebSocket session: `subscribe`, `unsubscribe`, `ping`.

use std::sync::LazyLock;

use bytes::Bytes;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{MAX_CLIENT_FRAME, error_frame, op};
use crate::event::{Cursor, TopicSet, ws_text_frame};
use crate::log::Subscription;
use crate::protocol::Subscribed;

/// `{"op":"pong"}` as a whole frame.
static PONG_FRAME: LazyLock<Bytes> = LazyLock::new(|| ws_text_frame(br#"{"op":"pong"}"#));

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

/// What the session does about a client frame.
pub(super) enum Reply {
    Nothing,
    Frame(Bytes),
    Refuse {
        code: CloseCode,
        error: &'static str,
        message: String,
    },
}

/// Handles one client frame. Malformed frames end the session (1008, or 1009 when too
/// large); a well-formed request with a bad value gets an `error` frame and the session
/// goes on.
pub(super) async fn handle(message: Message, sub: &mut Subscription) -> Reply {
    let text = match message {
        Message::Text(text) => text,
        // Protocol pings are answered by the codec; pongs need nothing.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {
            return Reply::Nothing;
        }
        Message::Binary(_) => {
            return Reply::Refuse {
                code: CloseCode::Policy,
                error: "binary_frame",
                message: "binary frames are not supported; send JSON text frames".into(),
            };
        }
    };
    if text.len() > MAX_CLIENT_FRAME {
        return Reply::Refuse {
            code: CloseCode::Size,
            error: "frame_too_large",
            message: format!("client frames are limited to {MAX_CLIENT_FRAME} bytes"),
        };
    }
    let request: ClientOp = match serde_json::from_str(&text) {
        Ok(op) => op,
        Err(e) => {
            return Reply::Refuse {
                code: CloseCode::Policy,
                error: "bad_frame",
                message: format!(
                    "could not read the frame ({e}); expected JSON such as {{\"op\":\"subscribe\",\"topics\":[\"a\"]}}, {{\"op\":\"unsubscribe\",\"topics\":[\"a\"]}} or {{\"op\":\"ping\"}}"
                ),
            };
        }
    };
    let result = match request {
        ClientOp::Ping => return Reply::Frame(PONG_FRAME.clone()),
        ClientOp::Subscribe { topics, cursor } => subscribe(sub, &topics, cursor.as_deref()).await,
        ClientOp::Unsubscribe { topics } => TopicSet::from_names(&topics)
            .map(|topics| sub.unsubscribe(&topics))
            .map_err(|e| ("invalid_topic", e.0)),
    };
    Reply::Frame(match result {
        Ok(()) => op(
            "subscribed",
            Subscribed {
                topics: sub.topics(),
                cursor: sub.cursor(),
            },
        ),
        Err((code, message)) => error_frame(code, &message),
    })
}

async fn subscribe(
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
        .await
        .map_err(|e| ("invalid_topic", e.0))
}
