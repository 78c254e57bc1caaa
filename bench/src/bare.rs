//! The floor of a broadcast: a bare fan-out server with nothing but one write per
//! subscriber.
//!
//! It speaks the subset of Nchan's protocol the generator uses (`--server nchan`):
//! `GET /sub/<topic>` opens an event stream (or, with WebSocket upgrade headers, a
//! WebSocket), `POST /pub/<topic>` sends its body as one SSE `data:` frame to every open
//! event stream and as one text frame to every WebSocket. The streams are split over
//! `threads` shards; a publish writes the frame to each shard's sockets from one thread
//! per shard, with plain blocking writes, then answers `200`. No log, no cursors, no topics (every stream
//! gets every publish), no heartbeats, no limits: what is left is the kernel's cost of
//! one TCP send per subscriber and the machine's scheduling, which any server pays.
//! `bench/compare.sh` runs it beside switchyard and Nchan in the scale scenarios, so the
//! report can say how far either is from the floor on this machine.
//!
//! Not a server to use for anything else: one thread per publishing connection, and a
//! subscriber that stops reading stalls a shard for up to [`WRITE_TIMEOUT`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest wait for a request head, and for a write to one subscriber.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head or publish body read.
const MAX_REQUEST: usize = 64 * 1024;
/// Most request headers parsed.
const MAX_HEADERS: usize = 32;

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\nconnection: close\r\n\r\n";

/// What a subscriber's socket carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sse,
    WebSocket,
}

/// The open streams, split into shards.
struct Shards(Vec<Mutex<Vec<(TcpStream, Kind)>>>);

impl Shards {
    fn lock(&self, i: usize) -> MutexGuard<'_, Vec<(TcpStream, Kind)>> {
        self.0[i % self.0.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `body` to every stream (framed for its kind), one thread per shard; drops
    /// streams whose write fails. Returns how many streams got it.
    fn broadcast(&self, body: &[u8]) -> usize {
        let sse = [b"data: ", body, b"\n\n"].concat();
        let ws = ws_text_frame(body);
        let (sse, ws) = (&sse, &ws);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..self.0.len())
                .map(|i| {
                    scope.spawn(move || {
                        let mut streams = self.lock(i);
                        streams.retain(|(s, kind)| {
                            let frame = if *kind == Kind::Sse { sse } else { ws };
                            (&*s).write_all(frame).is_ok()
                        });
                        streams.len()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
        })
    }
}

/// Serves on `listener` until the process ends, fanning out from `threads` threads.
pub fn serve(listener: TcpListener, threads: usize) {
    let shards = Arc::new(Shards(
        (0..threads.max(1))
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    ));
    let mut next = 0usize;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(WRITE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut buf = Vec::new();
        let (head, kind) = match read_request(&mut stream, &mut buf) {
            Ok(Some(Request::Subscribe)) => (STREAM_HEAD.to_vec(), Kind::Sse),
            Ok(Some(Request::WebSocket { key })) => (upgrade_head(&key), Kind::WebSocket),
            Ok(Some(Request::Publish(body))) => {
                let shards = shards.clone();
                let spawned = std::thread::Builder::new()
                    .name("publish".into())
                    .spawn(move || publisher(stream, body, buf, &shards));
                if let Err(e) = spawned {
                    eprintln!("switchyard-bare: cannot start a publish thread: {e}");
                }
                continue;
            }
            Ok(None) => continue,
            Err(answer) => {
                let _ = stream.write_all(answer.as_bytes());
                continue;
            }
        };
        if stream.write_all(&head).is_ok() {
            shards.lock(next).push((stream, kind));
            next += 1;
        }
    }
}

/// The `101` answer to a WebSocket upgrade with this `Sec-WebSocket-Key`.
fn upgrade_head(key: &[u8]) -> Vec<u8> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
         connection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// One publishing connection (kept alive): every request is a publish, answered after
/// its fan-out.
fn publisher(mut stream: TcpStream, mut body: Vec<u8>, mut buf: Vec<u8>, shards: &Shards) {
    let _ = stream.set_read_timeout(None);
    loop {
        let got = shards.broadcast(&body);
        let answer = format!("{{\"subscribers\":{got}}}");
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(answer.as_bytes()).is_err()
        {
            return;
        }
        body = match read_request(&mut stream, &mut buf) {
            Ok(Some(Request::Publish(body))) => body,
            Ok(_) => return,
            Err(answer) => {
                let _ = stream.write_all(answer.as_bytes());
                return;
            }
        };
    }
}

enum Request {
    Subscribe,
    WebSocket { key: Vec<u8> },
    Publish(Vec<u8>),
}

/// An unmasked, final text frame (server to client) carrying `payload`.
fn ws_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// Reads one request from `stream` (`buf` keeps bytes read past it). `Ok(None)` when
/// the connection closed first; `Err` is the answer to a request this server refuses.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Request>, String> {
    let refuse = |status: &str, why: &str| {
        Err(format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{why}",
            why.len()
        ))
    };
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let path = request.path.unwrap_or("");
                let header = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                let length = header("content-length")
                    .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                let ws_key = header("sec-websocket-key").map(<[u8]>::to_vec);
                return match (request.method, path, ws_key) {
                    (Some("GET"), p, Some(key)) if p.starts_with("/sub/") => {
                        buf.drain(..head_len);
                        Ok(Some(Request::WebSocket { key }))
                    }
                    (Some("GET"), p, None) if p.starts_with("/sub/") => {
                        buf.drain(..head_len);
                        Ok(Some(Request::Subscribe))
                    }
                    (Some("POST"), p, _) if p.starts_with("/pub/") => {
                        if length > MAX_REQUEST {
                            return refuse("413 Content Too Large", "body too large\n");
                        }
                        while buf.len() < head_len + length {
                            match stream.read(&mut chunk) {
                                Ok(0) | Err(_) => return Ok(None),
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = buf[head_len..head_len + length].to_vec();
                        buf.drain(..head_len + length);
                        Ok(Some(Request::Publish(body)))
                    }
                    _ => refuse("404 Not Found", "GET /sub/<topic> or POST /pub/<topic>\n"),
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => {}
            Ok(httparse::Status::Partial) => {
                return refuse("431 Request Header Fields Too Large", "head too large\n");
            }
            Err(e) => return refuse("400 Bad Request", &format!("{e}\n")),
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
