//! The client's operations on a WebSocket session: `subscribe`, `unsubscribe`, `auth`,
//! `ping`.

use std::sync::LazyLock;

use bytes::Bytes;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::super::Expiry;
use super::{MAX_CLIENT_FRAME, error_frame, op};
use crate::auth::{Access, AuthError, Grant};
use crate::event::{Cursor, TopicSet, ws_text_frame};
use crate::log::Subscription;
use crate::protocol::Subscribed;

/// `{"op":"pong"}` as a whole frame.
static PONG_FRAME: LazyLock<Bytes> = LazyLock::new(|| ws_text_frame(br#"{"op":"pong"}"#));

/// Whether a client text frame parses as an operation (for the fuzzer: the session's
/// own parse is the same `serde_json::from_str`).
pub(super) fn parse_client_op(text: &str) -> bool {
    serde_json::from_str::<ClientOp>(text).is_ok()
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
    Auth {
        token: String,
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
/// What a session's operations need of its token.
pub(super) struct Auth<'a> {
    pub(super) access: &'a Access,
    pub(super) grant: &'a mut Option<Grant>,
    pub(super) expiry: &'a mut Expiry,
}

impl Auth<'_> {
    /// Whether the session may follow `topics` (besides what it follows); the session
    /// ends at the grant's expiry once some topic needs it.
    fn check(&mut self, topics: &TopicSet) -> Result<(), AuthError> {
        if self.access.check(topics, self.grant.as_ref())?
            && let Some(grant) = self.grant.as_ref()
        {
            self.expiry.set(Some(grant.expires));
        }
        Ok(())
    }

    /// An in-band refresh: the new token must allow every topic followed now.
    fn refresh(&mut self, token: &str, followed: &TopicSet) -> Result<Grant, AuthError> {
        let grant = self.access.verify(token)?;
        let needed = self.access.check(followed, Some(&grant))?;
        self.expiry.set(needed.then_some(grant.expires));
        *self.grant = Some(grant.clone());
        Ok(grant)
    }
}

/// `authorized`: an in-band `auth` was accepted.
#[derive(serde::Serialize)]
struct Authorized {
    /// The new token's `exp`, in seconds since the epoch.
    exp: u64,
}

pub(super) async fn handle(message: Message, sub: &mut Subscription, mut auth: Auth<'_>) -> Reply {
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
                    "could not read the frame ({e}); expected JSON such as {{\"op\":\"subscribe\",\"topics\":[\"a\"]}}, {{\"op\":\"unsubscribe\",\"topics\":[\"a\"]}}, {{\"op\":\"auth\",\"token\":\"…\"}} or {{\"op\":\"ping\"}}"
                ),
            };
        }
    };
    let result = match request {
        ClientOp::Ping => return Reply::Frame(PONG_FRAME.clone()),
        ClientOp::Subscribe { topics, cursor } => {
            subscribe(sub, &topics, cursor.as_deref(), &mut auth).await
        }
        ClientOp::Auth { token } => {
            let followed = sub.topics().clone();
            return Reply::Frame(match auth.refresh(&token, &followed) {
                Ok(grant) => op(
                    "authorized",
                    Authorized {
                        exp: grant
                            .expires
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    },
                ),
                Err(e) => error_frame(e.code(), &e.to_string(), e.topic()),
            });
        }
        ClientOp::Unsubscribe { topics } => TopicSet::from_names(&topics)
            .map(|topics| sub.unsubscribe(&topics))
            .map_err(|e| ("invalid_topic", e.0, None)),
    };
    Reply::Frame(match result {
        Ok(()) => op(
            "subscribed",
            Subscribed {
                topics: sub.topics(),
                cursor: sub.cursor(),
            },
        ),
        Err((code, message, topic)) => error_frame(code, &message, topic.as_deref()),
    })
}

/// A refused op: its code, message and the topic it is about.
type Refused = (&'static str, String, Option<String>);

async fn subscribe(
    sub: &mut Subscription,
    topics: &[String],
    cursor: Option<&str>,
    auth: &mut Auth<'_>,
) -> Result<(), Refused> {
    let topics = TopicSet::from_names(topics).map_err(|e| ("invalid_topic", e.0, None))?;
    auth.check(&topics)
        .map_err(|e| (e.code(), e.to_string(), e.topic().map(str::to_owned)))?;
    let cursor = cursor
        .filter(|c| !c.is_empty())
        .map(Cursor::parse)
        .transpose()
        .map_err(|e| ("invalid_cursor", e.0, None))?;
    sub.subscribe(&topics, cursor.as_ref())
        .await
        .map_err(|e| ("invalid_topic", e.0, None))
}
