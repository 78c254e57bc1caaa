//! Rate limits: token buckets, each a named limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Reports accepted per second across all clients (the bucket also holds this many).
pub const REPORTS_PER_SECOND: f64 = 50.0;

/// The state of one token bucket, refilled lazily when it is looked at. The bucket's
/// owner keeps its rate and size ([`TokenBucket`], [`ClientBuckets`], or a WebSocket
/// session's own, which needs no lock).
#[derive(Debug, Clone, Copy)]
pub struct Refill {
    tokens: f64,
    last: Instant,
}

impl Refill {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> Refill {
        Refill {
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Tokens now, refilled at `rate` a second up to `burst`.
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) -> f64 {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        self.tokens
    }

    /// Takes a token if there is one.
    pub fn admit(&mut self, rate: f64, burst: f64) -> bool {
        if self.refill(rate, burst, Instant::now()) >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket: at most `rate` admissions a second, and a burst of as many.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    bucket: Mutex<Refill>,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens, refilled at `rate` a second.
    pub fn new(rate: f64) -> TokenBucket {
        TokenBucket {
            rate,
            bucket: Mutex::new(Refill::full(rate)),
        }
    }

    /// Takes a token if there is one.
    pub fn admit(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.admit(self.rate, self.rate)
    }
}

/// File descriptors kept out of the connection budget: [`RESERVE_CONNECTIONS`],
/// [`REFUSALS_LINGERING`], and 64 for the listener, log segments, the Redis connections
/// and the process's own files.
pub const FD_RESERVE: u64 = 256;
/// Most refused connections kept open at once to read their request before closing
/// (so the refusal is not lost to a reset); beyond it a refused socket is closed at once.
pub const REFUSALS_LINGERING: usize = 128;
/// Connections accepted beyond the budget for health, status, metrics and publishing
/// only (any other request on one is answered `503 connection_limit`).
pub const RESERVE_CONNECTIONS: u32 = 64;

/// Why an accepted socket was refused at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// Every connection of the budget (and of the reserve) is in use.
    Full,
    /// This client holds its maximum of open connections.
    PerClient,
    /// This client opened its most new connections for now.
    Rate,
}

/// Which part of the budget a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A connection of the budget: any request.
    Normal,
    /// A reserve connection: health, status, metrics and publishing only.
    Reserve,
}

/// How many of something (connections, streams) each client address holds now, at most
/// `max` each (0 = no limit). An address has an entry only while it holds one, so the
/// table is bounded by what it counts.
#[derive(Debug)]
pub struct ClientCounts {
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl ClientCounts {
    /// At most `max` for each address (0 = no limit).
    pub fn new(max: u32) -> ClientCounts {
        ClientCounts {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The most one address may hold (0 = unlimited).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Counts one more for `ip`, unless it holds `max` already.
    pub fn take(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back one of `ip`'s (taken with [`ClientCounts::take`]).
    pub fn release(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Addresses holding something now.
    pub fn clients(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Every accepted socket counts here, whatever it is doing (a stream, a poll, an API
/// request, an idle keep-alive, a request head still arriving): at most `max` at once,
/// plus [`RESERVE_CONNECTIONS`] for health and publishing; from one address at most
/// `per_client` at once and `rate` new ones a second (in bursts of twice that).
/// Addresses of trusted proxies are not limited per client (their clients share them).
#[derive(Debug)]
pub struct ConnectionBudget {
    max: u32,
    open: AtomicU32,
    reserve_open: AtomicU32,
    clients: ClientCounts,
    rate: Option<ClientBuckets>,
}

/// One accepted socket's place in the [`ConnectionBudget`]; dropping it gives it back.
#[derive(Debug)]
pub struct ConnSlot {
    budget: Arc<ConnectionBudget>,
    /// The address counted per client (none for trusted proxies).
    client: Option<IpAddr>,
    kind: SlotKind,
}

impl ConnSlot {
    /// Which part of the budget it holds.
    pub fn kind(&self) -> SlotKind {
        self.kind
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        match self.kind {
            SlotKind::Normal => self.budget.open.fetch_sub(1, Ordering::AcqRel),
            SlotKind::Reserve => self.budget.reserve_open.fetch_sub(1, Ordering::AcqRel),
        };
        if let Some(ip) = self.client {
            self.budget.clients.release(ip);
        }
    }
}

/// Adds one to `counter` unless it is at `max`.
fn bounded_inc(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

impl ConnectionBudget {
    /// A budget of `max` connections, `per_client` from one address at once (0 = no
    /// limit) and `rate` new ones from one address a second (0 = no limit).
    pub fn new(max: u32, per_client: u32, rate: u32) -> ConnectionBudget {
        ConnectionBudget {
            max,
            open: AtomicU32::new(0),
            reserve_open: AtomicU32::new(0),
            clients: ClientCounts::new(per_client),
            rate: (rate > 0).then(|| ClientBuckets::new(f64::from(rate), 2.0 * f64::from(rate))),
        }
    }

    /// The most connections of the budget (the reserve comes on top).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The most connections from one address (0 = unlimited).
    pub fn per_client(&self) -> u32 {
        self.clients.max()
    }

    /// Connections open now, the reserve's included.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire) + self.reserve_open.load(Ordering::Acquire)
    }

    /// Takes a place for a socket from `peer` (`limited`: counted per client), or says
    /// why not.
    pub fn take(self: &Arc<Self>, peer: IpAddr, limited: bool) -> Result<ConnSlot, ConnRefusal> {
        if limited && self.rate.as_ref().is_some_and(|rate| !rate.admit(peer)) {
            return Err(ConnRefusal::Rate);
        }
        let client = limited.then_some(peer);
        if let Some(ip) = client
            && !self.clients.take(ip)
        {
            return Err(ConnRefusal::PerClient);
        }
        let kind = if bounded_inc(&self.open, self.max) {
            SlotKind::Normal
        } else if bounded_inc(&self.reserve_open, RESERVE_CONNECTIONS) {
            SlotKind::Reserve
        } else {
            if let Some(ip) = client {
                self.clients.release(ip);
            }
            return Err(ConnRefusal::Full);
        };
        Ok(ConnSlot {
            budget: self.clone(),
            client,
            kind,
        })
    }
}

/// The connection budget for an open-file limit: `configured`, but never more than the
/// limit less [`FD_RESERVE`] (at least 1).
pub fn clamp_to_open_files(configured: u32, open_file_limit: u64) -> u32 {
    let room = open_file_limit.saturating_sub(FD_RESERVE).max(1);
    u32::try_from(room).map_or(configured, |room| configured.min(room))
}

/// Most wrong publish keys one client may try in a burst.
pub const KEY_FAILURE_BURST: u32 = 10;

/// Most client addresses a [`ClientBuckets`] tracks; past it, entries whose bucket has
/// refilled are dropped, and clients still beyond it share one overflow bucket.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;

/// A token bucket per client address: at most `rate` a second each, in bursts of
/// `burst`. Bounded by [`MAX_TRACKED_CLIENTS`].
#[derive(Debug)]
pub struct ClientBuckets {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Refill>>,
    overflow: TokenBucket,
}

impl ClientBuckets {
    /// Buckets of `burst` tokens, refilled at `rate` a second.
    pub fn new(rate: f64, burst: f64) -> ClientBuckets {
        ClientBuckets {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
            overflow: TokenBucket::new(rate.max(1.0)),
        }
    }

    fn with<R>(&self, ip: IpAddr, f: impl FnOnce(&mut Refill, f64, f64) -> R) -> Option<R> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        if !map.contains_key(&ip) && map.len() >= MAX_TRACKED_CLIENTS {
            let now = Instant::now();
            map.retain(|_, bucket| bucket.refill(rate, burst, now) < burst);
            if map.len() >= MAX_TRACKED_CLIENTS {
                return None;
            }
        }
        let bucket = map.entry(ip).or_insert_with(|| Refill::full(burst));
        Some(f(bucket, rate, burst))
    }

    /// Takes a token of `ip`'s bucket if it has one.
    pub fn admit(&self, ip: IpAddr) -> bool {
        self.with(ip, |bucket, rate, burst| bucket.admit(rate, burst))
            .unwrap_or_else(|| self.overflow.admit())
    }

    /// Whether `ip`'s bucket is empty now (nothing is taken).
    pub fn exhausted(&self, ip: IpAddr) -> bool {
        self.with(ip, |bucket, rate, burst| {
            bucket.refill(rate, burst, Instant::now()) < 1.0
        })
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_client_gets_its_share_and_the_reserve_comes_last() {
        let budget = Arc::new(ConnectionBudget::new(3, 2, 0));
        let a1 = budget.take(A, true).expect("a1");
        let _a2 = budget.take(A, true).expect("a2");
        assert_eq!(
            budget.take(A, true).expect_err("refused"),
            ConnRefusal::PerClient
        );
        // Not counted per client (a trusted proxy): only the budget applies.
        let p = budget.take(A, false).expect("proxy");
        assert_eq!(p.kind(), SlotKind::Normal);
        let r = budget.take(B, true).expect("reserve");
        assert_eq!(r.kind(), SlotKind::Reserve);
        assert_eq!(budget.open(), 4);
        drop(a1);
        let again = budget.take(A, true).expect("a again");
        assert_eq!(again.kind(), SlotKind::Normal);
        drop((again, p, r, _a2));
        assert_eq!(budget.open(), 0);
        assert_eq!(
            budget.clients.clients(),
            0,
            "entries leave with their last connection"
        );
    }

    #[test]
    fn a_full_budget_refuses_without_keeping_a_client_count() {
        let budget = Arc::new(ConnectionBudget::new(1, 0, 0));
        let _held: Vec<_> = (0..=RESERVE_CONNECTIONS)
            .map(|_| budget.take(A, true).expect("budget or reserve"))
            .collect();
        assert_eq!(
            budget.take(B, true).expect_err("refused"),
            ConnRefusal::Full
        );
        let limited = Arc::new(ConnectionBudget::new(0, 5, 0));
        let _r: Vec<_> = (0..RESERVE_CONNECTIONS)
            .map(|_| limited.take(B, false).expect("reserve"))
            .collect();
        assert_eq!(
            limited.take(A, true).expect_err("refused"),
            ConnRefusal::Full
        );
        assert_eq!(limited.clients.clients(), 0);
    }

    #[test]
    fn a_client_opening_connections_too_fast_is_refused_and_others_are_not() {
        // 1 a second, a burst of 2: the third at once is refused.
        let budget = Arc::new(ConnectionBudget::new(100, 0, 1));
        let held: Vec<_> = (0..2)
            .map(|_| budget.take(A, true).expect("burst"))
            .collect();
        assert_eq!(
            budget.take(A, true).expect_err("too fast"),
            ConnRefusal::Rate
        );
        assert!(
            budget.take(A, false).is_ok(),
            "a trusted proxy is not limited"
        );
        assert!(
            budget.take(B, true).is_ok(),
            "another client is not affected"
        );
        drop(held);
        assert_eq!(
            budget
                .take(A, true)
                .expect_err("closing does not give the rate back"),
            ConnRefusal::Rate
        );
    }

    #[test]
    fn each_client_has_its_own_bucket() {
        let buckets = ClientBuckets::new(0.001, 3.0);
        for _ in 0..3 {
            assert!(buckets.admit(A));
        }
        assert!(!buckets.admit(A), "A used its burst");
        assert!(buckets.exhausted(A));
        assert!(!buckets.exhausted(B), "B is untouched");
        assert!(buckets.admit(B));
    }

    #[test]
    fn the_budget_stays_below_the_open_file_limit() {
        assert_eq!(
            clamp_to_open_files(100_000, 20_000),
            20_000 - FD_RESERVE as u32
        );
        assert_eq!(clamp_to_open_files(500, 20_000), 500);
        assert_eq!(clamp_to_open_files(500, 100), 1);
        assert_eq!(clamp_to_open_files(500, u64::MAX), 500);
    }
}
