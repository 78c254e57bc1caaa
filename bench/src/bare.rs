//! The floor of a broadcast: a bare fan-out server with nothing but one write per
//! subscriber.
//!
//! It speaks the subset of Nchan's protocol the generator uses (`--server nchan`):
//! `GET /sub/<topic>` opens an event stream, `POST /pub/<topic>` sends its body as one
//! `data:` frame to every open stream. The streams are split over `threads` shards; a
//! publish writes the frame to each shard's sockets from one thread per shard, with
//! plain blocking writes, then answers `200`. No log, no cursors, no topics (every stream
//! gets every publish), no heartbeats, no limits: what is left is the kernel's cost of
//! one TCP send per subscriber and the machine's scheduling, which any server pays.
//! `bench/compare.sh` runs it beside switchyard and Nchan in the scale scenario, so the
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

/// The open streams, split into shards.
struct Shards(Vec<Mutex<Vec<TcpStream>>>);

impl Shards {
    fn lock(&self, i: usize) -> MutexGuard<'_, Vec<TcpStream>> {
        self.0[i % self.0.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `frame` to every stream, one thread per shard; drops streams whose write
    /// fails. Returns how many streams got it.
    fn broadcast(&self, frame: &[u8]) -> usize {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..self.0.len())
                .map(|i| {
                    scope.spawn(move || {
                        let mut streams = self.lock(i);
                        streams.retain(|mut s| s.write_all(frame).is_ok());
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
        match read_request(&mut stream, &mut buf) {
            Ok(Some(Request::Subscribe)) => {
                if stream.write_all(STREAM_HEAD).is_ok() {
                    shards.lock(next).push(stream);
                    next += 1;
                }
            }
            Ok(Some(Request::Publish(body))) => {
                let shards = shards.clone();
                let spawned = std::thread::Builder::new()
                    .name("publish".into())
                    .spawn(move || publisher(stream, body, buf, &shards));
                if let Err(e) = spawned {
                    eprintln!("switchyard-bare: cannot start a publish thread: {e}");
                }
            }
            Ok(None) => {}
            Err(answer) => {
                let _ = stream.write_all(answer.as_bytes());
            }
        }
    }
}

/// One publishing connection (kept alive): every request is a publish, answered after
/// its fan-out.
fn publisher(mut stream: TcpStream, mut body: Vec<u8>, mut buf: Vec<u8>, shards: &Shards) {
    let _ = stream.set_read_timeout(None);
    loop {
        let mut frame = Vec::with_capacity(body.len() + 8);
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(&body);
        frame.extend_from_slice(b"\n\n");
        let got = shards.broadcast(&frame);
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
    Publish(Vec<u8>),
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
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                return match (request.method, path) {
                    (Some("GET"), p) if p.starts_with("/sub/") => {
                        buf.drain(..head_len);
                        Ok(Some(Request::Subscribe))
                    }
                    (Some("POST"), p) if p.starts_with("/pub/") => {
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
