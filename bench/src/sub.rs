//! One subscriber per task: connect over the chosen transport, then count every event.
//!
//! A subscriber counts as connected when the server has shown the stream works:
//! switchyard's `ready` (WebSocket, SSE) or the first long-poll answer (`timeout=0`);
//! for Nchan, which sends no ready message, the `101` or `200` response (long-poll: the
//! HTTP connection, since its first request waits for the first message).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    CONTENT_TYPE, ETAG, HOST, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use hyper::{Request, StatusCode};
use memchr::memmem;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};

use crate::Error;
use crate::args::{Flavor, Transport};
use crate::net::{self, Target};
use crate::stream;
use crate::track::{Shared, Tracker, now_us, scan};

/// Most bytes an SSE block may take before it is refused (a broken stream).
const MAX_SSE_BLOCK: usize = 4 << 20;

/// What every subscriber of a process shares.
#[derive(Debug, Clone)]
pub struct SubConfig {
    /// The server.
    pub target: Target,
    /// Its flavor.
    pub flavor: Flavor,
    /// The transport.
    pub transport: Transport,
    /// The topic.
    pub topic: String,
    /// Events expected (M).
    pub events: u64,
    /// Concurrent publishers: the order is checked per publisher (event n is publisher
    /// n mod P's).
    pub publishers: u64,
    /// Source address to bind.
    pub source: Option<IpAddr>,
    /// Longest a connection may take until it counts as connected.
    pub connect_timeout: Duration,
    /// Long-poll `timeout=` for switchyard, seconds.
    pub poll_timeout: u64,
}

/// A connection attempt: counted once, as connected or as failed; holds a handshake slot
/// (the permit) until then.
struct Attempt {
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
    connected: bool,
    deadline: Instant,
}

impl Attempt {
    fn connected(&mut self) {
        if !self.connected {
            self.connected = true;
            self.permit = None;
            self.shared.connected.fetch_add(1, Ordering::Relaxed);
            self.shared.attempted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Awaits `fut`, bounded by the connect deadline until connected.
    async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Result<T, Error> {
        if self.connected {
            Ok(fut.await)
        } else {
            timeout_at(self.deadline, fut)
                .await
                .map_err(|_| Error::new("connect timeout (no ready in time)"))
        }
    }
}

/// Runs one subscriber until its stream ends (or the task is aborted at the end of the
/// run), updating `shared`.
pub async fn subscriber(cfg: Arc<SubConfig>, shared: Arc<Shared>, permit: OwnedSemaphorePermit) {
    let mut attempt = Attempt {
        shared: shared.clone(),
        permit: Some(permit),
        connected: false,
        deadline: Instant::now() + cfg.connect_timeout,
    };
    let mut tracker = Tracker::new(cfg.events, cfg.publishers);
    let result = match cfg.transport {
        Transport::Sse => sse(&cfg, &mut attempt, &mut tracker).await,
        Transport::Ws => ws(&cfg, &mut attempt, &mut tracker).await,
        Transport::Longpoll => longpoll(&cfg, &mut attempt, &mut tracker).await,
    };
    tracker.flush(&shared);
    let err = match result {
        Ok(()) => Error::new("stream ended"),
        Err(e) => e,
    };
    if attempt.connected {
        shared.disconnects.fetch_add(1, Ordering::Relaxed);
        shared.error(format!("disconnected: {err}"));
    } else {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        shared.attempted.fetch_add(1, Ordering::Relaxed);
        shared.error(format!("connect failed: {err}"));
    }
}

fn get(cfg: &SubConfig, path_and_query: String) -> Result<Request<Empty<Bytes>>, Error> {
    Request::get(path_and_query)
        .header(HOST, cfg.target.authority.as_str())
        .body(Empty::new())
        .map_err(|e| Error::new(format!("request: {e}")))
}

fn sse_path(cfg: &SubConfig) -> Result<String, Error> {
    match cfg.flavor {
        Flavor::Switchyard => Ok(format!("{}/v1/sse?topics={}", cfg.target.prefix, cfg.topic)),
        Flavor::Nchan => Ok(format!("{}/sub/{}", cfg.target.prefix, cfg.topic)),
        Flavor::SocketIo => Err(Error::new(
            "Socket.IO has no SSE transport: use --transport ws or longpoll",
        )),
    }
}

async fn sse(cfg: &SubConfig, attempt: &mut Attempt, tracker: &mut Tracker) -> Result<(), Error> {
    let path = sse_path(cfg)?;
    let socket = attempt
        .bounded(net::connect(cfg.target.addr, cfg.source))
        .await??;
    let mut resp = attempt
        .bounded(stream::get(
            socket,
            &cfg.target.authority,
            &path,
            "Accept: text/event-stream\r\n",
        ))
        .await??;
    if resp.status != 200 {
        let text = attempt.bounded(resp.error_text()).await?;
        return Err(Error::new(format!("HTTP {}: {text}", resp.status)));
    }
    if cfg.flavor == Flavor::Nchan {
        attempt.connected();
    }
    let mut blocks = SseBlocks::default();
    let shared = attempt.shared.clone();
    loop {
        let mut control = Control::default();
        let mut now = None;
        let mut fed = Ok(());
        let more = attempt
            .bounded(resp.read(&mut |piece: &[u8]| {
                let now = *now.get_or_insert_with(now_us);
                if fed.is_ok() {
                    fed = blocks.feed(piece, &mut |block| match event_name(block) {
                        None => scan(block, |n, t| tracker.record(n, t, now)),
                        Some(b"ready") => control.ready = true,
                        Some(b"reset") => control.resets += 1,
                        Some(b"reconnect") => control.reconnect = true,
                        Some(_) => {}
                    });
                }
            }))
            .await??;
        fed?;
        tracker.flush(&shared);
        control.apply(attempt)?;
        if !more {
            return Err(Error::new("the server ended the stream"));
        }
    }
}

/// Control messages seen in one read (SSE events, WebSocket ops).
#[derive(Default)]
struct Control {
    ready: bool,
    resets: u64,
    reconnect: bool,
    /// A Socket.IO ping to answer.
    pong: bool,
}

impl Control {
    /// Acts on what one read held: `ready` counts the subscriber as connected, resets are
    /// counted, and `reconnect` (the server draining) ends the subscriber.
    fn apply(self, attempt: &mut Attempt) -> Result<(), Error> {
        if self.ready {
            attempt.connected();
        }
        if self.resets > 0 {
            attempt
                .shared
                .resets
                .fetch_add(self.resets, Ordering::Relaxed);
        }
        if self.reconnect {
            return Err(Error::new("the server asked to reconnect (draining)"));
        }
        Ok(())
    }
}

/// Polls a hyper connection and the work using it in the same task (one wake-up per
/// read instead of two).
async fn drive<C, E>(conn: C, work: impl Future<Output = Result<(), Error>>) -> Result<(), Error>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::select! {
        biased;
        r = work => r,
        r = conn => match r {
            Ok(()) => Err(Error::new("the server closed the connection")),
            Err(e) => Err(Error::new(format!("connection: {e}"))),
        },
    }
}

async fn status_error(resp: hyper::Response<hyper::body::Incoming>) -> Error {
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Error::new(format!("HTTP {status}: {}", text.trim()))
}

/// Splits an SSE byte stream into blocks (the text before each blank line).
#[derive(Default)]
pub(crate) struct SseBlocks {
    buf: Vec<u8>,
}

impl SseBlocks {
    /// Feeds bytes; calls `each` with every complete block (without its blank line).
    pub(crate) fn feed(&mut self, data: &[u8], each: &mut impl FnMut(&[u8])) -> Result<(), Error> {
        if self.buf.is_empty() {
            let used = split_blocks(data, each);
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(data);
            let used = split_blocks(&self.buf, each);
            self.buf.drain(..used);
        }
        if self.buf.len() > MAX_SSE_BLOCK {
            return Err(Error::new("SSE block too large (no blank line)"));
        }
        Ok(())
    }
}

fn split_blocks(data: &[u8], each: &mut impl FnMut(&[u8])) -> usize {
    static FINDER: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\n\n"));
    let mut at = 0;
    while let Some(i) = FINDER.find(&data[at..]) {
        each(&data[at..at + i + 1]);
        at += i + 2;
    }
    at
}

/// The `event:` name of an SSE block, if it has one.
pub(crate) fn event_name(block: &[u8]) -> Option<&[u8]> {
    let start = if block.starts_with(b"event:") {
        6
    } else {
        memmem::find(block, b"\nevent:")? + 7
    };
    let rest = &block[start..];
    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    Some(rest[..end].trim_ascii())
}

async fn ws(cfg: &SubConfig, attempt: &mut Attempt, tracker: &mut Tracker) -> Result<(), Error> {
    let socket = attempt
        .bounded(net::connect(cfg.target.addr, cfg.source))
        .await??;
    let path = match cfg.flavor {
        Flavor::Switchyard => format!("{}/v1/ws?topics={}", cfg.target.prefix, cfg.topic),
        Flavor::Nchan => format!("{}/sub/{}", cfg.target.prefix, cfg.topic),
        Flavor::SocketIo => format!(
            "{}/socket.io/?EIO=4&transport=websocket&topic={}",
            cfg.target.prefix, cfg.topic
        ),
    };
    let mut ws = attempt
        .bounded(stream::websocket(socket, &cfg.target.authority, &path))
        .await??;
    if cfg.flavor == Flavor::Nchan {
        attempt.connected();
    }
    if cfg.flavor == Flavor::SocketIo {
        // Engine.IO's open packet comes first; then join the default namespace.
        attempt.bounded(ws.send_text(b"40")).await??;
    }
    let shared = attempt.shared.clone();
    loop {
        let mut control = Control::default();
        let mut now = None;
        attempt
            .bounded(ws.read(&mut |data: &[u8]| {
                let now = *now.get_or_insert_with(now_us);
                match cfg.flavor {
                    Flavor::Nchan => scan(data, |n, t| tracker.record(n, t, now)),
                    Flavor::SocketIo => sio_packet(data, &mut control, tracker, now),
                    Flavor::Switchyard => {
                        if data.starts_with(b"{\"op\":\"event\"") {
                            scan(data, |n, t| tracker.record(n, t, now));
                        } else if data.starts_with(b"{\"op\":\"ready\"") {
                            control.ready = true;
                        } else if data.starts_with(b"{\"op\":\"reset\"") {
                            control.resets += 1;
                        } else if data.starts_with(b"{\"op\":\"reconnect\"") {
                            control.reconnect = true;
                        }
                    }
                }
            }))
            .await??;
        tracker.flush(&shared);
        let pong = control.pong;
        control.apply(attempt)?;
        if pong {
            attempt.bounded(ws.send_text(b"3")).await??;
        }
    }
}

/// One Engine.IO packet from the Socket.IO peer: `42[…]` an event, `40…` the namespace
/// joined (ready), `2` a ping (answered with `3`), `41` / `1` the server left.
fn sio_packet(packet: &[u8], control: &mut Control, tracker: &mut Tracker, now: u64) {
    match packet {
        [b'4', b'2', ..] => scan(packet, |n, t| tracker.record(n, t, now)),
        [b'4', b'0', ..] => control.ready = true,
        [b'2'] => control.pong = true,
        [b'4', b'1', ..] | [b'1', ..] | [b'4', b'4', ..] => control.reconnect = true,
        _ => {}
    }
}

/// Where a long-poller is in the stream: switchyard's cursor, or Nchan's caching headers.
#[derive(Default)]
struct PollState {
    cursor: Option<String>,
    last_modified: Option<HeaderValue>,
    etag: Option<HeaderValue>,
}

/// Long polling over keep-alive connections, reconnecting (with the same position) when
/// the server closes one between answers (nginx closes after `keepalive_requests`).
async fn longpoll(
    cfg: &SubConfig,
    attempt: &mut Attempt,
    tracker: &mut Tracker,
) -> Result<(), Error> {
    let mut state = PollState::default();
    let mut failures = 0u32;
    loop {
        let stream = match attempt
            .bounded(net::connect(cfg.target.addr, cfg.source))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if attempt.connected && failures < 3 => {
                failures += 1;
                attempt.shared.error(format!("long-poll reconnect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(e),
        };
        let (mut send, conn) = attempt
            .bounded(net::http1::<Empty<Bytes>>(stream))
            .await??;
        let answered = AtomicBool::new(false);
        let work = async {
            match cfg.flavor {
                Flavor::Switchyard => {
                    poll_switchyard(cfg, attempt, tracker, &mut send, &mut state, &answered).await
                }
                Flavor::Nchan => {
                    poll_nchan(cfg, attempt, tracker, &mut send, &mut state, &answered).await
                }
                Flavor::SocketIo => {
                    poll_socketio(cfg, attempt, tracker, &mut send, &mut state, &answered).await
                }
            }
        };
        let err = match drive(conn, work).await {
            Ok(()) => Error::new("the server closed the connection"),
            Err(e) => e,
        };
        if !attempt.connected {
            return Err(err);
        }
        // A connection that answered at least once was closed between answers: resume.
        if answered.load(Ordering::Relaxed) {
            failures = 0;
        } else {
            failures += 1;
            if failures >= 3 {
                return Err(err);
            }
        }
        attempt.shared.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

async fn poll_switchyard(
    cfg: &SubConfig,
    attempt: &mut Attempt,
    tracker: &mut Tracker,
    send: &mut SendRequest<Empty<Bytes>>,
    state: &mut PollState,
    answered: &AtomicBool,
) -> Result<(), Error> {
    let shared = attempt.shared.clone();
    loop {
        let path = match &state.cursor {
            // The first poll answers at once with the head: the long-poll "ready".
            None => format!(
                "{}/v1/poll?topics={}&timeout=0",
                cfg.target.prefix, cfg.topic
            ),
            Some(c) => format!(
                "{}/v1/poll?topics={}&cursor={c}&timeout={}",
                cfg.target.prefix, cfg.topic, cfg.poll_timeout
            ),
        };
        let body = poll_once(cfg, attempt, send, path).await?;
        let now = now_us();
        let answer = PollAnswer::parse(&body)?;
        scan(&body[..answer.events_end], |n, t| tracker.record(n, t, now));
        tracker.flush(&shared);
        if answer.reset {
            shared.resets.fetch_add(1, Ordering::Relaxed);
        }
        state.cursor = Some(answer.cursor);
        answered.store(true, Ordering::Relaxed);
        attempt.connected();
        if answer.reconnect {
            return Err(Error::new("the server asked to reconnect (draining)"));
        }
    }
}

/// One poll: a GET of `path` on `send` that must answer 200, and its whole body; bounded
/// by the connect deadline until connected.
async fn poll_once(
    cfg: &SubConfig,
    attempt: &Attempt,
    send: &mut SendRequest<Empty<Bytes>>,
    path: String,
) -> Result<Bytes, Error> {
    attempt.bounded(send.ready()).await??;
    let resp = attempt
        .bounded(send.send_request(get(cfg, path)?))
        .await??;
    if resp.status() != StatusCode::OK {
        return Err(status_error(resp).await);
    }
    Ok(attempt
        .bounded(resp.into_body().collect())
        .await??
        .to_bytes())
}

/// Engine.IO 4 long-polling on the Socket.IO peer: the handshake GET (its `sid`), a POST
/// of `40` (join the namespace), then GETs that each answer with the packets since the
/// last, separated by 0x1e; a ping (`2`) is answered by a POST of `3`. POSTs go on a
/// connection of their own, as a browser's do, beside the waiting GET.
async fn poll_socketio(
    cfg: &SubConfig,
    attempt: &mut Attempt,
    tracker: &mut Tracker,
    send: &mut SendRequest<Empty<Bytes>>,
    state: &mut PollState,
    answered: &AtomicBool,
) -> Result<(), Error> {
    let shared = attempt.shared.clone();
    let base = format!("{}/socket.io/?EIO=4&transport=polling", cfg.target.prefix);
    loop {
        let path = match &state.cursor {
            None => format!("{base}&topic={}", cfg.topic),
            Some(sid) => format!("{base}&sid={sid}"),
        };
        let body = poll_once(cfg, attempt, send, path).await?;
        let now = now_us();
        let mut control = Control::default();
        let mut packets = body.split(|b| *b == 0x1e);
        if state.cursor.is_none() {
            let open = packets.next().unwrap_or_default();
            let sid = sio_sid(open).ok_or_else(|| {
                Error::new(format!(
                    "Socket.IO handshake without a sid: {}",
                    String::from_utf8_lossy(&open[..open.len().min(200)])
                ))
            })?;
            attempt.bounded(sio_post(cfg, &base, &sid, "40")).await??;
            state.cursor = Some(sid);
        }
        for packet in packets {
            sio_packet(packet, &mut control, tracker, now);
        }
        tracker.flush(&shared);
        answered.store(true, Ordering::Relaxed);
        if control.pong
            && let Some(sid) = &state.cursor
        {
            attempt.bounded(sio_post(cfg, &base, sid, "3")).await??;
            control.pong = false;
        }
        control.apply(attempt)?;
    }
}

/// The `sid` of an Engine.IO open packet: `0{"sid":"…",…}`.
fn sio_sid(open: &[u8]) -> Option<String> {
    let rest = open.strip_prefix(b"0")?;
    let at = memmem::find(rest, b"\"sid\":\"")? + 7;
    let end = memchr::memchr(b'"', &rest[at..])?;
    String::from_utf8(rest[at..at + end].to_vec()).ok()
}

/// POSTs one Engine.IO payload for session `sid` on a connection of its own.
async fn sio_post(
    cfg: &SubConfig,
    base: &str,
    sid: &str,
    payload: &'static str,
) -> Result<(), Error> {
    let stream = net::connect(cfg.target.addr, cfg.source).await?;
    let (mut send, conn) = net::http1::<Full<Bytes>>(stream).await?;
    let req = Request::post(format!("{base}&sid={sid}"))
        .header(HOST, cfg.target.authority.as_str())
        .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Full::new(Bytes::from_static(payload.as_bytes())))
        .map_err(|e| Error::new(format!("request: {e}")))?;
    let work = async {
        let resp = send.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(status_error(resp).await);
        }
        resp.into_body().collect().await?;
        Ok(())
    };
    drive(conn, work).await
}

/// The parts of a switchyard poll answer the poller needs.
pub(crate) struct PollAnswer {
    pub(crate) cursor: String,
    /// Where the `events` array ends (events are scanned in `body[..events_end]`).
    pub(crate) events_end: usize,
    pub(crate) reset: bool,
    pub(crate) reconnect: bool,
}

impl PollAnswer {
    /// Reads `{"events":[…],"cursor":"…"[,"reset":{…}][,"reconnect":{…}]}`: fast path by
    /// position, else a full parse.
    pub(crate) fn parse(body: &[u8]) -> Result<PollAnswer, Error> {
        const KEY: &[u8] = b"],\"cursor\":\"";
        if let Some(i) = memmem::rfind(body, KEY) {
            let rest = &body[i + KEY.len()..];
            if let Some(end) = memchr::memchr(b'"', rest)
                && let Ok(cursor) = std::str::from_utf8(&rest[..end])
            {
                let tail = &rest[end..];
                return Ok(PollAnswer {
                    cursor: cursor.to_owned(),
                    events_end: i + 1,
                    reset: memmem::find(tail, b"\"reset\":").is_some(),
                    reconnect: memmem::find(tail, b"\"reconnect\":").is_some(),
                });
            }
        }
        #[derive(serde::Deserialize)]
        struct Full {
            cursor: String,
            #[serde(default)]
            reset: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            reconnect: Option<serde::de::IgnoredAny>,
        }
        let full: Full = serde_json::from_slice(body).map_err(|e| {
            Error::new(format!(
                "unreadable poll answer ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        Ok(PollAnswer {
            cursor: full.cursor,
            events_end: body.len(),
            reset: full.reset.is_some(),
            reconnect: full.reconnect.is_some(),
        })
    }
}

async fn poll_nchan(
    cfg: &SubConfig,
    attempt: &mut Attempt,
    tracker: &mut Tracker,
    send: &mut SendRequest<Empty<Bytes>>,
    state: &mut PollState,
    answered: &AtomicBool,
) -> Result<(), Error> {
    let shared = attempt.shared.clone();
    // Nchan has no ready message and its first poll waits for a message: the open HTTP
    // connection is as far as "connected" can be seen.
    attempt.connected();
    loop {
        let mut req = get(cfg, format!("{}/sub/{}", cfg.target.prefix, cfg.topic))?;
        if let Some(v) = &state.last_modified {
            req.headers_mut().insert(IF_MODIFIED_SINCE, v.clone());
        }
        if let Some(v) = &state.etag {
            req.headers_mut().insert(IF_NONE_MATCH, v.clone());
        }
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        match status {
            StatusCode::OK => {
                if let Some(v) = resp.headers().get(LAST_MODIFIED) {
                    state.last_modified = Some(v.clone());
                }
                if let Some(v) = resp.headers().get(ETAG) {
                    state.etag = Some(v.clone());
                }
                let body = resp.into_body().collect().await?.to_bytes();
                let now = now_us();
                scan(&body, |n, t| tracker.record(n, t, now));
                tracker.flush(&shared);
            }
            // No message before Nchan's subscriber timeout: ask again from the same place.
            StatusCode::NOT_MODIFIED | StatusCode::REQUEST_TIMEOUT => {
                resp.into_body().collect().await?;
            }
            _ => return Err(status_error(resp).await),
        }
        answered.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_across_chunks() {
        let stream = b"retry: 2000\n:    \nevent: ready\nid: a-1\ndata: {}\n\nid: a-2\ndata: {\"data\":{\"n\":0,\"t\":5}}\n\n: heartbeat\nevent: heartbeat\ndata: {}\n\nid: a-3\ndata: {\"data\":{\"n\":1,\"t\":6}}\n\n";
        for split in [1, 7, 30, 64, stream.len()] {
            let mut blocks = SseBlocks::default();
            let mut names = vec![];
            let mut events = vec![];
            for chunk in stream.chunks(split) {
                blocks
                    .feed(chunk, &mut |b| match event_name(b) {
                        Some(name) => names.push(String::from_utf8_lossy(name).into_owned()),
                        None => scan(b, |n, t| events.push((n, t))),
                    })
                    .expect("feed");
            }
            assert_eq!(names, ["ready", "heartbeat"], "split {split}");
            assert_eq!(events, [(0, 5), (1, 6)], "split {split}");
        }
    }

    #[test]
    fn poll_answers() {
        let a =
            PollAnswer::parse(br#"{"events":[{"id":"k-1","data":{"n":0,"t":1}}],"cursor":"k-1"}"#)
                .expect("answer");
        assert_eq!(a.cursor, "k-1");
        assert!(!a.reset && !a.reconnect);
        let a = PollAnswer::parse(
            br#"{"events":[],"cursor":"k-6","reset":{"reason":"cursor_expired","cursor":"k-6"}}"#,
        )
        .expect("answer");
        assert_eq!((a.cursor.as_str(), a.reset), ("k-6", true));
        let a = PollAnswer::parse(br#"{"cursor":"k-9","events":[]}"#).expect("answer");
        assert_eq!(a.cursor, "k-9");
        assert!(PollAnswer::parse(b"<html>").is_err());
    }
}
