//! The log shared by every node on one Redis (`SWITCHYARD_REDIS_URL`, SPEC §10).
//!
//! ## In Redis
//!
//! ```text
//! switchyard:log     a stream: one entry per event, id 0-<seq>, field e = {"t","k","d","ts"}
//! switchyard:epoch   the log's epoch (SET NX by the first node; gone after a flush)
//! switchyard:seq     the last sequence number handed out (INCRBY)
//! ```
//!
//! **Appends** run one Lua script (`APPEND`): it checks the epoch, takes the next
//! sequence numbers with `INCRBY` and `XADD`s each event with the explicit id `0-<seq>`
//! and `MAXLEN ~ SWITCHYARD_RETAIN`. One script is atomic, so every node's events get one
//! order and gapless numbers: a cursor means the same on every node. Appends from many
//! publishers share one multiplexed connection, so they are pipelined (many scripts in
//! flight on one socket, no round trip each). `201` is answered once Redis has stored the
//! events and this node's reader has taken them in.
//!
//! **One reader per node** (`XREAD BLOCK` on a connection of its own) takes every new
//! entry, encodes it once, and hands it to the node's in-memory copy ([`MemoryLog`]),
//! which serves every read and wakes the fan-out exactly as on one node. At start the
//! reader loads what Redis retains with `XRANGE` (the catch-up), in batches.
//!
//! **Redis unreachable**: appends answer `503 log_unavailable` (nothing is acknowledged
//! that Redis did not store), `/readyz` answers `503`, and the node ends its streams with
//! `reconnect` (`log_unavailable`) by closing its copy for a new one with the same events;
//! clients come back from their cursors (elsewhere, or here, where they wait). Once Redis
//! is back the reader continues after the last entry it took, nothing lost. **Redis flushed or replaced** (the
//! epoch key is gone or differs): the node takes the new epoch, closes its in-memory copy
//! so that every stream ends, and its clients reconnect with cursors of the old epoch and
//! get `reset` (`unknown_epoch`). The same happens if this node falls so far behind that
//! Redis trimmed entries it never read (the clients then get `cursor_expired`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::memory::{MemoryConfig, MemoryLog, encode, new_epoch};
use super::{AppendError, CATCHUP_BATCH, Head, Log, LogCounters, LogStats, ReadError};
use crate::event::{Event, NewEvent};

const STREAM: &str = "switchyard:log";
const EPOCH: &str = "switchyard:epoch";
const SEQ: &str = "switchyard:seq";
/// How long one `XREAD` blocks; the epoch is checked between two.
const BLOCK: Duration = Duration::from_secs(2);
/// A publish waits this long for this node's reader to take in what Redis stored.
const READ_BACK: Duration = Duration::from_secs(5);

/// Checks the epoch, numbers the events, and adds them. KEYS: stream, epoch, seq.
/// ARGV: epoch, maxlen, then one payload per event. Returns the first seq.
const APPEND: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('EPOCH the log was flushed or replaced')
end
local n = #ARGV - 2
local last = redis.call('INCRBY', KEYS[3], n)
local first = last - n + 1
for i = 1, n do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '0-' .. (first + i - 1), 'e', ARGV[i + 2])
end
return first
";

#[derive(Serialize, Deserialize)]
struct Entry {
    t: String,
    k: String,
    d: serde_json::Value,
    ts: String,
}

/// The Redis log (see the module doc).
pub struct RedisLog {
    inner: Arc<Inner>,
}

struct Current {
    memory: Arc<MemoryLog>,
    /// `Log::epoch` hands out a `&str` that outlives a change of epoch: each epoch this
    /// process serves is leaked once (6 bytes per flush of Redis).
    epoch: &'static str,
}

struct Inner {
    appends: ConnectionManager,
    script: redis::Script,
    retain: MemoryConfig,
    /// The in-memory copy of the current epoch; replaced (and the old one closed) when
    /// the epoch changes.
    current: RwLock<Current>,
    counters: LogCounters,
    reachable: AtomicBool,
    /// Set by `close` (the drain): no new copy is started after it.
    closing: AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> AppendError {
    AppendError::Unavailable(format!("Redis: {e}"))
}

impl RedisLog {
    /// Connects, takes (or sets) the epoch, loads what Redis retains and starts the
    /// reader. `Err` with one line when Redis cannot be reached now.
    pub async fn open(url: &str, retain: MemoryConfig) -> Result<RedisLog, String> {
        let name = |e: &dyn std::fmt::Display| format!("SWITCHYARD_REDIS_URL={}: {e}", redact(url));
        let client = Client::open(url).map_err(|e| name(&e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut appends = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(|e| name(&format!("cannot reach Redis ({e})")))?;
        let epoch = take_epoch(&mut appends).await.map_err(|e| name(&e))?;
        let counters = LogCounters::default();
        let memory = Arc::new(
            MemoryLog::with_epoch(epoch.clone(), 0, retain.clone()).with_counters(counters.clone()),
        );
        let head = load(&mut appends, &memory).await.map_err(|e| name(&e))?;
        let memory = if memory.head() == head {
            memory
        } else {
            Arc::new(
                MemoryLog::with_epoch(epoch.clone(), head, retain.clone())
                    .with_counters(counters.clone()),
            )
        };
        let reader = ConnectionManager::new_with_config(
            client,
            config.set_response_timeout(Some(BLOCK + Duration::from_secs(2))),
        )
        .await
        .map_err(|e| name(&format!("cannot reach Redis ({e})")))?;
        let inner = Arc::new(Inner {
            appends,
            script: redis::Script::new(APPEND),
            retain,
            current: RwLock::new(Current {
                memory,
                epoch: Box::leak(epoch.into_boxed_str()),
            }),
            counters,
            reachable: AtomicBool::new(true),
            closing: AtomicBool::new(false),
        });
        tokio::spawn(read_loop(inner.clone(), reader));
        Ok(RedisLog { inner })
    }
}

impl RedisLog {
    /// A connection to the log's Redis (multiplexed; shared, e.g. by the ticket store).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.appends.clone()
    }
}

impl Inner {
    fn memory(&self) -> Arc<MemoryLog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .memory
            .clone()
    }

    /// Ends every reader of the copy and starts a new one with the same epoch and events.
    fn carry_over(&self) {
        let old = self.memory();
        let fresh = MemoryLog::with_epoch(old.epoch().to_owned(), old.head(), self.retain.clone())
            .with_counters(self.counters.clone());
        fresh.restore(old.retained());
        self.install(old.epoch().to_owned(), fresh);
    }

    /// Starts a new in-memory copy (`epoch`, from `head`) and ends every reader of the old.
    fn replace(&self, epoch: String, head: u64) {
        let fresh = MemoryLog::with_epoch(epoch.clone(), head, self.retain.clone())
            .with_counters(self.counters.clone());
        self.install(epoch, fresh);
    }

    /// Makes `fresh` the copy and closes the old one (its readers end).
    fn install(&self, epoch: String, fresh: MemoryLog) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        // The same epoch keeps its leaked name.
        let name = if current.epoch == epoch {
            current.epoch
        } else {
            Box::leak(epoch.into_boxed_str())
        };
        let old = std::mem::replace(
            &mut *current,
            Current {
                memory: Arc::new(fresh),
                epoch: name,
            },
        );
        drop(current);
        old.memory.close();
    }
}

/// Reads the epoch, setting a new one if Redis has none.
async fn take_epoch(conn: &mut ConnectionManager) -> Result<String, String> {
    let fresh = new_epoch();
    let _: Value = redis::cmd("SET")
        .arg(EPOCH)
        .arg(&fresh)
        .arg("NX")
        .query_async(conn)
        .await
        .map_err(|e| format!("cannot set the epoch ({e})"))?;
    let epoch: Option<String> = redis::cmd("GET")
        .arg(EPOCH)
        .query_async(conn)
        .await
        .map_err(|e| format!("cannot read the epoch ({e})"))?;
    epoch.ok_or_else(|| "the epoch vanished as it was set".to_owned())
}

/// Loads every retained entry into `memory` (retention applies as they come), and
/// returns the head: the last seq handed out.
async fn load(conn: &mut ConnectionManager, memory: &MemoryLog) -> Result<u64, String> {
    let mut after = 0u64;
    loop {
        let reply: Value = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(format!("(0-{after}"))
            .arg("+")
            .arg("COUNT")
            .arg(CATCHUP_BATCH)
            .query_async(conn)
            .await
            .map_err(|e| format!("cannot read the log ({e})"))?;
        let events = entries(&reply, memory.epoch());
        let Some(last) = events.last().map(|e| e.seq) else {
            break;
        };
        let now = std::time::Instant::now();
        let wall = SystemTime::now();
        memory.restore(events.into_iter().map(|e| {
            let age = wall.duration_since(e.received).unwrap_or_default();
            (now.checked_sub(age).unwrap_or(now), Arc::new(e.event))
        }));
        after = last;
    }
    let seq: Option<u64> = redis::cmd("GET")
        .arg(SEQ)
        .query_async(conn)
        .await
        .map_err(|e| format!("cannot read the log's head ({e})"))?;
    Ok(seq.unwrap_or(0).max(after))
}

struct Read {
    seq: u64,
    received: SystemTime,
    event: Event,
}

/// The events of an `XRANGE` reply (or of one stream of an `XREAD` reply), encoded once.
/// An entry that cannot be read is skipped with a warning (it was not written by
/// switchyard).
fn entries(reply: &Value, epoch: &str) -> Vec<Read> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (pair.first(), pair.get(1))
        else {
            continue;
        };
        let seq = std::str::from_utf8(id)
            .ok()
            .and_then(|id| id.strip_prefix("0-"))
            .and_then(|s| s.parse::<u64>().ok());
        let payload = fields.chunks(2).find_map(|kv| match kv {
            [Value::BulkString(k), Value::BulkString(v)] if k == b"e" => Some(v),
            _ => None,
        });
        let parsed = seq.zip(payload).and_then(|(seq, payload)| {
            let entry: Entry = serde_json::from_slice(payload).ok()?;
            let received = humantime::parse_rfc3339(&entry.ts).ok()?;
            let new = NewEvent::new(&entry.t, &entry.k, entry.d).ok()?;
            Some(Read {
                seq,
                received,
                event: encode(epoch, seq, new, received),
            })
        });
        match parsed {
            Some(read) => out.push(read),
            None => {
                tracing::warn!(id = %String::from_utf8_lossy(id), "skipped a Redis log entry switchyard cannot read")
            }
        }
    }
    out
}

/// The node's reader: `XREAD BLOCK` from the head, into the in-memory copy.
async fn read_loop(inner: Arc<Inner>, mut conn: ConnectionManager) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let memory = inner.memory();
        let head = memory.head();
        let reply: Result<Value, _> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(CATCHUP_BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(format!("0-{head}"))
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                inner.counters.errors.inc();
                if inner.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the Redis log is unreachable: publishes answer 503 and streams are told to reconnect until it is back");
                    // SPEC §10: the node tells its streams to reconnect (elsewhere, if a
                    // load balancer follows /readyz); a new copy with the same events
                    // serves those that come back here, from their cursors.
                    inner.carry_over();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Between reads (and after an outage): is it still the same log?
        let epoch: Result<Option<String>, _> =
            redis::cmd("GET").arg(EPOCH).query_async(&mut conn).await;
        let epoch = match epoch {
            Ok(epoch) => epoch,
            Err(_) => continue,
        };
        if !inner.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!("the Redis log is reachable again");
        }
        if epoch.as_deref() != Some(memory.epoch()) {
            let mut appends = inner.appends.clone();
            match take_epoch(&mut appends).await {
                Ok(new) => {
                    tracing::warn!(old = memory.epoch(), new = %new, "the Redis log was flushed or replaced: a new epoch, every client resets");
                    inner.replace(new, 0);
                }
                Err(e) => tracing::warn!(error = %e, "cannot take the new epoch of the Redis log"),
            }
            continue;
        }
        let events = match &reply {
            Value::Array(streams) => streams
                .first()
                .and_then(|s| match s {
                    Value::Array(kv) => kv.get(1),
                    _ => None,
                })
                .map(|entries_reply| entries(entries_reply, memory.epoch()))
                .unwrap_or_default(),
            _ => Vec::new(), // the block timed out
        };
        let Some(first) = events.first().map(|e| e.seq) else {
            continue;
        };
        if first != head + 1 {
            // Redis trimmed entries this node never read: its copy cannot go on.
            tracing::warn!(
                head,
                first,
                "this node fell behind the Redis log's retention; its clients reset"
            );
            inner.replace(memory.epoch().to_owned(), first - 1);
            continue;
        }
        if let Some(newest) = events.last() {
            let lag = SystemTime::now()
                .duration_since(newest.received)
                .unwrap_or_default();
            inner.counters.lag_ms.set(lag.as_millis() as i64);
        }
        let events: Vec<Arc<Event>> = events.into_iter().map(|e| Arc::new(e.event)).collect();
        memory.insert(&events);
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl Log for RedisLog {
    fn epoch(&self) -> &str {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .epoch
    }

    fn append(&self, events: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, AppendError>> {
        async move {
            let n = events.len() as u64;
            if n == 0 {
                return Ok(Vec::new());
            }
            let memory = self.inner.memory();
            let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let mut call = self.inner.script.prepare_invoke();
            call.key(STREAM).key(EPOCH).key(SEQ).arg(memory.epoch()).arg(self.inner.retain.retain);
            for new in events {
                let entry = Entry {
                    t: new.topic.as_str().to_owned(),
                    k: new.kind.to_string(),
                    d: new.data,
                    ts: ts.clone(),
                };
                call.arg(serde_json::to_vec(&entry).map_err(unavailable)?);
            }
            let mut conn = self.inner.appends.clone();
            let first: u64 = call.invoke_async(&mut conn).await.map_err(|e| {
                self.inner.counters.errors.inc();
                unavailable(e)
            })?;
            let last = first + n - 1;
            // Wait for this node's reader to take them in (encoded once, there).
            let mut head = memory
                .watch()
                .ok_or_else(|| unavailable("the log is closing"))?;
            let seen = tokio::time::timeout(READ_BACK, async {
                head.wait_for(|h| h.seq >= last).await.map(drop)
            })
            .await;
            if !matches!(seen, Ok(Ok(()))) {
                return Err(unavailable(format!(
                    "stored as {first}..{last}, but this node did not read it back within {READ_BACK:?}"
                )));
            }
            memory
                .read_after(first - 1, n as usize)
                .await
                .map_err(|e| unavailable(format!("stored, but not readable here: {e}")))
        }
        .boxed()
    }

    fn read_after(
        &self,
        pos: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, ReadError>> {
        let memory = self.inner.memory();
        async move { memory.read_after(pos, max).await }.boxed()
    }

    fn head(&self) -> u64 {
        self.inner.memory().head()
    }

    fn watch(&self) -> Option<watch::Receiver<Head>> {
        self.inner.memory().watch()
    }

    fn close(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        self.inner.memory().close();
    }

    fn stats(&self) -> LogStats {
        self.inner.memory().stats()
    }

    fn counters(&self) -> &LogCounters {
        &self.inner.counters
    }

    fn ready(&self) -> Result<(), String> {
        if self.inner.reachable.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("Redis is unreachable".into())
        }
    }
}
