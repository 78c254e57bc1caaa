//! Where to connect, and how: TCP with an optional source address, HTTP/1.1 on top.

use std::net::{IpAddr, SocketAddr};

use hyper::Uri;
use tokio::net::{TcpSocket, TcpStream};

use crate::Error;

/// A parsed `http://host:port/prefix` base URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved address.
    pub addr: SocketAddr,
    /// `host:port` as given, for the Host header and WebSocket URLs.
    pub authority: String,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

impl Target {
    /// Parses and resolves an `http://` URL.
    pub async fn resolve(url: &str) -> Result<Target, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::new(format!("invalid URL {url:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            other => {
                return Err(Error::new(format!(
                    "URL {url:?}: scheme {other:?} is not supported (only http://, no TLS)"
                )));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::new(format!("URL {url:?} has no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::new(format!("cannot resolve {host}: {e}")))?
            .collect::<Vec<_>>();
        addrs.sort_by_key(|a| !a.is_ipv4());
        let addr = *addrs
            .first()
            .ok_or_else(|| Error::new(format!("{host} resolves to no address")))?;
        Ok(Target {
            addr,
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Whether the server is on loopback (so that children may bind 127.0.0.x).
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// Opens a TCP connection, bound to `source` (any port) when given. Nagle is off, and the
/// socket closes with a reset, so that thousands of closing subscribers leave no
/// TIME_WAIT entries holding local ports for the next run.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.set_zero_linger()?;
    Ok(stream)
}

/// A hyper HTTP/1.1 client connection over `stream`: the request sender and the
/// connection future (to be polled, in the same task or another).
pub async fn http1<B>(
    stream: TcpStream,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<B>,
        hyper::client::conn::http1::Connection<hyper_util::rt::TokioIo<TcpStream>, B>,
    ),
    Error,
>
where
    B: hyper::body::Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::client::conn::http1::Builder::new()
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| Error::new(format!("HTTP handshake: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_urls() {
        let t = Target::resolve("http://127.0.0.1:3990/realtime/")
            .await
            .expect("valid");
        assert_eq!(t.addr, "127.0.0.1:3990".parse().expect("addr"));
        assert_eq!(t.authority, "127.0.0.1:3990");
        assert_eq!(t.prefix, "/realtime");
        let t = Target::resolve("http://localhost").await.expect("valid");
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.prefix, "");
        assert!(t.is_loopback());
        assert!(Target::resolve("https://127.0.0.1").await.is_err());
        assert!(Target::resolve("not a url").await.is_err());
    }
}
