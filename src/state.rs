//! `AppState`: what every handler and stream shares, and the one publish path.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, RedisTickets, TicketStore};
use crate::config::{AllowedHosts, Config};
use crate::error::ApiError;
use crate::event::{Event, NewEvent};
use crate::fanout::{self, Output};
use crate::headers::{Authority, Peer, authority};
use crate::idempotency::{IdempotencyStore, MemoryKeys, RedisKeys};
use crate::limits::{
    ClientBuckets, ClientCounts, ConnectionBudget, FD_RESERVE, KEY_FAILURE_BURST,
    REPORTS_PER_SECOND, TokenBucket, clamp_to_open_files,
};
use crate::log::file::{FileConfig, FileLog};
use crate::log::memory::{MemoryConfig, MemoryLog};
use crate::log::redis::RedisLog;
use crate::log::{AppendError, Log, SharedLog};
use crate::metrics::RefusedReason;
use crate::metrics::{Metrics, TransportLabel};
use crate::protocol::{TRANSPORTS, Transport};

/// Everything the handlers share. Built once; handlers get `Arc<AppState>`.
pub struct AppState {
    /// The configuration the server started with.
    pub config: Config,
    /// The event log.
    pub log: SharedLog,
    /// Who may follow which topics: token verification, public topics, tickets.
    pub access: Access,
    /// The host names requests may name (`SWITCHYARD_ALLOWED_HOSTS`, or the listen
    /// address's).
    pub hosts: AllowedHosts,
    /// At most one refusal log line a second (each refusal is counted regardless).
    refusal_log: TokenBucket,
    /// Counters and gauges.
    pub metrics: Metrics,
    /// Cancelled when the server starts draining; hyper connections watch it. Streams
    /// and long polls learn of the drain from their subscription ([`crate::log::Log::close`]), so no
    /// shared signal is polled per delivery.
    pub shutdown: CancellationToken,
    /// WebSocket sessions (spawned by the upgrade, invisible to axum's graceful shutdown).
    pub tasks: TaskTracker,
    /// When the server started.
    pub started: Instant,
    /// Open streams per client (`SWITCHYARD_MAX_STREAMS_PER_CLIENT`).
    pub client_streams: ClientCounts,
    /// Idempotency keys of publishes (in this process, or in Redis with the Redis log).
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Writes live events straight to the sockets of caught-up SSE and WebSocket streams.
    pub fanout: Arc<fanout::Fanout>,
    /// Per transport (by [`Transport::index`]): what its parked sockets get, if any.
    outputs: Vec<Option<Arc<Output>>>,
    /// The bucket of client reports (`POST /v1/reports`).
    pub reports: TokenBucket,
    /// Every accepted socket's place: the connection cap, its reserve, per client.
    pub budget: Arc<ConnectionBudget>,
    /// Wrong publish keys per client (`SWITCHYARD_KEY_FAILURES_PER_MINUTE`).
    pub key_failures: ClientBuckets,
    /// Reports per client (`SWITCHYARD_REPORTS_PER_CLIENT`).
    pub client_reports: ClientBuckets,
}

/// The retention limits of a configuration.
fn retention(config: &Config) -> MemoryConfig {
    MemoryConfig {
        retain: config.retain,
        retain_age: config.retain_age.get(),
        retain_bytes: config.retain_bytes.get(),
    }
}

/// The log in this process: memory, or the data dir.
fn local_log(config: &Config) -> Result<SharedLog, String> {
    let retain = retention(config);
    Ok(match &config.data_dir {
        None => Arc::new(MemoryLog::new(retain)),
        Some(dir) => {
            let (log, found) = FileLog::open(FileConfig {
                dir: dir.clone(),
                fsync: config.fsync,
                retain,
                segment_bytes: crate::log::file::SEGMENT_BYTES,
            })?;
            tracing::info!(
                dir = %dir.display(),
                epoch = log.epoch(),
                head = log.head(),
                events_read = found.events,
                segments = found.segments,
                torn_bytes_cut = found.cut,
                fsync = if config.fsync { "batch" } else { "off" },
                "durable log opened"
            );
            Arc::new(log)
        }
    })
}

/// Stores that several nodes share (with the Redis log).
pub struct Shared {
    /// One-time stream tickets.
    pub tickets: Arc<dyn TicketStore>,
    /// Idempotency keys of publishes.
    pub idempotency: Arc<dyn IdempotencyStore>,
}

impl AppState {
    /// Builds the state for a configuration.
    ///
    /// `Err` with a one-line reason for a configuration that cannot be served (a token
    /// key that cannot be read).
    pub async fn open(config: Config) -> Result<Arc<AppState>, String> {
        let mut shared = None;
        let log = match &config.redis_url {
            Some(url) => {
                let log = RedisLog::open(url, retention(&config)).await?;
                shared = Some(Shared {
                    tickets: Arc::new(RedisTickets::new(log.connection())),
                    idempotency: Arc::new(RedisKeys::new(
                        log.connection(),
                        config.idempotency_window.get(),
                    )),
                });
                tracing::info!(
                    epoch = log.epoch(),
                    head = log.head(),
                    retained = log.stats().retained,
                    "Redis log opened"
                );
                Arc::new(log) as SharedLog
            }
            None => local_log(&config)?,
        };
        AppState::with_log(config, log, shared)
    }

    /// Builds the state for a configuration whose log is in this process (memory or a
    /// data dir): see [`AppState::open`] for every backend.
    pub fn new(config: Config) -> Result<Arc<AppState>, String> {
        let log = local_log(&config)?;
        AppState::with_log(config, log, None)
    }

    /// The state over an opened log, with stores shared by several nodes (else stores
    /// in this process).
    pub fn with_log(
        config: Config,
        log: SharedLog,
        shared: Option<Shared>,
    ) -> Result<Arc<AppState>, String> {
        let mut access = Access::from_config(&config)?;
        let idempotency = match shared {
            Some(shared) => {
                access.tickets = shared.tickets;
                shared.idempotency
            }
            None => Arc::new(MemoryKeys::new(config.idempotency_window.get())),
        };
        let metrics = Metrics::new(log.counters().clone());
        let fanout = Arc::new(fanout::Fanout::new(
            log.clone(),
            metrics.handed_back.clone(),
            metrics.first_write.clone(),
            config.fanout_linger.get(),
        ));
        let outputs = TRANSPORTS
            .iter()
            .map(|spec| {
                let label = TransportLabel {
                    transport: spec.transport,
                };
                spec.frame.map(|frame| {
                    Arc::new(Output {
                        frame,
                        delivered: metrics.delivered.get_or_create(&label).clone(),
                    })
                })
            })
            .collect();
        // The budget never reaches the open-file limit: what a refusal, the log and the
        // reserve need stays free.
        let open_files =
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft);
        let max = clamp_to_open_files(config.max_connections, open_files);
        if max < config.max_connections {
            tracing::warn!(
                open_file_limit = open_files,
                configured = config.max_connections,
                max,
                "SWITCHYARD_MAX_CONNECTIONS lowered to the open-file limit less {FD_RESERVE} (raise ulimit -n for more)"
            );
        }
        metrics.connections_max.set(i64::from(max));
        let budget = Arc::new(ConnectionBudget::new(
            max,
            config.max_connections_per_client,
            config.new_connections_per_client,
        ));
        let key_failures = ClientBuckets::new(
            f64::from(config.key_failures_per_minute) / 60.0,
            f64::from(config.key_failures_per_minute.min(KEY_FAILURE_BURST)),
        );
        let per_client = f64::from(config.reports_per_client);
        let client_streams = ClientCounts::new(config.max_streams_per_client);
        Ok(Arc::new(AppState {
            key_failures,
            client_reports: ClientBuckets::new(per_client, per_client),
            budget,
            access,
            hosts: config
                .allowed_hosts
                .clone()
                .unwrap_or_else(|| AllowedHosts::for_addr(config.addr)),
            refusal_log: TokenBucket::new(1.0),
            fanout,
            outputs,
            config,
            log,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            client_streams,
            idempotency,
            reports: TokenBucket::new(REPORTS_PER_SECOND),
        }))
    }
}

impl AppState {
    /// Streams open now, every transport's together (the `open_streams` gauges; every
    /// stream also holds a connection of [`AppState::budget`]).
    pub fn open_streams(&self) -> u32 {
        let open: i64 = Transport::ALL
            .iter()
            .map(|&transport| {
                self.metrics
                    .open
                    .get_or_create(&TransportLabel { transport })
                    .get()
            })
            .sum();
        u32::try_from(open).unwrap_or(0)
    }

    /// What the parked sockets of `transport` get from the fan-out; `None` for a
    /// transport that does not park (long polling).
    pub fn output(&self, transport: Transport) -> Option<Arc<Output>> {
        self.outputs.get(transport.index()).cloned().flatten()
    }

    /// The authority of a request, if its host is one this server answers to; a `421`
    /// The log backend's name: `memory` or `data_dir`.
    pub fn log_backend(&self) -> &'static str {
        if self.config.redis_url.is_some() {
            "redis"
        } else if self.config.data_dir.is_some() {
            "data_dir"
        } else {
            "memory"
        }
    }

    /// Whether a request's token cookie counts (see [`crate::headers::cookies_count`]).
    pub fn cookies_count(&self, peer: Peer, headers: &axum::http::HeaderMap) -> bool {
        let authority = authority(&self.config.trusted_proxies, peer, headers);
        crate::headers::cookies_count(&self.config.allowed_origins, &authority, headers)
    }

    /// otherwise (counted, and logged with what was compared).
    pub fn check_host(
        &self,
        peer: Peer,
        headers: &axum::http::HeaderMap,
    ) -> Result<Authority, ApiError> {
        let request = authority(&self.config.trusted_proxies, peer, headers);
        match request.host.as_deref() {
            // A request without a host (HTTP/1.0) names no other site either.
            None => Ok(request),
            Some(host) if self.hosts.allows(host) => Ok(request),
            Some(host) => {
                let message = format!(
                    "this server does not answer to host {:?} (from {}); allowed: {} (SWITCHYARD_ALLOWED_HOSTS)",
                    host.chars().take(100).collect::<String>(),
                    request.source,
                    match &self.hosts {
                        AllowedHosts::Any => "any".to_owned(),
                        AllowedHosts::List(list) => list.join(", "),
                    }
                );
                self.refuse(RefusedReason::host, || message.clone());
                Err(ApiError::HostNotAllowed(message))
            }
        }
    }

    /// Whether a refusal may be logged now (at most one line a second in all).
    pub fn refusal_log_admits(&self) -> bool {
        self.refusal_log.admit()
    }

    /// Counts a refused request; logs why, at most once a second.
    pub fn refuse(&self, reason: RefusedReason, detail: impl FnOnce() -> String) {
        self.metrics.refuse(reason);
        if self.refusal_log.admit() {
            tracing::warn!(reason = reason.name(), "refused: {}", detail());
        }
    }

    /// Appends events to the log: the one publish path (the API's `POST /v1/events`
    /// and the demo). `503 log_unavailable` when the log did not store them.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Arc<Event>>, ApiError> {
        self.log.append(events).await.map_err(|e| match e {
            AppendError::Unavailable(cause) => {
                tracing::warn!(%cause, "publish refused: the log is unavailable");
                ApiError::Unavailable {
                    code: "log_unavailable",
                    message: "the event log is unavailable; nothing was published, retry later"
                        .into(),
                    enabled: Vec::new(),
                }
            }
        })
    }
}
