//! Streams read straight off the socket: an HTTP/1.1 GET's streaming answer (the SSE
//! subscriber) and a WebSocket's messages.
//!
//! The generator shares two cores with the server it measures, so every microsecond it
//! spends per delivery is one the server does not get. Through hyper's client an SSE
//! subscriber cost about twice as much user CPU as the kernel's read itself (a
//! dispatcher, a body channel and their wakers between the socket and the parser; profiled
//! with 9,500 SSE subscribers, 2026-11-26). Here one read of the socket (into a small,
//! never-zeroed buffer) is decoded in place and handed to the parser: no task, channel or
//! copy between them. The response head is parsed with `httparse` (hyper's parser); the
//! body is either chunked, sized, or ends with the connection. A WebSocket is the same
//! request with an upgrade; its frames are parsed in place with tungstenite's
//! `FrameHeader` (tokio-tungstenite zeroed its whole read buffer before every read and
//! passed every wake-up through a waker proxy). Long-polls and publishes, which make a
//! request per answer, keep hyper.

use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::Error;
use crate::track::now_us;

/// Read buffer per subscriber: small, because there may be 20,000 of them per process;
/// a read takes what fits and the rest waits in the socket.
pub const READ_BUFFER: usize = 8 * 1024;
/// Most bytes a response head may take.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers a response head may have.
const MAX_HEADERS: usize = 32;
/// Most bytes of an error answer kept for its message.
const ERROR_BODY: usize = 200;

/// A connection's socket and the bytes read from it that are not used yet.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// Whether `buf` holds bytes no decoder has seen (read with the response head).
    /// Otherwise it is empty or holds an incomplete piece (a chunk-size line, a frame),
    /// and only a read can add to it.
    undecoded: bool,
}

impl Conn {
    /// Makes new bytes available in `buf`: those read with the head, else one read of
    /// the socket (into at most [`READ_BUFFER`] more bytes). `false` if the connection
    /// ended instead.
    async fn fill(&mut self) -> Result<bool, Error> {
        if std::mem::take(&mut self.undecoded) {
            return Ok(true);
        }
        self.buf.reserve(READ_BUFFER);
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }
}

/// A response being read: its status, then its body in pieces.
pub struct Response {
    conn: Conn,
    /// The HTTP status code.
    pub status: u16,
    body: Body,
}

/// How the body is framed, and where the decoder is in it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    /// `Transfer-Encoding: chunked`: bytes left in the current chunk; whether its CRLF is
    /// still to come.
    Chunked { left: u64, crlf: bool },
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Until the server closes the connection.
    Close,
    /// The body is over.
    Done,
}

/// Sends `GET path_and_query` with the given extra header lines (each ending in CRLF) and
/// reads the response head.
pub async fn get(
    stream: TcpStream,
    authority: &str,
    path_and_query: &str,
    headers: &str,
) -> Result<Response, Error> {
    request(stream, authority, path_and_query, headers, |_| Ok(())).await
}

/// Sends the request and reads the response head; `check` sees its headers.
async fn request(
    mut stream: TcpStream,
    authority: &str,
    path_and_query: &str,
    headers: &str,
    check: impl FnOnce(&[httparse::Header<'_>]) -> Result<(), Error>,
) -> Result<Response, Error> {
    let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut conn = Conn {
        stream,
        buf: BytesMut::new(),
        undecoded: false,
    };
    loop {
        if !conn.fill().await? {
            return Err(Error::new(
                "the server closed the connection before its answer",
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(&conn.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = head.code.unwrap_or(0);
                let body = framing(head.headers)?;
                if status / 100 == 2 || status == 101 {
                    check(head.headers)?;
                }
                conn.buf.advance(len);
                conn.undecoded = !conn.buf.is_empty();
                return Ok(Response { conn, status, body });
            }
            Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Error::new(format!("response head over {MAX_HEAD} bytes")));
            }
            Err(e) => return Err(Error::new(format!("unreadable response head: {e}"))),
        }
    }
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim_ascii())
}

fn framing(headers: &[httparse::Header<'_>]) -> Result<Body, Error> {
    let value =
        |name: &str| header(headers, name).map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
    if let Some(te) = value("transfer-encoding") {
        return if te.rsplit(',').next().map(str::trim) == Some("chunked") {
            Ok(Body::Chunked {
                left: 0,
                crlf: false,
            })
        } else {
            Err(Error::new(format!("unsupported Transfer-Encoding {te:?}")))
        };
    }
    match value("content-length") {
        Some(len) => match len.parse() {
            Ok(0) => Ok(Body::Done),
            Ok(n) => Ok(Body::Length(n)),
            Err(_) => Err(Error::new(format!("invalid Content-Length {len:?}"))),
        },
        None => Ok(Body::Close),
    }
}

impl Response {
    /// Reads once from the socket (unless bytes already wait) and calls `each` with every
    /// piece of body those bytes hold. Returns `Ok(false)` once the body is over.
    pub async fn read(&mut self, each: &mut impl FnMut(&[u8])) -> Result<bool, Error> {
        if self.body == Body::Done {
            return Ok(false);
        }
        if !self.conn.fill().await? {
            return match self.body {
                Body::Close => {
                    self.body = Body::Done;
                    Ok(false)
                }
                _ => Err(Error::new("the server closed the connection")),
            };
        }
        self.body = decode(self.body, &mut self.conn.buf, each)?;
        Ok(self.body != Body::Done)
    }

    /// The first bytes of the body, for an error message (bounded by the caller's
    /// deadline, since the server may keep the connection open).
    pub async fn error_text(&mut self) -> String {
        let mut text = Vec::new();
        while text.len() < ERROR_BODY {
            match self
                .read(&mut |piece: &[u8]| text.extend_from_slice(piece))
                .await
            {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        text.truncate(ERROR_BODY);
        String::from_utf8_lossy(&text).trim().to_owned()
    }
}

/// Most bytes one WebSocket message may take.
const MAX_MESSAGE: usize = 4 << 20;

/// A WebSocket client connection: whole text or binary messages, pings answered.
pub struct WebSocket {
    conn: Conn,
    /// Pongs to send once the frames of a read are parsed.
    pongs: Vec<u8>,
}

/// Opens a WebSocket on `path_and_query` over `stream`: the upgrade request, then a `101`
/// whose `Sec-WebSocket-Accept` matches the key. Any other answer is an error with its
/// status and the start of its body.
pub async fn websocket(
    stream: TcpStream,
    authority: &str,
    path_and_query: &str,
) -> Result<WebSocket, Error> {
    let key = generate_key();
    let headers = format!(
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    let accept = derive_accept_key(key.as_bytes());
    let mut resp = request(
        stream,
        authority,
        path_and_query,
        &headers,
        |headers| match header(headers, "sec-websocket-accept") {
            Some(v) if v == accept.as_bytes() => Ok(()),
            v => Err(Error::new(format!(
                "upgrade answered with Sec-WebSocket-Accept {:?}, expected {accept:?}",
                v.map(String::from_utf8_lossy)
            ))),
        },
    )
    .await?;
    if resp.status != 101 {
        let text = resp.error_text().await;
        return Err(Error::new(format!(
            "HTTP {} instead of 101 Switching Protocols: {text}",
            resp.status
        )));
    }
    Ok(WebSocket {
        conn: resp.conn,
        pongs: Vec::new(),
    })
}

impl WebSocket {
    /// Reads once from the socket (unless bytes already wait) and calls `each` with the
    /// payload of every whole text or binary message those bytes complete; answers pings.
    /// A close frame, the connection's end or a frame the generator does not read
    /// (fragmented, masked, reserved, over `MAX_MESSAGE` bytes) is an error.
    pub async fn read(&mut self, each: &mut impl FnMut(&[u8])) -> Result<(), Error> {
        if !self.conn.fill().await? {
            return Err(Error::new(
                "the server closed the connection without a close frame",
            ));
        }
        let Conn { stream, buf, .. } = &mut self.conn;
        let mut at = 0;
        let mut want = 0;
        while at < buf.len() {
            let mut cursor = Cursor::new(&buf[at..]);
            let Some((head, len)) = FrameHeader::parse(&mut cursor)? else {
                break;
            };
            let start = at + cursor.position() as usize;
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= MAX_MESSAGE)
                .ok_or_else(|| Error::new(format!("frame of {len} bytes (over {MAX_MESSAGE})")))?;
            if buf.len() < start + len {
                want = start + len - at;
                break;
            }
            let payload = &buf[start..start + len];
            at = start + len;
            if head.mask.is_some() {
                return Err(Error::new("masked frame from the server"));
            }
            match head.opcode {
                OpCode::Data(Data::Text | Data::Binary) if head.is_final => each(payload),
                OpCode::Control(Control::Ping) => {
                    let mut pong = Frame::pong(Bytes::copy_from_slice(payload));
                    pong.header_mut().mask = Some(rand_mask());
                    pong.format(&mut self.pongs)?;
                }
                OpCode::Control(Control::Pong) => {}
                OpCode::Control(Control::Close) => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    return Err(Error::new(format!(
                        "the server closed the WebSocket: {} {reason}",
                        code.map(|c| c.to_string()).unwrap_or_default()
                    )));
                }
                other => {
                    return Err(Error::new(format!(
                        "unexpected frame {other:?} (final: {}): the generator reads whole messages",
                        head.is_final
                    )));
                }
            }
        }
        buf.advance(at);
        if want > buf.len() {
            buf.reserve(want - buf.len());
        }
        if !self.pongs.is_empty() {
            stream.write_all(&self.pongs).await?;
            self.pongs.clear();
        }
        Ok(())
    }
}

impl WebSocket {
    /// Sends one text message (masked, as a client must).
    pub async fn send_text(&mut self, text: &[u8]) -> Result<(), Error> {
        let mut frame =
            Frame::message(Bytes::copy_from_slice(text), OpCode::Data(Data::Text), true);
        frame.header_mut().mask = Some(rand_mask());
        let mut out = Vec::with_capacity(text.len() + 14);
        frame.format(&mut out)?;
        self.conn.stream.write_all(&out).await?;
        Ok(())
    }
}

/// A client frame's mask: it need not be secret here (RFC 6455 asks for one against
/// proxies that cache, and the generator talks to the server directly).
fn rand_mask() -> [u8; 4] {
    (now_us() as u32).to_ne_bytes()
}

/// Decodes what `buf` holds, handing each piece of body to `each`; leaves an incomplete
/// chunk-size line in `buf`.
fn decode(mut body: Body, buf: &mut BytesMut, each: &mut impl FnMut(&[u8])) -> Result<Body, Error> {
    loop {
        match body {
            Body::Done => return Ok(body),
            Body::Close => {
                each(buf);
                buf.clear();
                return Ok(body);
            }
            Body::Length(left) => {
                let n = piece(buf, left, each);
                return Ok(if left == n {
                    Body::Done
                } else {
                    Body::Length(left - n)
                });
            }
            Body::Chunked { left, crlf } if left > 0 => {
                let n = piece(buf, left, each);
                body = Body::Chunked {
                    left: left - n,
                    crlf,
                };
                if buf.is_empty() {
                    return Ok(body);
                }
            }
            Body::Chunked { crlf: true, .. } => {
                if buf.len() < 2 {
                    return Ok(body);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::new("chunk not followed by CRLF"));
                }
                buf.advance(2);
                body = Body::Chunked {
                    left: 0,
                    crlf: false,
                };
            }
            Body::Chunked { .. } => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    buf.advance(used);
                    return Ok(Body::Done);
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    body = Body::Chunked {
                        left: size,
                        crlf: true,
                    };
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(body),
                Ok(httparse::Status::Partial) | Err(_) => {
                    return Err(Error::new("invalid chunk size line"));
                }
            },
        }
    }
}

/// Hands up to `left` bytes of `buf` to `each`, returns how many.
fn piece(buf: &mut BytesMut, left: u64, each: &mut impl FnMut(&[u8])) -> u64 {
    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    if n > 0 {
        each(&buf[..n]);
        buf.advance(n);
    }
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Body, wire: &[u8], split: usize) -> Result<(Vec<u8>, Body), Error> {
        let mut body = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for part in wire.chunks(split) {
            buf.extend_from_slice(part);
            body = decode(body, &mut buf, &mut |p: &[u8]| out.extend_from_slice(p))?;
        }
        Ok((out, body))
    }

    #[test]
    fn chunked_bodies_decode_at_every_split() {
        let wire = b"6\r\nevent:\r\n19;ext=1\r\n ready\ndata: {}\n\nid: a-1\n\r\n0\r\n\r\n";
        for split in 1..=wire.len() {
            let (out, body) = decode_all(
                Body::Chunked {
                    left: 0,
                    crlf: false,
                },
                wire,
                split,
            )
            .expect("valid");
            assert_eq!(out, b"event: ready\ndata: {}\n\nid: a-1\n", "split {split}");
            assert_eq!(body, Body::Done, "split {split}");
        }
    }

    #[test]
    fn length_and_close_bodies() {
        let (out, body) = decode_all(Body::Length(5), b"hello", 2).expect("valid");
        assert_eq!((out.as_slice(), body), (&b"hello"[..], Body::Done));
        let (out, body) = decode_all(Body::Close, b"data: 1\n\n", 3).expect("valid");
        assert_eq!((out.as_slice(), body), (&b"data: 1\n\n"[..], Body::Close));
    }

    #[test]
    fn broken_chunks_are_errors() {
        let start = Body::Chunked {
            left: 0,
            crlf: false,
        };
        assert!(decode_all(start, b"zz\r\n", 4).is_err());
        assert!(decode_all(start, b"2\r\nabXY", 8).is_err());
    }

    #[test]
    fn framing_from_headers() {
        let h = |name, value| httparse::Header { name, value };
        assert_eq!(
            framing(&[h("Transfer-Encoding", b"chunked")]).expect("chunked"),
            Body::Chunked {
                left: 0,
                crlf: false
            }
        );
        assert_eq!(
            framing(&[h("content-length", b" 12 ")]).expect("length"),
            Body::Length(12)
        );
        assert_eq!(
            framing(&[h("Content-Length", b"0")]).expect("empty"),
            Body::Done,
            "an empty body is over before a read could wait for it"
        );
        assert_eq!(framing(&[]).expect("close"), Body::Close);
        assert!(framing(&[h("Transfer-Encoding", b"gzip")]).is_err());
        assert!(framing(&[h("Content-Length", b"x")]).is_err());
    }
}

#[cfg(test)]
mod websocket_tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers the upgrade, then writes a text frame split across writes, a
    /// ping, a 200-byte binary frame (16-bit length) in the same write as the 101, and a
    /// close; the client gets the messages in order, answers the ping with a masked pong
    /// and ends with the close's code and reason.
    #[tokio::test]
    async fn messages_pings_and_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).await.expect("request");
            let req = String::from_utf8_lossy(&req[..n]).into_owned();
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("key");
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.trim().as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(&[0x82, 126, 0, 200]);
            out.extend_from_slice(&[7u8; 200]);
            out.extend_from_slice(b"\x81\x05he");
            s.write_all(&out).await.expect("101");
            s.flush().await.expect("flush");
            tokio::task::yield_now().await;
            s.write_all(b"llo\x89\x01p").await.expect("rest");
            let mut pong = [0u8; 7];
            s.read_exact(&mut pong).await.expect("pong");
            s.write_all(b"\x88\x05\x03\xe9bye").await.expect("close");
            pong
        });
        let socket = TcpStream::connect(addr).await.expect("connect");
        let mut ws = websocket(socket, &addr.to_string(), "/ws")
            .await
            .expect("upgrade");
        let mut got: Vec<Vec<u8>> = Vec::new();
        let end = loop {
            if let Err(e) = ws.read(&mut |m: &[u8]| got.push(m.to_vec())).await {
                break e.to_string();
            }
        };
        assert_eq!(got, [vec![7u8; 200], b"hello".to_vec()]);
        assert!(end.contains("1001 bye"), "{end}");
        let pong = server.await.expect("server");
        assert_eq!(pong[..2], [0x8a, 0x81], "a final, masked pong of one byte");
        assert_eq!(pong[6] ^ pong[2], b'p', "the ping's payload, masked");
    }

    #[tokio::test]
    async fn a_refused_upgrade_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = vec![0u8; 4096];
            let _ = s.read(&mut req).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nno topics")
                .await;
        });
        let socket = TcpStream::connect(addr).await.expect("connect");
        let err = websocket(socket, &addr.to_string(), "/ws")
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("HTTP 400") && err.contains("no topics"),
            "{err}"
        );
    }
}
