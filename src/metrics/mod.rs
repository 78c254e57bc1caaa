//! Counters and gauges, shared by `/v1/status` (JSON) and `/metrics` (Prometheus text).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::LabelValueEncoder;

use crate::log::LogCounters;
use crate::protocol::{REPORT_REASONS, Transport};

mod process;
pub use process::ProcessCollector;

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

/// Label: which transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// The transport.
    pub transport: Transport,
}

/// Label: why a stream request was refused before it opened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabel {
    /// `disabled`, `per_client`, `origin`, `host`, or a token refusal (`token_required`, …).
    pub reason: RefusedReason,
}

/// Declares a label-value enum with `ALL` (every value, for status and for the counters'
/// zeroes) and `name()` (the value as in the metrics label), so the three never disagree.
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
        #[allow(non_camel_case_types)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, for status and for the counters' zeroes.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// The value's name, as in the metrics label.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }
        }
    };
}

label_values! {
    /// Why a stream request was refused.
    pub enum RefusedReason {
        /// The transport is switched off.
        disabled,
        /// Its client holds `SWITCHYARD_MAX_STREAMS_PER_CLIENT` streams (`429`).
        per_client,
        /// `Origin` not allowed.
        origin,
        /// `Host` not allowed (`SWITCHYARD_ALLOWED_HOSTS`).
        host,
        /// A private topic without a token.
        token_required,
        /// A token (or ticket) that cannot be used.
        token_invalid,
        /// An expired token.
        token_expired,
        /// A topic the token does not allow.
        topic_forbidden,
    }
}

/// Label: why a connection was refused or closed before its first request was served.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabel {
    /// See [`ClosedReason`].
    pub reason: ClosedReason,
}

label_values! {
    /// Why a connection was refused or closed before its first request was served.
    pub enum ClosedReason {
        /// The connection budget and its reserve are in use (`503 connection_limit`).
        connection_limit,
        /// Its client holds `SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT` (`429`).
        per_client,
        /// Its client opened `SWITCHYARD_NEW_CONNECTIONS_PER_CLIENT` this second (`429`).
        connect_rate,
        /// Its first request head did not arrive within `SWITCHYARD_HEAD_TIMEOUT`.
        head_timeout,
        /// A malformed, oversized or non-strict head (`400`, `431`).
        bad_head,
    }
}

/// Label: which per-client rate limit refused a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabel {
    /// See [`RateLimited`].
    pub limit: RateLimited,
}

label_values! {
    /// Which per-client rate limit refused a request (`429`).
    pub enum RateLimited {
        /// `SWITCHYARD_KEY_FAILURES_PER_MINUTE`.
        publish_key,
        /// `SWITCHYARD_REPORTS_PER_CLIENT`.
        reports,
        /// `SWITCHYARD_WS_OPS_PER_SECOND` (the WebSocket is closed 1008).
        ws_ops,
    }
}

/// Label set of a client-reported fallback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabel {
    /// Transport the client left.
    pub from: String,
    /// Transport it moved to (`none` when it had nowhere to go).
    pub to: String,
    /// Why (one of [`REPORT_REASONS`]).
    pub reason: String,
}

/// Label: the build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// The crate's version.
    pub version: String,
}

/// Histograms of durations, in seconds.
type Durations = Family<TransportLabel, Histogram, fn() -> Histogram>;

fn stream_durations() -> Histogram {
    // 0.1 s to ~7 h, × 4 a bucket: a poll, a page view, an editor's day.
    Histogram::new(exponential_buckets(0.1, 4.0, 10))
}

/// Every figure the server exposes.
pub struct Metrics {
    registry: Registry,
    /// Process metrics (`process_*`), unprefixed as in every client library.
    process: Registry,
    /// Streams open now, per transport (polls count while they wait).
    pub open: Family<TransportLabel, Gauge>,
    /// Streams opened since start, per transport.
    pub opened: Family<TransportLabel, Counter>,
    /// Events written to subscribers, per transport.
    pub delivered: Family<TransportLabel, Counter>,
    /// Stream requests refused before opening.
    pub refused: Family<RefusedLabel, Counter>,
    /// Connections refused or closed before their first request was served.
    pub closed: Family<ClosedLabel, Counter>,
    /// Requests refused by a per-client rate limit.
    pub rate_limited: Family<RateLimitedLabel, Counter>,
    /// Connections open now (every accepted socket).
    pub connections: Gauge,
    /// The connection budget in force (after the open-file clamp).
    pub connections_max: Gauge,
    /// WebSocket requests whose `Upgrade` header an intermediary stripped.
    pub upgrade_stripped: Counter,
    /// Fallbacks reported by browser clients.
    pub fallbacks: Family<FallbackLabel, Counter>,
    /// Reports dropped by the rate limit.
    pub reports_dropped: Counter,
    /// Publishes answered from an idempotency key (nothing stored).
    pub idempotent_replays: Counter,
    /// Times the direct fan-out found a parked stream's socket full and handed the
    /// stream back to its task ([`crate::fanout`]).
    pub handed_back: Counter,
    /// From an append to the direct fan-out's first write of it, in seconds (one
    /// observation per append that a parked stream received).
    pub first_write: Histogram,
    /// How long streams stayed open, per transport, in seconds.
    pub stream_duration: Durations,
    /// Events the log retains now (set at each scrape).
    pub log_retained: Gauge,
    /// Bytes the log retains now (set at each scrape).
    pub log_retained_bytes: Gauge,
    /// The Redis log's lag, in seconds (set at each scrape from the log's `lag_ms`).
    pub log_lag: Gauge<f64, AtomicU64>,
    /// The log's own counters (published, resets, lagged).
    pub log: LogCounters,
}

impl Metrics {
    /// Creates the registry and registers every metric.
    pub fn new(log: LogCounters) -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            open: Family::default(),
            opened: Family::default(),
            delivered: Family::default(),
            refused: Family::default(),
            closed: Family::default(),
            rate_limited: Family::default(),
            connections: Gauge::default(),
            connections_max: Gauge::default(),
            upgrade_stripped: Counter::default(),
            fallbacks: Family::default(),
            reports_dropped: Counter::default(),
            idempotent_replays: Counter::default(),
            handed_back: Counter::default(),
            // 0.1 ms to ~3.3 s, × 2 a bucket.
            first_write: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            stream_duration: Family::new_with_constructor(stream_durations),
            log_retained: Gauge::default(),
            log_retained_bytes: Gauge::default(),
            log_lag: Gauge::default(),
            log,
            registry: Registry::default(),
            process: Registry::default(),
        };
        // Every label set exists from the start, at zero: alert rules need no
        // `or vector(0)`.
        for reason in RefusedReason::ALL {
            let _ = m.refused.get_or_create(&RefusedLabel { reason });
        }
        for reason in ClosedReason::ALL {
            let _ = m.closed.get_or_create(&ClosedLabel { reason });
        }
        for limit in RateLimited::ALL {
            let _ = m.rate_limited.get_or_create(&RateLimitedLabel { limit });
        }
        for transport in Transport::ALL {
            let label = TransportLabel { transport };
            let _ = m.open.get_or_create(&label);
            let _ = m.opened.get_or_create(&label);
            let _ = m.delivered.get_or_create(&label);
            let _ = m.stream_duration.get_or_create(&label);
            for to in Transport::ALL
                .iter()
                .filter(|&&to| to != transport)
                .map(|to| to.name())
                .chain(["none"])
            {
                for reason in REPORT_REASONS {
                    let _ = m.fallbacks.get_or_create(&FallbackLabel {
                        from: transport.name().into(),
                        to: to.into(),
                        reason: (*reason).into(),
                    });
                }
            }
        }
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "The running build (always 1)", build);
        registry.register("open_streams", "Streams open now", m.open.clone());
        registry.register(
            "streams_opened",
            "Streams opened since start",
            m.opened.clone(),
        );
        registry.register(
            "delivered_events",
            "Events written to subscribers",
            m.delivered.clone(),
        );
        registry.register(
            "refused_streams",
            "Stream requests refused before opening",
            m.refused.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused or closed before their first request was served, by reason",
            m.closed.clone(),
        );
        registry.register(
            "rate_limited_requests",
            "Requests refused (429) by a per-client rate limit, by limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open now: every accepted socket",
            m.connections.clone(),
        );
        registry.register(
            "max_connections",
            "The connection budget in force (SWITCHYARD_MAX_CONNECTIONS, lowered to the open-file limit less its reserve)",
            m.connections_max.clone(),
        );
        registry.register(
            "upgrade_stripped",
            "WebSocket requests whose Upgrade header an intermediary stripped",
            m.upgrade_stripped.clone(),
        );
        registry.register(
            "client_fallbacks",
            "Transport fallbacks reported by browser clients",
            m.fallbacks.clone(),
        );
        registry.register(
            "reports_dropped",
            "Client reports dropped by the rate limit",
            m.reports_dropped.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Publishes answered with the ids of an earlier one (same Idempotency-Key and body)",
            m.idempotent_replays.clone(),
        );
        registry.register(
            "published_events",
            "Events appended to the log",
            m.log.published.clone(),
        );
        registry.register("resets", "Resets sent to subscribers", m.log.resets.clone());
        registry.register(
            "log_catchups",
            "Times a stream that was live fell behind the live ring and caught up from the log (catch-ups, not subscribers)",
            m.log.lagged.clone(),
        );
        registry.register(
            "log_retained_events",
            "Events the log retains now",
            m.log_retained.clone(),
        );
        registry.register(
            "log_retained_bytes",
            "Bytes the log retains now (each event's JSON, SSE and WebSocket encodings)",
            m.log_retained_bytes.clone(),
        );
        registry.register(
            "publish_to_first_write_seconds",
            "From an append to the direct fan-out's first write of it to a parked stream",
            m.first_write.clone(),
        );
        registry.register(
            "stream_duration_seconds",
            "How long streams stayed open, by transport",
            m.stream_duration.clone(),
        );
        registry.register(
            "log_errors",
            "Appends and reads the log backend could not carry out (disk or Redis errors)",
            m.log.errors.clone(),
        );
        registry.register(
            "log_lag_seconds",
            "Redis log: how far behind this node's copy was when it last took events in",
            m.log_lag.clone(),
        );
        registry.register(
            "fanout_handbacks",
            "Times the direct fan-out found a parked stream's socket full (or failed) and handed the stream back to its task",
            m.handed_back.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector::new()));
        Metrics {
            registry,
            process,
            ..m
        }
    }

    /// Counts a stream request refused before it opened.
    pub fn refuse(&self, reason: RefusedReason) {
        self.refused.get_or_create(&RefusedLabel { reason }).inc();
    }

    /// Counts a connection refused or closed before its first request was served.
    pub fn close(&self, reason: ClosedReason) {
        self.closed.get_or_create(&ClosedLabel { reason }).inc();
    }

    /// Counts a request refused by a per-client rate limit.
    pub fn rate_limit(&self, limit: RateLimited) {
        self.rate_limited
            .get_or_create(&RateLimitedLabel { limit })
            .inc();
    }

    /// Every metric, switchyard's then the process's: in OpenMetrics text (`openmetrics`,
    /// what Prometheus asks for), else in the Prometheus text format 0.0.4 (what `curl`
    /// and `promtool check metrics` read). The content type goes with it.
    pub fn encode(&self, openmetrics: bool) -> Result<(String, &'static str), std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let mut out = String::new();
        if openmetrics {
            text::encode_registry(&mut out, &self.registry)?;
            text::encode_registry(&mut out, &self.process)?;
            text::encode_eof(&mut out)?;
            Ok((
                out,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ))
        } else {
            prometheus_text::encode(&mut out, &self.registry)?;
            prometheus_text::encode(&mut out, &self.process)?;
            Ok((out, prometheus_text::CONTENT_TYPE))
        }
    }
}
