//! The log: where published events are kept in one order, and how readers follow it.
//!
//! Everything above this module — subscriptions, the direct fan-out, the API, the demo —
//! sees only the [`Log`] trait, so a backend is one file here plus its configuration
//! switch. [`memory`] keeps the log in this process; [`file`](mod@file) keeps it durable in a
//! folder (and serves it from memory).
//!
//! ## How readers follow the log
//!
//! Every reader does the same two things: it watches the head ([`Log::watch`], which
//! carries the latest append's events themselves, see [`Head`]) and, whenever the head
//! is ahead of what it has, reads what it lacks with [`Log::read_after`]. A reader that
//! was at the head takes the latest append from the watch without touching the log; one
//! that fell further behind reads the log in batches of at most [`CATCHUP_BATCH`]
//! events. Nothing is queued per reader beyond one batch, and no reader can miss an
//! event: it marks the head it has seen before it reads, so an append that lands after
//! the read wakes it again. This replaced a broadcast ring (measured in
//! `BENCHMARKS.md`, "The log interface").

pub mod file;
pub mod memory;
pub mod redis;
mod subscription;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::watch;

use crate::event::{Event, NewEvent};
pub use crate::protocol::{Reset, ResetReason};
pub use subscription::{Item, Subscription};

/// Most events one read of the log returns: bounds both the time a backend's lock (or
/// request) takes and the replay a subscriber buffers.
pub const CATCHUP_BATCH: usize = 512;

/// A log shared by everything that reads or appends to it.
pub type SharedLog = Arc<dyn Log>;

/// Why an append was not stored. Nothing is acknowledged that is not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The backend cannot be reached or refused the write.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
}

/// Why a read returned no events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Events after the position asked for have left retention; the oldest one kept
    /// has sequence number `first`.
    #[error("events after the cursor have left retention (the oldest kept is {first})")]
    Expired {
        /// Sequence number of the oldest retained event.
        first: u64,
    },
    /// The backend cannot be reached.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
}

/// The latest append, as [`Log::watch`] carries it.
#[derive(Clone, Debug, Default)]
pub struct Head {
    /// Sequence number of the newest event (0 when the log is empty).
    pub seq: u64,
    /// The latest append's events (consecutive, the last one at `seq`), so that a
    /// reader that was at the head before takes them without reading the log.
    pub events: Arc<[Arc<Event>]>,
    /// When this process took the latest append in (`None` for a head that is not an
    /// append: the start, a restore), for `publish_to_first_write_seconds`.
    pub appended: Option<std::time::Instant>,
}

/// Head and size of the log, for status and negotiation.
#[derive(Debug, Clone, Serialize)]
pub struct LogStats {
    /// Cursor of the newest event (sequence 0 when empty).
    pub head: String,
    /// Events currently retained.
    pub retained: usize,
    /// Bytes they hold in memory (their encodings).
    pub retained_bytes: u64,
    /// Cursor of the oldest retained event, if any.
    pub oldest: Option<String>,
}

/// Counters every backend keeps; registered with the metrics registry by the server.
#[derive(Clone, Debug, Default)]
pub struct LogCounters {
    /// Events appended to the log.
    pub published: Counter,
    /// Resets handed to subscribers (unknown epoch, expired or impossible cursor).
    pub resets: Counter,
    /// Times a reader that was at the head fell behind and caught up from the log.
    pub lagged: Counter,
    /// Appends and reads the backend could not carry out (a disk or Redis error).
    pub errors: Counter,
    /// A shared backend: how far this node's copy was behind when it last took events
    /// in (from the publish to the node's reader), in milliseconds.
    pub lag_ms: prometheus_client::metrics::gauge::Gauge,
}

/// An ordered, retained log of events with one epoch.
///
/// Sequence numbers start at 1 and have no gaps; a cursor is `<epoch>-<seq>`. Events are
/// encoded once, by the backend, when they enter this process (on append, or when a
/// shared backend's reader takes them in).
pub trait Log: Send + Sync + 'static {
    /// The log's epoch: cursors of another epoch come from another log.
    fn epoch(&self) -> &str;

    /// Appends events (contiguous sequence numbers, in order) and wakes the watchers.
    /// Returns the stored events once they are stored.
    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, AppendError>>;

    /// Up to `max` events after sequence number `pos`, oldest first (empty at the head).
    fn read_after(&self, pos: u64, max: usize)
    -> BoxFuture<'_, Result<Vec<Arc<Event>>, ReadError>>;

    /// Sequence number of the newest event.
    fn head(&self) -> u64;

    /// The head as it moves; its `changed` fails once the log is closed. `None` if it
    /// already is.
    fn watch(&self) -> Option<watch::Receiver<Head>>;

    /// Ends every reader: each takes what it has not yet taken, then ends. Appends still
    /// work (readers opened afterwards replay, then end). Used by the drain, so streams
    /// need not watch a shutdown signal on every delivery.
    fn close(&self);

    /// Head, size and oldest entry.
    fn stats(&self) -> LogStats;

    /// The log's counters.
    fn counters(&self) -> &LogCounters;

    /// Whether the log can serve now (`/readyz`): `Err` says why not.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The cursor string of sequence number `seq` in `log`.
pub fn cursor(log: &dyn Log, seq: u64) -> String {
    format!("{}-{}", log.epoch(), seq)
}
