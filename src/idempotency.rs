//! Idempotent publishing: `POST /v1/events` with an `Idempotency-Key` header. A retry
//! with the same key and the same body within the window answers the ids of the first
//! publish (`201`, `Idempotent-Replayed: true`) and stores nothing; the same key with
//! another body is `409 idempotency_key_reused`; the same key while its first request is
//! still being stored is `409 idempotency_key_in_use` (`Retry-After: 1`).
//!
//! A key moves through two states: *pending* (its request is being stored; held at most
//! [`PENDING_TTL`], so a node that dies mid-publish does not hold the key for the whole
//! window) and *done* (the ids, kept for `SWITCHYARD_IDEMPOTENCY_WINDOW`). Each holds the
//! SHA-256 of the request body, so a reused key is told from a retry.
//!
//! The store is a trait so that several nodes can share one, as the tickets do:
//! [`RedisKeys`] keeps a key as `SET switchyard:idem:<sha256 of the key> <state> NX PX
//! <ttl>`, so a retry that a load balancer sends to another node finds what the first
//! node stored. [`MemoryKeys`] keeps them in this process, bounded by
//! [`MAX_IDEMPOTENCY_KEYS`] and [`MAX_IDEMPOTENCY_BYTES`]: past either, the oldest key
//! is forgotten first (counted in `idempotency_evicted`), since refusing publishes would
//! be worse than a duplicate of a very old retry.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, ready};
use sha2::{Digest, Sha256};

/// Most keys kept in this process (the in-memory store).
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// Most bytes of keys and ids kept in this process (the in-memory store).
pub const MAX_IDEMPOTENCY_BYTES: usize = 32 << 20;
/// Longest `Idempotency-Key` (as Stripe's).
pub const MAX_KEY_LEN: usize = 255;
/// Longest a key stays pending: a publish that takes longer (it cannot: the request
/// time-out is shorter) or whose node died is then forgotten, and a retry publishes.
pub const PENDING_TTL: Duration = Duration::from_secs(30);

/// A checked `Idempotency-Key` and the fingerprint of its request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The key as sent.
    pub key: String,
    /// SHA-256 of the request body.
    pub body: [u8; 32],
}

impl Claim {
    /// A claim for `key` (1 to [`MAX_KEY_LEN`] visible ASCII characters) on `body`, or why
    /// the key cannot be one.
    pub fn new(key: &[u8], body: &[u8]) -> Result<Claim, String> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters, got {}",
                key.len()
            ));
        }
        if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(
                "Idempotency-Key must be visible ASCII characters (no spaces or control characters); a UUID is a good choice"
                    .into(),
            );
        }
        Ok(Claim {
            key: String::from_utf8_lossy(key).into_owned(),
            body: Sha256::digest(body).into(),
        })
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is new: it is now pending for this request, which publishes, then calls
    /// [`IdempotencyStore::complete`] (or [`IdempotencyStore::abandon`] if it failed).
    New,
    /// A retry of a publish that was stored: its ids.
    Replay(Vec<String>),
    /// The key was used with another body.
    Reused,
    /// The key's first request is still being stored.
    InUse,
}

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency store is unavailable: {0}")]
pub struct Unavailable(pub String);

/// Where idempotency keys are kept.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `claim.key` for a request with `claim.body`, or says what it was used for.
    fn begin<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Begin, Unavailable>>;

    /// Records the ids the claimed request published, for the window.
    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<(), Unavailable>>;

    /// Forgets a pending claim whose request stored nothing.
    fn abandon<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, ()>;

    /// Keys forgotten before their window ended, to stay within the bounds.
    fn evicted(&self) -> u64 {
        0
    }
}

#[derive(Debug, Clone)]
enum State {
    Pending,
    Done(Vec<String>),
}

#[derive(Debug)]
struct Entry {
    body: [u8; 32],
    state: State,
    deadline: Instant,
    /// Distinguishes this entry from a later one under the same key in `order`.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, Entry>,
    /// Keys in the order they were stored (oldest first), with their generation.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next_generation: u64,
    evicted: u64,
}

/// Keys in this process (see the module doc for the bounds).
pub struct MemoryKeys {
    window: Duration,
    inner: Mutex<Inner>,
}

fn entry_bytes(key: &str, state: &State) -> usize {
    let ids = match state {
        State::Pending => 0,
        State::Done(ids) => ids.iter().map(|id| id.len() + 24).sum(),
    };
    key.len() * 2 + 96 + ids
}

impl Inner {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.keys.remove(key) {
            self.bytes = self.bytes.saturating_sub(entry_bytes(key, &entry.state));
        }
    }

    /// Drops expired keys from the front, and the oldest ones while over a bound. Stale
    /// `order` entries (a key removed or stored again) are skipped.
    fn purge(&mut self, now: Instant) {
        while let Some((key, generation)) = self.order.front() {
            let current = self.keys.get(key).filter(|e| e.generation == *generation);
            let over = self.keys.len() > MAX_IDEMPOTENCY_KEYS || self.bytes > MAX_IDEMPOTENCY_BYTES;
            match current {
                None => {}
                Some(entry) if entry.deadline <= now => {}
                Some(_) if over => self.evicted += 1,
                Some(_) => break,
            }
            if let Some((key, generation)) = self.order.pop_front()
                && self
                    .keys
                    .get(&key)
                    .is_some_and(|e| e.generation == generation)
            {
                self.remove(&key);
            }
        }
    }

    fn insert(&mut self, key: &str, body: [u8; 32], state: State, deadline: Instant) {
        self.remove(key);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.bytes += entry_bytes(key, &state);
        self.keys.insert(
            key.to_owned(),
            Entry {
                body,
                state,
                deadline,
                generation,
            },
        );
        self.order.push_back((key.to_owned(), generation));
    }
}

impl MemoryKeys {
    /// An empty store that keeps a published key's ids for `window`.
    pub fn new(window: Duration) -> MemoryKeys {
        MemoryKeys {
            window,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`IdempotencyStore::begin`] at `now`.
    pub fn begin_at(&self, claim: &Claim, now: Instant) -> Begin {
        let mut inner = self.lock();
        inner.purge(now);
        match inner.keys.get(&claim.key) {
            Some(entry) if entry.deadline > now => {
                if entry.body != claim.body {
                    Begin::Reused
                } else {
                    match &entry.state {
                        State::Pending => Begin::InUse,
                        State::Done(ids) => Begin::Replay(ids.clone()),
                    }
                }
            }
            _ => {
                inner.insert(&claim.key, claim.body, State::Pending, now + PENDING_TTL);
                inner.purge(now);
                Begin::New
            }
        }
    }

    /// [`IdempotencyStore::complete`] at `now`.
    pub fn complete_at(&self, claim: &Claim, ids: &[String], now: Instant) {
        let mut inner = self.lock();
        inner.insert(
            &claim.key,
            claim.body,
            State::Done(ids.to_vec()),
            now + self.window,
        );
        inner.purge(now);
    }

    /// Keys held now, and their bytes (for tests and status).
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.keys.len(), inner.bytes)
    }
}

impl IdempotencyStore for MemoryKeys {
    fn begin<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Begin, Unavailable>> {
        ready(Ok(self.begin_at(claim, Instant::now()))).boxed()
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        self.complete_at(claim, ids, Instant::now());
        ready(Ok(())).boxed()
    }

    fn abandon<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, ()> {
        let mut inner = self.lock();
        if inner
            .keys
            .get(&claim.key)
            .is_some_and(|e| matches!(e.state, State::Pending) && e.body == claim.body)
        {
            inner.remove(&claim.key);
        }
        ready(()).boxed()
    }

    fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

/// Keys in Redis, shared by every node on it (see the module doc). Redis expires each
/// after its window; what is kept is bounded by the publish rate times the window
/// (about 100 bytes and the ids per key).
pub struct RedisKeys {
    conn: redis::aio::ConnectionManager,
    window: Duration,
}

impl RedisKeys {
    /// Keys kept through `conn` for `window`.
    pub fn new(conn: redis::aio::ConnectionManager, window: Duration) -> RedisKeys {
        RedisKeys { conn, window }
    }
}

/// The Redis key of a claim: a hash of the key, so any key is a short, safe name.
fn redis_key(claim: &Claim) -> String {
    format!(
        "switchyard:idem:{}",
        hex::encode(Sha256::digest(claim.key.as_bytes()))
    )
}

fn unavailable(e: impl std::fmt::Display) -> Unavailable {
    Unavailable(e.to_string())
}

/// A stored state: `pending <body hash>` or `done <body hash> <id>,<id>,…` (ids have no
/// spaces or commas).
fn parse_stored(stored: &str, claim: &Claim) -> Begin {
    let mut parts = stored.splitn(3, ' ');
    let (state, body) = (parts.next(), parts.next());
    if body != Some(hex::encode(claim.body).as_str()) {
        return Begin::Reused;
    }
    match (state, parts.next()) {
        (Some("done"), Some(ids)) => Begin::Replay(ids.split(',').map(str::to_owned).collect()),
        _ => Begin::InUse,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl IdempotencyStore for RedisKeys {
    fn begin<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<Begin, Unavailable>> {
        async move {
            let mut conn = self.conn.clone();
            let key = redis_key(claim);
            // SET … NX GET: claims the key, or returns what holds it, in one step.
            let held: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(format!("pending {}", hex::encode(claim.body)))
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(millis(PENDING_TTL))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(match held {
                None => Begin::New,
                Some(stored) => parse_stored(&stored, claim),
            })
        }
        .boxed()
    }

    fn complete<'a>(
        &'a self,
        claim: &'a Claim,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        async move {
            let mut conn = self.conn.clone();
            let _: () = redis::cmd("SET")
                .arg(redis_key(claim))
                .arg(format!(
                    "done {} {}",
                    hex::encode(claim.body),
                    ids.join(",")
                ))
                .arg("PX")
                .arg(millis(self.window))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(())
        }
        .boxed()
    }

    fn abandon<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, ()> {
        async move {
            let mut conn = self.conn.clone();
            // Only our own pending claim: compare and delete in one step.
            let script = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            );
            let result: Result<i64, _> = script
                .key(redis_key(claim))
                .arg(format!("pending {}", hex::encode(claim.body)))
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not release an idempotency key; it expires by itself");
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(key: &str, body: &str) -> Claim {
        Claim::new(key.as_bytes(), body.as_bytes()).expect("claim")
    }

    #[test]
    fn keys_are_checked() {
        assert!(Claim::new(b"", b"{}").is_err());
        assert!(Claim::new(&[b'a'; 256], b"{}").is_err());
        assert!(Claim::new(b"has space", b"{}").is_err());
        assert!(Claim::new("é".as_bytes(), b"{}").is_err());
        assert!(Claim::new(b"0b5e1c1a-3a5e-4d7f-9c1e-2f6a7b8c9d0e", b"{}").is_ok());
    }

    #[test]
    fn a_retry_replays_another_body_is_reused_and_the_window_ends() {
        let keys = MemoryKeys::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a = claim("k", "{\"a\":1}");
        assert_eq!(keys.begin_at(&a, t0), Begin::New);
        assert_eq!(keys.begin_at(&a, t0), Begin::InUse, "while pending");
        assert_eq!(keys.begin_at(&claim("k", "{}"), t0), Begin::Reused);
        let ids = vec!["e-1".to_owned(), "e-2".to_owned()];
        keys.complete_at(&a, &ids, t0);
        assert_eq!(keys.begin_at(&a, t0), Begin::Replay(ids.clone()));
        assert_eq!(keys.begin_at(&claim("k", "{}"), t0), Begin::Reused);
        let later = t0 + Duration::from_secs(61);
        assert_eq!(keys.begin_at(&a, later), Begin::New, "after the window");
    }

    #[test]
    fn a_pending_key_is_released_on_failure_and_expires_by_itself() {
        let keys = MemoryKeys::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a = claim("k", "{}");
        assert_eq!(keys.begin_at(&a, t0), Begin::New);
        futures_util::FutureExt::now_or_never(keys.abandon(&a)).expect("ready");
        assert_eq!(keys.begin_at(&a, t0), Begin::New, "released");
        assert_eq!(keys.begin_at(&a, t0 + PENDING_TTL), Begin::New, "expired");
    }

    #[test]
    fn the_store_is_bounded_in_keys_and_the_oldest_go_first() {
        let keys = MemoryKeys::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..MAX_IDEMPOTENCY_KEYS + 10 {
            let c = claim(&format!("k{i}"), "{}");
            assert_eq!(keys.begin_at(&c, t0), Begin::New);
            keys.complete_at(&c, &[format!("e-{i}")], t0);
        }
        let (held, bytes) = keys.usage();
        assert_eq!(held, MAX_IDEMPOTENCY_KEYS);
        assert!(bytes <= MAX_IDEMPOTENCY_BYTES);
        assert_eq!(keys.evicted(), 10);
        assert_eq!(
            keys.begin_at(&claim("k0", "{}"), t0),
            Begin::New,
            "oldest gone"
        );
        let newest = claim(&format!("k{}", MAX_IDEMPOTENCY_KEYS + 9), "{}");
        assert!(matches!(keys.begin_at(&newest, t0), Begin::Replay(_)));
    }

    #[test]
    fn the_store_is_bounded_in_bytes() {
        let keys = MemoryKeys::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        // A batch of 1000 ids per key: the byte bound is reached long before the count.
        let ids: Vec<String> = (0..1000).map(|i| format!("abcdef-{i:08}")).collect();
        for i in 0..2000 {
            let c = claim(&format!("k{i}"), "[]");
            keys.begin_at(&c, t0);
            keys.complete_at(&c, &ids, t0);
        }
        let (held, bytes) = keys.usage();
        assert!(bytes <= MAX_IDEMPOTENCY_BYTES, "{bytes}");
        assert!(held < 2000 && held > 100, "{held}");
    }

    #[test]
    fn stored_states_parse() {
        let a = claim("k", "{}");
        let h = hex::encode(a.body);
        assert_eq!(parse_stored(&format!("pending {h}"), &a), Begin::InUse);
        assert_eq!(
            parse_stored(&format!("done {h} e-1,e-2"), &a),
            Begin::Replay(vec!["e-1".into(), "e-2".into()])
        );
        assert_eq!(parse_stored("done 00 e-1", &a), Begin::Reused);
    }
}
