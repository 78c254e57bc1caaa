//! Configuration from the environment (and the same names as flags), with `--help`.
//!
//! Every setting is a `SWITCHYARD_*` variable (SPEC §7). An invalid value stops the start
//! with one line naming the variable, the value and what is allowed
//! ([`Config::from_env`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::event::Patterns;
use crate::protocol::Transport;

/// Longest heartbeat interval accepted.
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);
/// Most SWITCHYARD_FANOUT_LINGER may be: a wait longer than this is no longer live.
const MAX_FANOUT_LINGER: Duration = Duration::from_millis(100);
/// Shortest heartbeat interval accepted (a faster one would only burn CPU).
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
/// Longest long-poll wait accepted (stay below common proxy read timeouts of 60 s+).
const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(300);
/// Most events the log may be configured to keep.
const MAX_RETAIN: usize = 10_000_000;
/// Most padding bytes at the start of an SSE stream.
const MAX_SSE_PADDING: usize = 65_536;
/// Most events in one long-poll answer.
const MAX_POLL_BATCH: usize = 100_000;

/// switchyard — one event source, three transports (WebSocket, Server-Sent Events, long
/// polling), negotiated per client.
///
/// Every option is read from its environment variable; a flag of the same name overrides
/// it. Logs are filtered with RUST_LOG (default: info).
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard", version, about, long_about = None, max_term_width = 100)]
pub struct Config {
    /// Listen address.
    #[arg(long, env = "SWITCHYARD_ADDR", default_value = "127.0.0.1:3000", value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Enabled transports, in preference order: a comma-separated subset of the
    /// transports (the help lists them). Empty or "none" switches live updates off.
    #[arg(long, env = "SWITCHYARD_TRANSPORTS", default_value_t = Transports::all(), value_parser = parse_transports, help = TRANSPORTS_HELP.as_str())]
    pub transports: Transports,

    /// Heartbeat interval on idle streams (e.g. 15s, 500ms).
    #[arg(long, env = "SWITCHYARD_HEARTBEAT", default_value = "15s", value_parser = parse_heartbeat)]
    pub heartbeat: HumanDuration,

    /// Longest a long-poll waits for an event (also the cap for ?timeout=).
    #[arg(long, env = "SWITCHYARD_POLL_TIMEOUT", default_value = "25s", value_parser = parse_poll_timeout)]
    pub poll_timeout: HumanDuration,

    /// Most events the log keeps.
    #[arg(long, env = "SWITCHYARD_RETAIN", default_value = "10000", value_parser = parse_retain)]
    pub retain: usize,

    /// Oldest event the log keeps (e.g. 1h, 30m).
    #[arg(long, env = "SWITCHYARD_RETAIN_AGE", default_value = "1h", value_parser = parse_retain_age)]
    pub retain_age: HumanDuration,

    /// Most bytes the log keeps (e.g. 256MiB, 1GiB): each event's encodings (JSON, SSE and
    /// WebSocket frames), as held in memory.
    #[arg(long, env = "SWITCHYARD_RETAIN_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub retain_bytes: ByteSize,

    /// A durable log in this folder (SPEC §10): epoch, retention and cursors survive a
    /// restart or a crash. Unset: the log lives in memory.
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// A Redis (Streams) log shared by every node that names it (SPEC §10), e.g.
    /// redis://127.0.0.1:6379/0. Not with SWITCHYARD_DATA_DIR.
    #[arg(long, env = "SWITCHYARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// With a data dir: `batch` (fsync each batch of appends before answering 201, with
    /// group commit: a 201 survives a power cut) or `off` (a 201 survives a crash of the
    /// process, not of the machine).
    #[arg(long, env = "SWITCHYARD_FSYNC", default_value = "batch", value_parser = parse_fsync)]
    pub fsync: bool,

    /// HMAC secret (32 bytes or more) that verifies HS256 subscriber tokens (SPEC §9).
    #[arg(long, env = "SWITCHYARD_TOKEN_SECRET", hide_env_values = true, value_parser = parse_token_secret)]
    pub token_secret: Option<String>,

    /// PEM public key (RSA, P-256 or Ed25519) that verifies RS256 / ES256 / EdDSA
    /// subscriber tokens.
    #[arg(long, env = "SWITCHYARD_TOKEN_PUBLIC_KEY_FILE")]
    pub token_public_key_file: Option<PathBuf>,

    /// When set, a token's `iss` must equal it.
    #[arg(long, env = "SWITCHYARD_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// When set, a token's `aud` must name it.
    #[arg(long, env = "SWITCHYARD_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Topic patterns anyone may follow without a token, comma-separated (projects,
    /// projects/*, or * for every topic). Unset: every topic when no token key is set,
    /// none when one is.
    #[arg(long, env = "SWITCHYARD_PUBLIC_TOPICS", value_parser = Patterns::parse_list)]
    pub public_topics: Option<Patterns>,

    /// Bearer key for POST /v1/events. Unset is allowed only on a loopback address.
    #[arg(long, env = "SWITCHYARD_PUBLISH_KEY", hide_env_values = true, value_parser = parse_key)]
    pub publish_key: Option<String>,

    /// Origins allowed to open WebSockets and to read SSE/polls cross-origin: a
    /// comma-separated list of origins (https://app.example.com), "*" for any, or
    /// "same" (default) for same-origin only.
    // This text is also `--help`'s, where a bare URL reads best.
    #[allow(rustdoc::bare_urls)]
    #[arg(long, env = "SWITCHYARD_ALLOWED_ORIGINS", default_value = "same", value_parser = parse_origins)]
    pub allowed_origins: AllowedOrigins,

    /// Proxies whose Forwarded / X-Forwarded-Host / X-Forwarded-Proto headers are
    /// believed: comma-separated addresses or CIDRs ("" for none).
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", default_value = "127.0.0.0/8,::1/128", value_parser = parse_cidrs)]
    pub trusted_proxies: TrustedProxies,

    /// Host names this server answers to (the Host header without its port),
    /// comma-separated, or "*" for any. Unset: the listen address's names (on loopback
    /// localhost, 127.0.0.1 and ::1; any on 0.0.0.0 or ::). Others get 421.
    #[arg(long, env = "SWITCHYARD_ALLOWED_HOSTS", value_parser = parse_hosts)]
    pub allowed_hosts: Option<AllowedHosts>,

    /// Cap on open connections: every accepted socket (streams, polls, API requests,
    /// idle keep-alives, heads still arriving). Lowered at start to the open-file limit
    /// less 256; past it a new connection gets 503 connection_limit, and 64 more are kept
    /// for /healthz, /readyz, /v1/status, /metrics and publishing.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value = "100000", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_connections: u32,

    /// Most open connections from one client address (0 = no limit); past it 429
    /// too_many_connections. Trusted proxies (SWITCHYARD_TRUSTED_PROXIES) are not limited.
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT", default_value = "1000", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub max_connections_per_client: u32,

    /// New connections one client address may open per second (in bursts of twice as
    /// many; 0 = no limit); past it 429 connection_rate. Trusted proxies are not limited.
    #[arg(long, env = "SWITCHYARD_NEW_CONNECTIONS_PER_CLIENT", default_value = "100", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub new_connections_per_client: u32,

    /// Most open streams (SSE, WebSocket, waiting polls) of one client (0 = no limit);
    /// past it 429 too_many_streams. The client is the peer, or the address a trusted
    /// proxy forwards in X-Forwarded-For; a trusted proxy's own requests are not limited.
    #[arg(long, env = "SWITCHYARD_MAX_STREAMS_PER_CLIENT", default_value = "500", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub max_streams_per_client: u32,

    /// How long a publish with an Idempotency-Key is remembered: a retry with the same
    /// key and body within it returns the first ids and stores nothing (1s - 24h).
    #[arg(long, env = "SWITCHYARD_IDEMPOTENCY_WINDOW", default_value = "10m", value_parser = parse_idempotency_window)]
    pub idempotency_window: HumanDuration,

    /// Wrong publish keys one client may try per minute (in bursts of up to 10); past it
    /// 429 with Retry-After, the key not even checked.
    #[arg(long, env = "SWITCHYARD_KEY_FAILURES_PER_MINUTE", default_value = "30", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub key_failures_per_minute: u32,

    /// Client reports (POST /v1/reports) one client may send per second (the same
    /// burst); all clients together stay at 50 a second.
    #[arg(long, env = "SWITCHYARD_REPORTS_PER_CLIENT", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub reports_per_client: u32,

    /// Client frames (subscribe, unsubscribe, auth, pings…) one WebSocket may send per
    /// second (the same burst); past it an error frame and close 1008.
    #[arg(long, env = "SWITCHYARD_WS_OPS_PER_SECOND", default_value = "50", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub ws_ops_per_second: u32,

    /// Longest a new connection may take to send its whole first request head; then it
    /// is closed (408 if it had sent part of one).
    #[arg(long, env = "SWITCHYARD_HEAD_TIMEOUT", default_value = "10s", value_parser = parse_connection_timeout)]
    pub head_timeout: HumanDuration,

    /// Longest a kept-alive connection may wait for (and take to send) its next request
    /// head; then it is closed.
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_connection_timeout)]
    pub idle_timeout: HumanDuration,

    /// Longest a non-stream request may take, its body included (publish, reports,
    /// tickets, status); then 408 request_timeout.
    #[arg(long, env = "SWITCHYARD_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_connection_timeout)]
    pub request_timeout: HumanDuration,

    /// Serve the demo page and the browser client from this directory instead of the
    /// copies embedded in the binary (unset: embedded). A relative path is looked up in
    /// the working directory, then next to the crate's sources.
    #[arg(long, env = "SWITCHYARD_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Bytes of comment padding at the start of an SSE stream, for proxies that hold the
    /// first bytes back (0 = none).
    #[arg(long, env = "SWITCHYARD_SSE_PADDING", default_value = "2048", value_parser = parse_padding)]
    pub sse_padding: usize,

    /// Most events in one long-poll answer.
    #[arg(long, env = "SWITCHYARD_POLL_BATCH", default_value = "1000", value_parser = parse_poll_batch)]
    pub poll_batch: usize,

    /// Send every write at once (TCP_NODELAY): on, the lowest latency. off lets the
    /// kernel hold a small write back while the client has not acknowledged the previous
    /// one (Nagle's algorithm, nginx's default on long responses): a busy fan-out then
    /// carries several events per packet at a fraction of the CPU per delivery, and an
    /// event may wait up to one round trip (more against a client that delays its ACKs).
    #[arg(long, env = "SWITCHYARD_TCP_NODELAY", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub tcp_nodelay: bool,

    /// Longest an event waits in a busy fan-out for more, so that several leave in one
    /// write to each socket (0 = never wait). Busy: events come faster than one per
    /// linger, and writing one to every parked stream takes about as long as the time
    /// between them; an idle or lightly loaded server never waits.
    #[arg(long, env = "SWITCHYARD_FANOUT_LINGER", default_value = "10ms", value_parser = parse_fanout_linger)]
    pub fanout_linger: HumanDuration,

    /// The demo app's routes and page: on or off. Unset: on on a loopback address, off
    /// on any other (the demo has no real accounts). With no token key, the demo makes
    /// one of its own at start and keeps notifications/* private with it.
    #[arg(long, env = "SWITCHYARD_DEMO", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub demo: Option<bool>,
}

/// A size in bytes; prints in the largest unit that divides it (`256MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (n, unit) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
            .into_iter()
            .find(|(_, m)| self.0 >= *m && self.0.is_multiple_of(*m))
            .map_or((self.0, "B"), |(u, m)| (self.0 / m, u));
        write!(f, "{n}{unit}")
    }
}

/// A duration that prints the way it was given (`15s`), for `--help` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// Enabled transports in preference order; never contains duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transports(pub Vec<Transport>);

/// The `--help` line of `SWITCHYARD_TRANSPORTS`, naming every transport of the table.
static TRANSPORTS_HELP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "Enabled transports, in preference order: a comma-separated subset of {}. Empty or \"none\" switches live updates off",
        Transport::names()
    )
});

impl std::fmt::Display for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|t| t.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl Transports {
    /// Every transport, in the default preference order.
    pub fn all() -> Transports {
        Transports(Transport::ALL.to_vec())
    }

    /// Whether `t` is enabled.
    pub fn enabled(&self, t: Transport) -> bool {
        self.0.contains(&t)
    }
}

/// Proxies whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Whether `peer` is one of them.
    pub fn contains(&self, peer: std::net::IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&peer))
    }
}

/// Host names the server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedHosts {
    /// Any host.
    Any,
    /// These names (lower-case, no port; IPv6 without brackets).
    List(Vec<String>),
}

impl AllowedHosts {
    /// The default for a listen address: its names on loopback, any on an unspecified
    /// address, else the address itself.
    pub fn for_addr(addr: SocketAddr) -> AllowedHosts {
        let ip = addr.ip();
        if ip.is_unspecified() {
            AllowedHosts::Any
        } else if ip.is_loopback() {
            AllowedHosts::List(vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                ip.to_string(),
            ])
        } else {
            AllowedHosts::List(vec![ip.to_string()])
        }
    }

    /// Whether `host` (a name without port) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        match self {
            AllowedHosts::Any => true,
            AllowedHosts::List(list) => list.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }
}

fn parse_cidrs(s: &str) -> Result<TrustedProxies, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let net = part
            .parse::<ipnet::IpNet>()
            .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("{part:?} is not an address or a CIDR (10.0.0.0/8, ::1/128)"))?;
        out.push(net);
    }
    Ok(TrustedProxies(out))
}

fn parse_hosts(s: &str) -> Result<AllowedHosts, String> {
    if s.trim() == "*" {
        return Ok(AllowedHosts::Any);
    }
    let mut out = Vec::new();
    for host in s.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.contains([':', '/']) && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "{host:?} must be a host name without port or scheme (app.example.com)"
            ));
        }
        out.push(host);
    }
    if out.is_empty() {
        return Err("list at least one host name, or \"*\" for any".into());
    }
    Ok(AllowedHosts::List(out))
}

/// Who may connect cross-origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Only pages served by this server: the `Origin`'s scheme and host name are the
    /// request's (its port is not compared; proxies drop it).
    SameOrigin,
    /// Any origin.
    Any,
    /// These origins exactly (`scheme://host[:port]`, lower-case).
    List(Vec<String>),
}

impl Config {
    /// Whether the demo is served: `SWITCHYARD_DEMO` when set, else only on a loopback
    /// address (its editors have no passwords).
    pub fn demo_on(&self) -> bool {
        self.demo.unwrap_or(self.addr.ip().is_loopback())
    }

    /// Reads the configuration from the process environment and arguments.
    ///
    /// On an invalid value prints one line naming the variable, the value and what is
    /// allowed, and exits with status 2; `--help` and `--version` print and exit 0.
    pub fn from_env() -> Config {
        match Config::try_parse() {
            Ok(config) => config,
            Err(err) => match one_line_error(&err) {
                Some(line) => {
                    eprintln!("switchyard: {line}");
                    std::process::exit(2);
                }
                None => err.exit(),
            },
        }
    }

    /// The configuration with every default, ignoring the environment. For tests and
    /// embedding; change fields after.
    pub fn defaults() -> Config {
        // Parsing the defaults of a derive cannot fail; tests cover it.
        let mut cmd = <Config as clap::CommandFactory>::command();
        for arg in cmd
            .get_arguments()
            .map(|a| a.get_id().clone())
            .collect::<Vec<_>>()
        {
            cmd = cmd.mut_arg(arg, |a| a.env(None::<&str>));
        }
        let matches = cmd
            .try_get_matches_from(["switchyard"])
            .unwrap_or_else(|e| panic!("defaults must parse: {e}"));
        <Config as clap::FromArgMatches>::from_arg_matches(&matches)
            .unwrap_or_else(|e| panic!("defaults must parse: {e}"))
    }
}

/// Turns clap's multi-line "invalid value" error into
/// `invalid SWITCHYARD_X="value": what is allowed`.
fn one_line_error(err: &clap::Error) -> Option<String> {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let arg = match err.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s.clone(),
        _ => return None,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    // "--heartbeat <HEARTBEAT>" -> the argument whose long name is "heartbeat".
    let long = arg.trim_start_matches("--").split([' ', '=']).next()?;
    let cmd = <Config as clap::CommandFactory>::command();
    let def = cmd.get_arguments().find(|a| a.get_long() == Some(long))?;
    let name = def
        .get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("--{long}"));
    let reason = std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_else(|| {
            let possible: Vec<String> = def
                .get_possible_values()
                .iter()
                .map(|p| p.get_name().to_owned())
                .collect();
            format!("expected one of {}", possible.join(", "))
        });
    let shown = if def.is_hide_env_values_set() {
        "<hidden>".to_owned()
    } else {
        value
    };
    Some(format!("invalid {name}={shown:?}: {reason}"))
}

/// Shortest HMAC secret accepted (RFC 7518 §3.2: a key of the hash's size).
const MIN_TOKEN_SECRET: usize = 32;

fn parse_token_secret(s: &str) -> Result<String, String> {
    if s.len() < MIN_TOKEN_SECRET {
        return Err(format!(
            "the secret is {} bytes; HS256 needs at least {MIN_TOKEN_SECRET} (e.g. openssl rand -hex 32)",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:3000 or [::1]:3000".to_owned())
}

fn parse_transports(s: &str) -> Result<Transports, String> {
    let mut out = Vec::new();
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(Transports(out));
    }
    for name in s.split(',').map(str::trim) {
        let t = Transport::from_name(name).ok_or_else(|| {
            format!(
                "unknown transport {name:?}; expected a comma-separated list of {} (or none)",
                Transport::names()
            )
        })?;
        if out.contains(&t) {
            return Err(format!("transport {name:?} is listed twice"));
        }
        out.push(t);
    }
    Ok(Transports(out))
}

fn parse_duration_in(s: &str, min: Duration, max: Duration) -> Result<HumanDuration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| "expected a duration such as 15s, 500ms, 2m or 1h".to_owned())?;
    if d < min || d > max {
        return Err(format!(
            "expected a duration from {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(HumanDuration(d))
}

/// Longest head, idle and request time-out accepted.
const MAX_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

fn parse_connection_timeout(s: &str) -> Result<HumanDuration, String> {
    parse_duration_in(s, Duration::from_millis(100), MAX_CONNECTION_TIMEOUT)
}

fn parse_fanout_linger(s: &str) -> Result<HumanDuration, String> {
    parse_duration_in(s, Duration::ZERO, MAX_FANOUT_LINGER)
}

fn parse_heartbeat(s: &str) -> Result<HumanDuration, String> {
    parse_duration_in(s, MIN_HEARTBEAT, MAX_HEARTBEAT)
}

fn parse_poll_timeout(s: &str) -> Result<HumanDuration, String> {
    parse_duration_in(s, Duration::from_secs(1), MAX_POLL_TIMEOUT)
}

fn parse_idempotency_window(s: &str) -> Result<HumanDuration, String> {
    parse_duration_in(s, Duration::from_secs(1), Duration::from_secs(24 * 3600))
}

fn parse_retain_age(s: &str) -> Result<HumanDuration, String> {
    parse_duration_in(
        s,
        Duration::from_secs(1),
        Duration::from_secs(30 * 24 * 3600),
    )
}

fn parse_count(s: &str, min: usize, max: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

fn parse_retain(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_RETAIN)
}

/// Most `SWITCHYARD_RETAIN_BYTES`.
const MAX_RETAIN_BYTES: u64 = 1 << 40;

fn parse_bytes(s: &str) -> Result<ByteSize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => 0,
    };
    match digits.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)) {
        Some(n) if (1024..=MAX_RETAIN_BYTES).contains(&n) => Ok(ByteSize(n)),
        _ => Err("expected a size from 1KiB to 1024GiB, e.g. 256MiB (units B, KiB, MiB, GiB; powers of 1024)".to_owned()),
    }
}

fn parse_fsync(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "batch" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected batch or off".to_owned()),
    }
}

fn parse_padding(s: &str) -> Result<usize, String> {
    parse_count(s, 0, MAX_SSE_PADDING)
}

fn parse_poll_batch(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_POLL_BATCH)
}

fn parse_key(s: &str) -> Result<String, String> {
    if s.len() < 16 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("expected at least 16 characters without spaces".to_owned());
    }
    Ok(s.to_owned())
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err("expected on or off".to_owned()),
    }
}

fn parse_origins(s: &str) -> Result<AllowedOrigins, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("same") {
        return Ok(AllowedOrigins::SameOrigin);
    }
    if s == "*" {
        return Ok(AllowedOrigins::Any);
    }
    let mut list = Vec::new();
    for origin in s.split(',').map(str::trim) {
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.ends_with('/')
            && origin.split_once("://").is_some_and(|(_, host)| {
                !host.is_empty() && !host.contains('/') && !host.contains(char::is_whitespace)
            });
        if !valid {
            return Err(format!(
                "origin {origin:?} is not scheme://host[:port]; expected a comma-separated list such as https://app.example.com,http://localhost:8080, or * or same"
            ));
        }
        list.push(origin.to_ascii_lowercase());
    }
    Ok(AllowedOrigins::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::defaults();
        assert_eq!(c.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(
            c.transports.0,
            vec![Transport::WebSocket, Transport::Sse, Transport::LongPoll]
        );
        assert_eq!(c.heartbeat.get(), Duration::from_secs(15));
        assert_eq!(c.poll_timeout.get(), Duration::from_secs(25));
        assert_eq!(c.retain, 10_000);
        assert_eq!(c.retain_bytes.get(), 256 << 20);
        assert_eq!(c.retain_bytes.to_string(), "256MiB");
        assert!(c.fsync, "fsync per batch by default");
        assert_eq!(c.data_dir, None);
        assert_eq!(c.retain_age.get(), Duration::from_secs(3600));
        assert_eq!(c.publish_key, None);
        assert_eq!(c.allowed_origins, AllowedOrigins::SameOrigin);
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.sse_padding, 2048);
        assert_eq!(c.poll_batch, 1000);
        assert_eq!(c.demo, None, "on by the address");
        assert!(c.tcp_nodelay, "latency first");
        assert_eq!(c.fanout_linger.get(), Duration::from_millis(10));
        let off = Config::try_parse_from(["switchyard", "--fanout-linger", "0"]).expect("parses");
        assert!(off.fanout_linger.get().is_zero());
        let err = Config::try_parse_from(["switchyard", "--fanout-linger", "1s"])
            .expect_err("past the cap");
        assert_eq!(
            one_line_error(&err).as_deref(),
            Some(r#"invalid SWITCHYARD_FANOUT_LINGER="1s": expected a duration from 0s to 100ms"#)
        );
        let c = Config::try_parse_from(["switchyard", "--tcp-nodelay", "off"]).expect("parses");
        assert!(!c.tcp_nodelay);
    }

    #[test]
    fn invalid_values_become_one_line_naming_the_variable() {
        let err =
            Config::try_parse_from(["switchyard", "--heartbeat", "soon"]).expect_err("must refuse");
        assert_eq!(
            one_line_error(&err).as_deref(),
            Some(
                r#"invalid SWITCHYARD_HEARTBEAT="soon": expected a duration such as 15s, 500ms, 2m or 1h"#
            )
        );
        let err =
            Config::try_parse_from(["switchyard", "--transports", "websocket,carrier-pigeon"])
                .expect_err("must refuse");
        let line = one_line_error(&err).expect("one line");
        assert!(line.starts_with("invalid SWITCHYARD_TRANSPORTS=\"websocket,carrier-pigeon\": unknown transport \"carrier-pigeon\""), "{line}");
    }

    #[test]
    fn transports_parse_in_order() {
        assert_eq!(
            parse_transports("sse,longpoll").expect("ok").0,
            vec![Transport::Sse, Transport::LongPoll]
        );
        assert!(parse_transports("none").expect("ok").0.is_empty());
        assert!(parse_transports("sse,sse").is_err());
    }
}
