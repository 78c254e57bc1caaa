//! One-time tickets (`POST /v1/tickets`): a verified [`Grant`] behind a random name,
//! good for one stream open within [`TICKET_TTL`], so native `EventSource` and
//! `WebSocket` (which cannot send headers) never put a long-lived token in a URL.
//!
//! The store is a trait so that several nodes can share one: [`RedisTickets`] keeps a
//! ticket as `SET switchyard:ticket:<name> <grant> NX PX <ttl>` and redeems it with
//! `GETDEL`, so any node redeems, exactly once, what any node issued (a client behind a
//! load balancer without sticky sessions posts the ticket to one node and opens its stream
//! on another). [`Tickets`] keeps them in this process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::{BoxFuture, FutureExt, ready};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

use super::{Grant, Patterns};

/// How long a ticket may wait for its stream.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most tickets waiting at once (about 300 bytes each: at most ~30 MB). Past it,
/// `POST /v1/tickets` answers `429` until some are used or expire.
pub const MAX_TICKETS: usize = 100_000;
/// Length of a ticket's name: 32 alphanumerics, about 190 bits.
const TICKET_LEN: usize = 32;

/// Why a ticket could not be issued or redeemed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// [`MAX_TICKETS`] are waiting.
    #[error("too many tickets are waiting for their streams; retry in a few seconds")]
    Full,
    /// The shared store cannot be reached.
    #[error("the ticket store is unavailable: {0}")]
    Unavailable(String),
}

/// Where tickets wait for their stream.
pub trait TicketStore: Send + Sync + 'static {
    /// Stores `grant` under a new ticket, good for the returned time.
    fn issue(&self, grant: Grant) -> BoxFuture<'_, Result<(String, Duration), TicketError>>;

    /// Takes the grant of `ticket` (once): `None` if unknown, used or expired.
    fn redeem<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<Option<Grant>, TicketError>>;
}

/// A new ticket's name, and how long it may wait: never longer than its token.
fn new_ticket(grant: &Grant) -> (String, Duration) {
    let ttl = grant
        .expires
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .min(TICKET_TTL);
    let name: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(TICKET_LEN)
        .map(char::from)
        .collect();
    (name, ttl)
}

/// Tickets in this process, bounded by [`MAX_TICKETS`].
#[derive(Default)]
pub struct Tickets {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, (Instant, Grant)>,
    /// Names by deadline, oldest first (a redeemed name stays until its deadline).
    order: VecDeque<(Instant, String)>,
}

impl Inner {
    fn purge(&mut self, now: Instant) {
        while let Some((deadline, _)) = self.order.front() {
            if *deadline > now {
                break;
            }
            if let Some((_, name)) = self.order.pop_front() {
                self.by_name.remove(&name);
            }
        }
    }
}

impl Tickets {
    /// An empty store.
    pub fn new() -> Tickets {
        Tickets::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TicketStore for Tickets {
    fn issue(&self, grant: Grant) -> BoxFuture<'_, Result<(String, Duration), TicketError>> {
        ready(
            self.issue_at(grant, Instant::now())
                .ok_or(TicketError::Full),
        )
        .boxed()
    }

    fn redeem<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<Option<Grant>, TicketError>> {
        ready(Ok(self.redeem_at(ticket, Instant::now()))).boxed()
    }
}

impl Tickets {
    /// [`TicketStore::issue`] at `now`.
    pub(super) fn issue_at(&self, grant: Grant, now: Instant) -> Option<(String, Duration)> {
        let (name, ttl) = new_ticket(&grant);
        let mut inner = self.lock();
        inner.purge(now);
        if inner.order.len() >= MAX_TICKETS {
            return None;
        }
        inner.by_name.insert(name.clone(), (now + ttl, grant));
        inner.order.push_back((now + ttl, name.clone()));
        Some((name, ttl))
    }

    /// [`TicketStore::redeem`] at `now`.
    pub(super) fn redeem_at(&self, ticket: &str, now: Instant) -> Option<Grant> {
        let mut inner = self.lock();
        inner.purge(now);
        let (deadline, grant) = inner.by_name.remove(ticket)?;
        (deadline > now).then_some(grant)
    }
}

/// Tickets in Redis, shared by every node on it (see the module doc). Redis expires
/// each after its time (at most 30 s); what waits is bounded by the rate tickets are
/// issued at, times 30 s.
pub struct RedisTickets {
    conn: redis::aio::ConnectionManager,
}

#[derive(Serialize, Deserialize)]
struct StoredGrant {
    topics: String,
    exp: u64,
    sub: Option<String>,
}

impl RedisTickets {
    /// Tickets kept through `conn`.
    pub fn new(conn: redis::aio::ConnectionManager) -> RedisTickets {
        RedisTickets { conn }
    }
}

fn key(name: &str) -> String {
    format!("switchyard:ticket:{name}")
}

fn unavailable(e: impl std::fmt::Display) -> TicketError {
    TicketError::Unavailable(e.to_string())
}

impl TicketStore for RedisTickets {
    fn issue(&self, grant: Grant) -> BoxFuture<'_, Result<(String, Duration), TicketError>> {
        async move {
            let (name, ttl) = new_ticket(&grant);
            let stored = StoredGrant {
                topics: grant.topics.to_string(),
                exp: grant
                    .expires
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                sub: grant.sub,
            };
            let body = serde_json::to_string(&stored).map_err(unavailable)?;
            let mut conn = self.conn.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(key(&name))
                .arg(body)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            set.map(|_| (name, ttl))
                .ok_or_else(|| unavailable("a ticket name was taken twice"))
        }
        .boxed()
    }

    fn redeem<'a>(&'a self, ticket: &'a str) -> BoxFuture<'a, Result<Option<Grant>, TicketError>> {
        async move {
            if ticket.len() != TICKET_LEN || !ticket.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Ok(None);
            }
            let mut conn = self.conn.clone();
            let body: Option<String> = redis::cmd("GETDEL")
                .arg(key(ticket))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let Some(body) = body else { return Ok(None) };
            let stored: StoredGrant = serde_json::from_str(&body).map_err(unavailable)?;
            Ok(Some(Grant {
                topics: Patterns::parse_list(&stored.topics).map_err(unavailable)?,
                expires: UNIX_EPOCH + Duration::from_secs(stored.exp),
                sub: stored.sub,
            }))
        }
        .boxed()
    }
}
