//! The command line: every flag, its default and what it measures.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Which transport the subscribers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket (switchyard: `/v1/ws`; Nchan: upgrade on `/sub/<topic>`).
    Ws,
    /// Server-Sent Events (switchyard: `/v1/sse`; Nchan: `Accept: text/event-stream`).
    Sse,
    /// Long polling (switchyard: `/v1/poll` with cursors; Nchan: `If-Modified-Since` /
    /// `If-None-Match` from the previous answer).
    Longpoll,
}

impl Transport {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Longpoll => "longpoll",
        }
    }
}

/// Which server's URLs and wire format to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// switchyard: `/v1/ws`, `/v1/sse`, `/v1/poll`, batch publish on `POST /v1/events`.
    Switchyard,
    /// nginx + Nchan: subscribe on `/sub/<topic>`, publish one raw body per
    /// `POST /pub/<topic>`.
    Nchan,
    /// Socket.IO 4 (`bench/socketio/server.js`): Engine.IO 4 over WebSocket or HTTP
    /// long-polling on `/socket.io/?topic=<topic>` (the room), events as `42["e",{…}]`;
    /// publish one JSON body per `POST /pub/<topic>`, as for Nchan.
    #[value(name = "socketio")]
    #[serde(rename = "socketio")]
    SocketIo,
}

impl Flavor {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Switchyard => "switchyard",
            Flavor::Nchan => "nchan",
            Flavor::SocketIo => "socketio",
        }
    }
}

/// Load generator for switchyard (and nginx+Nchan, for comparison).
///
/// Opens N subscribers over one transport at a set connect rate, publishes M events
/// (each carrying its sequence number and send time), and reports completeness
/// (delivered, missing, duplicated, out of order), latency percentiles, deliveries per
/// second, the publish rate, and the server's memory and CPU read from /proc.
///
/// Above about 15,000 subscribers it re-executes itself as several processes, each
/// binding its sockets to its own source address (127.0.0.2, 127.0.0.3, …), because one
/// process may hold 20,000 files and one source address has about 28,000 local ports.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "switchyard-bench", version, max_term_width = 100)]
pub struct Args {
    /// Base URL of the server the subscribers connect to (http only; a path prefix is
    /// kept, e.g. http://127.0.0.1:8080/realtime). Several, separated by commas, spread
    /// the subscribers over several nodes: subscriber process i connects to the i-th
    /// (modulo their number), and there are at least as many processes as URLs.
    #[arg(long, env = "BENCH_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,

    /// Base URL to publish to [default: the first --url].
    #[arg(long, env = "BENCH_PUBLISH_URL")]
    pub publish_url: Option<String>,

    /// switchyard's publish key (sent as `Authorization: Bearer`), when the server has one.
    #[arg(long, env = "SWITCHYARD_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// Server flavor: which paths and wire format to use.
    #[arg(long, value_enum, env = "BENCH_SERVER", default_value = "switchyard")]
    pub server: Flavor,

    /// Transport of every subscriber.
    #[arg(long, value_enum, env = "BENCH_TRANSPORT", default_value = "sse")]
    pub transport: Transport,

    /// Number of subscribers (N).
    #[arg(long, env = "BENCH_SUBSCRIBERS", default_value_t = 100)]
    pub subscribers: u64,

    /// Connect rate while ramping up, subscribers per second over all processes
    /// (0 = as fast as possible, still at most --max-pending handshakes at once).
    #[arg(long, env = "BENCH_RAMP_PER_SEC", default_value_t = 2000)]
    pub ramp_per_sec: u64,

    /// Most connection handshakes in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub max_pending: usize,

    /// Events to publish (M). 0 = idle scenario: connect, measure memory, --hold, exit.
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 1000)]
    pub events: u64,

    /// Publish rate in events per second (0 = as fast as possible). When the publisher
    /// falls behind the schedule it catches up in batches.
    #[arg(long, env = "BENCH_RATE", default_value_t = 0)]
    pub rate: u64,

    /// Most events per publish request. 1 (the default) is what most publishers do (a
    /// CMS save, a webhook) and the only pattern Nchan and Socket.IO have; larger batches
    /// are a switchyard feature (up to 1000 per `POST /v1/events`; always 1 for the others), to be
    /// reported apart from the like-for-like figures.
    #[arg(long, env = "BENCH_BATCH", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,

    /// Concurrent publishers, each on its own keep-alive connection, one event per request
    /// (publisher k sends events k, k + P, k + 2P, …; the order is checked per
    /// publisher). --rate is shared out among them.
    #[arg(long, env = "BENCH_PUBLISHERS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub publishers: u64,

    /// Size of each event's data in bytes (a JSON object with the sequence number, the
    /// send time and padding; at least about 40).
    #[arg(long, env = "BENCH_PAYLOAD_BYTES", default_value_t = 64)]
    pub payload_bytes: usize,

    /// Topic (channel) to use [default: a fresh one per run, bench-<pid>-<time>].
    // Also `--help`'s text, where the placeholders read best as they are.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, env = "BENCH_TOPIC")]
    pub topic: Option<String>,

    /// PID of the server: its memory (VmRSS, Pss) and CPU time are read from /proc,
    /// summed over the process and all its descendants (nginx workers).
    #[arg(long, env = "BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,

    /// Write the report as JSON to this file ("-" = stdout, instead of the summary).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Longest the whole run may take, in seconds; what was measured until then is
    /// reported (with timed_out = true).
    #[arg(long, env = "BENCH_TIMEOUT", default_value_t = 300)]
    pub timeout: u64,

    /// After the last publish, give up waiting for deliveries once nothing has arrived
    /// for this many seconds.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,

    /// Seconds to keep the subscribers connected after the ramp (and its memory
    /// reading) before publishing; the idle-memory scenario is --events 0 --hold S.
    #[arg(long, env = "BENCH_HOLD", default_value_t = 0)]
    pub hold: u64,

    /// Longest one subscriber may take to connect (TCP, HTTP, ready), in seconds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,

    /// Long-poll wait the switchyard pollers ask for (`timeout=`), in seconds.
    #[arg(long, default_value_t = 25)]
    pub poll_timeout: u64,

    /// Subscriber processes (0 = one per 15,000 subscribers). With more than one, the
    /// generator re-executes itself; each child binds to its own source address
    /// 127.0.0.2, 127.0.0.3, … when the server is on loopback.
    #[arg(long, env = "BENCH_PROCS", default_value_t = 0)]
    pub procs: u32,

    /// Runtime threads per process (1 = current-thread runtime, the cheapest).
    #[arg(long, env = "BENCH_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,

    /// Source address for the subscribers' sockets (single process; children get
    /// 127.0.0.2 + their index).
    #[arg(long)]
    pub source_ip: Option<Ipv4Addr>,

    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Internal: run as a subscriber child of a parent generator (JSON lines on stdout,
    /// "stop" on stdin).
    #[arg(long, hide = true)]
    pub child: bool,
}

impl Args {
    /// The arguments with every default, for tests and embedding (the environment is
    /// ignored).
    pub fn defaults() -> Args {
        let mut cmd = <Args as clap::CommandFactory>::command();
        for id in cmd
            .get_arguments()
            .map(|a| a.get_id().clone())
            .collect::<Vec<_>>()
        {
            cmd = cmd.mut_arg(id, |a| a.env(None::<&str>));
        }
        let parsed = cmd
            .try_get_matches_from(["switchyard-bench"])
            .and_then(|m| <Args as clap::FromArgMatches>::from_arg_matches(&m));
        match parsed {
            Ok(args) => args,
            // The defaults are fixed in this file; the unit test below parses them.
            Err(e) => panic!("the defaults must parse: {e}"),
        }
    }

    /// Events per publish request for this flavor.
    pub fn effective_batch(&self) -> u64 {
        match self.server {
            Flavor::Switchyard => self.batch,
            Flavor::Nchan | Flavor::SocketIo => 1,
        }
    }

    /// A flag combination the generator cannot run, said precisely.
    pub fn check(&self) -> Result<(), String> {
        if self.publishers > 1 && self.effective_batch() > 1 {
            return Err(format!(
                "--publishers {} needs --batch 1 (each publisher sends one event per request; got --batch {})",
                self.publishers, self.batch
            ));
        }
        Ok(())
    }

    /// The subscribers' base URLs: `--url` split at commas (empty parts dropped).
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Subscriber processes for this run: `--procs`, or one per 15,000 subscribers, and
    /// never fewer than there are URLs (each process connects to one).
    pub fn effective_procs(&self) -> u32 {
        let urls = u32::try_from(self.urls().len()).unwrap_or(u32::MAX);
        let procs = if self.procs > 0 {
            self.procs
        } else {
            let per = 15_000u64;
            u32::try_from(self.subscribers.div_ceil(per).max(1)).unwrap_or(u32::MAX)
        };
        if urls > 1 { procs.max(urls) } else { procs }
    }
}

/// Whether a topic is safe to put in a URL path and a JSON string unescaped (the
/// characters switchyard allows: `A-Z a-z 0-9 . _ - : /`, 1–200 of them).
pub fn valid_topic(topic: &str) -> bool {
    (1..=200).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let a = Args::defaults();
        assert_eq!(a.url, "http://127.0.0.1:3000");
        assert_eq!(a.threads, 1);
        assert_eq!(a.effective_procs(), 1);
    }

    #[test]
    fn procs_scale_with_subscribers() {
        let mut a = Args::defaults();
        a.subscribers = 100_000;
        assert_eq!(a.effective_procs(), 7);
        a.procs = 3;
        assert_eq!(a.effective_procs(), 3);
    }

    #[test]
    fn several_urls_mean_several_processes() {
        let mut a = Args::defaults();
        a.url = "http://127.0.0.1:1, http://127.0.0.1:2,,http://127.0.0.1:3".into();
        assert_eq!(
            a.urls(),
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "http://127.0.0.1:3"
            ]
        );
        assert_eq!(a.effective_procs(), 3);
        a.procs = 6;
        assert_eq!(a.effective_procs(), 6);
        a.url = ",".into();
        assert!(a.urls().is_empty());
    }

    #[test]
    fn several_publishers_publish_one_event_each() {
        let mut a = Args::defaults();
        assert_eq!(a.batch, 1, "like for like by default");
        a.publishers = 16;
        assert_eq!(a.check(), Ok(()));
        a.batch = 100;
        let err = a.check().expect_err("batches with several publishers");
        assert!(err.contains("--publishers 16 needs --batch 1"), "{err}");
        a.server = Flavor::Nchan;
        assert_eq!(a.check(), Ok(()), "Nchan publishes one per request anyway");
    }

    #[test]
    fn topics() {
        assert!(valid_topic("bench-1/a:b.c_d"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic("a\"b"));
    }

    #[test]
    fn help_builds() {
        <Args as clap::CommandFactory>::command().debug_assert();
    }
}
