//! One-time tickets (`POST /v1/tickets`): a verified [`Grant`] behind a random name,
//! good for one stream open within [`TICKET_TTL`], so native `EventSource` and
//! `WebSocket` (which cannot send headers) never put a long-lived token in a URL.
//!
//! The store is a trait so that several nodes can share one: with Redis (the log issue)
//! a ticket is `SET ticket:<name> <grant> NX PX 30000` and is redeemed with `GETDEL`,
//! so any node redeems, exactly once, what any node issued. [`Tickets`] keeps them in
//! this process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use rand::distr::Alphanumeric;

use super::Grant;

/// How long a ticket may wait for its stream.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most tickets waiting at once (about 300 bytes each: at most ~30 MB). Past it,
/// `POST /v1/tickets` answers `429` until some are used or expire.
pub const MAX_TICKETS: usize = 100_000;
/// Length of a ticket's name: 32 alphanumerics, about 190 bits.
const TICKET_LEN: usize = 32;

/// Where tickets wait for their stream.
pub trait TicketStore: Send + Sync + 'static {
    /// Stores `grant` under a new ticket, good for the returned time; `None` when the
    /// store is full.
    fn issue(&self, grant: Grant) -> Option<(String, Duration)>;

    /// Takes the grant of `ticket` (once): `None` if unknown, used or expired.
    fn redeem(&self, ticket: &str) -> Option<Grant>;
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
    fn issue(&self, grant: Grant) -> Option<(String, Duration)> {
        self.issue_at(grant, Instant::now())
    }

    fn redeem(&self, ticket: &str) -> Option<Grant> {
        self.redeem_at(ticket, Instant::now())
    }
}

impl Tickets {
    /// [`TicketStore::issue`] at `now`.
    pub(super) fn issue_at(&self, grant: Grant, now: Instant) -> Option<(String, Duration)> {
        // Never good for longer than the token it stands for.
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
