//! The wire vocabulary: the transports and the control messages every transport sends.
//!
//! A leaf module (no axum, no hyper, no tokio): everything else that lists transports —
//! configuration parsing, negotiate, status, metrics labels, the fan-out's framing —
//! reads [`TRANSPORTS`], so a new transport is one row here plus its own file in
//! `transport/` (and the browser client's `LINKS` table).

use std::fmt;

use bytes::Bytes;
use rand::Rng;
use serde::Serialize;

use crate::event::{Event, TopicSet};

/// The content-negotiated stream endpoint (SPEC §4.2); each transport also has its own
/// ([`Transport::path`]).
pub const STREAM_PATH: &str = "/v1/stream";

/// Range of the `after_ms` a draining server tells clients to wait before reconnecting.
/// Spread at random so a restart does not bring every client back at the same instant.
pub const RECONNECT_AFTER_MS: std::ops::RangeInclusive<u64> = 250..=3000;

/// The ways to carry a stream. Every property of one is a column of [`TRANSPORTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// WebSocket, JSON text frames (`/v1/ws`).
    WebSocket,
    /// Server-Sent Events (`/v1/sse`).
    Sse,
    /// HTTP long polling, JSON (`/v1/poll`).
    LongPoll,
}

/// One row of the transport table.
#[derive(Debug)]
pub struct TransportSpec {
    /// The transport.
    pub transport: Transport,
    /// Its name in configuration, on the wire and in metrics labels.
    pub name: &'static str,
    /// Its dedicated endpoint.
    pub path: &'static str,
    /// The shared bytes of an event that a caught-up stream of this transport writes to
    /// its socket as they are (via the direct fan-out); `None` for a transport that
    /// answers whole responses (long polling).
    pub frame: Option<fn(&Event) -> &Bytes>,
}

/// Every transport, in the default preference order.
pub const TRANSPORTS: [TransportSpec; 3] = [
    TransportSpec {
        transport: Transport::WebSocket,
        name: "websocket",
        path: "/v1/ws",
        frame: Some(|e| &e.ws_frame),
    },
    TransportSpec {
        transport: Transport::Sse,
        name: "sse",
        path: "/v1/sse",
        frame: Some(|e| &e.sse),
    },
    TransportSpec {
        transport: Transport::LongPoll,
        name: "longpoll",
        path: "/v1/poll",
        frame: None,
    },
];

/// Reasons a client may report for a fallback (`POST /v1/reports`).
pub const REPORT_REASONS: &[&str] = &[
    "upgrade_failed",
    "no_ready",
    "stalled",
    "http_status",
    "network_error",
    "closed",
    "disabled",
    "probe_failed",
];

impl Transport {
    /// Every transport, in the default preference order.
    pub const ALL: [Transport; TRANSPORTS.len()] = {
        let mut all = [Transport::WebSocket; TRANSPORTS.len()];
        let mut i = 0;
        while i < TRANSPORTS.len() {
            all[i] = TRANSPORTS[i].transport;
            i += 1;
        }
        all
    };

    /// Its row of [`TRANSPORTS`].
    pub fn spec(self) -> &'static TransportSpec {
        // Every variant has a row (`table_covers_every_transport`); the first row is a
        // fallback the compiler can see, never taken.
        TRANSPORTS
            .iter()
            .find(|s| s.transport == self)
            .unwrap_or(&TRANSPORTS[0])
    }

    /// Position in [`TRANSPORTS`], for per-transport arrays.
    pub fn index(self) -> usize {
        TRANSPORTS
            .iter()
            .position(|s| s.transport == self)
            .unwrap_or(0)
    }

    /// The name used in configuration and on the wire.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Parses a name as written in `SWITCHYARD_TRANSPORTS` (any case).
    pub fn from_name(name: &str) -> Option<Transport> {
        TRANSPORTS
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.transport)
    }

    /// The transport whose dedicated endpoint is `path`.
    pub fn from_path(path: &str) -> Option<Transport> {
        TRANSPORTS
            .iter()
            .find(|s| s.path == path)
            .map(|s| s.transport)
    }

    /// The dedicated endpoint.
    pub fn path(self) -> &'static str {
        self.spec().path
    }

    /// Every name, `, `-separated, for messages ("websocket, sse, longpoll").
    pub fn names() -> String {
        TRANSPORTS.map(|s| s.name).join(", ")
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `ready`: the first message of every stream.
#[derive(Debug, Serialize)]
pub struct Ready<'a> {
    /// Where the stream starts (after a reset: the head).
    pub cursor: String,
    /// The transport carrying it.
    pub transport: Transport,
    /// Longest silence between two messages.
    pub heartbeat_ms: u64,
    /// The topics it follows.
    pub topics: &'a TopicSet,
}

/// Why a subscriber was told its history is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The cursor names another log (the server restarted, or another deployment).
    UnknownEpoch,
    /// Events after the cursor have left retention (count or age).
    CursorExpired,
    /// The cursor is ahead of this log's head: it cannot have come from this log.
    CursorAhead,
}

/// `reset`: events may be missing; the app must refetch its state. Streaming continues
/// after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reset {
    /// Why.
    pub reason: ResetReason,
    /// The cursor the stream now continues after.
    pub cursor: String,
}

/// `reconnect`: the server is draining; come back after `after_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct Reconnect {
    /// Why (`shutdown`, `log_unavailable`, `token_expired`).
    pub reason: &'static str,
    /// How long to wait first.
    pub after_ms: u64,
}

impl Reconnect {
    /// A reconnect for a shutting-down server, with a jittered delay.
    pub fn shutdown() -> Reconnect {
        Reconnect {
            reason: "shutdown",
            after_ms: rand::rng().random_range(RECONNECT_AFTER_MS),
        }
    }

    /// A reconnect for a stream whose node lost its log (Redis unreachable): come back
    /// after a jittered delay, here (where `/readyz` says 503) or on another node.
    pub fn log_unavailable() -> Reconnect {
        Reconnect {
            reason: "log_unavailable",
            after_ms: rand::rng().random_range(RECONNECT_AFTER_MS),
        }
    }

    /// A reconnect for a stream whose token expired: fetch a new token and come back
    /// from the cursor, at once.
    pub fn token_expired() -> Reconnect {
        Reconnect {
            reason: "token_expired",
            after_ms: 0,
        }
    }
}

/// `subscribed` (WebSocket): the topics now followed, and the cursor handed out so far.
#[derive(Debug, Serialize)]
pub struct Subscribed<'a> {
    /// Every topic the stream follows now.
    pub topics: &'a TopicSet,
    /// The cursor handed out up to.
    pub cursor: String,
}

/// `error` (WebSocket): a request the server did not carry out.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Machine-readable code, as in HTTP errors.
    pub code: &'a str,
    /// What is wrong, in words.
    pub message: &'a str,
    /// The topic refused (`token_required`, `topic_forbidden`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
}

/// Serialises a control message; the structs here cannot fail to serialise.
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_transport() {
        for (i, t) in Transport::ALL.into_iter().enumerate() {
            assert_eq!(t.spec().transport, t);
            assert_eq!(t.index(), i);
            assert_eq!(Transport::from_name(t.name()), Some(t));
            assert_eq!(Transport::from_path(t.path()), Some(t));
        }
        assert_eq!(Transport::names(), "websocket, sse, longpoll");
        assert_eq!(Transport::from_name("SSE"), Some(Transport::Sse));
        assert_eq!(Transport::from_name("pigeon"), None);
    }
}
