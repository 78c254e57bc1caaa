//! The socket as the direct fan-out and the streams see it: a small trait, so that a
//! stream can be served on any connection (a TCP socket, a hyper body, a TLS stream) and
//! unit tests can feed a writer that takes N bytes and then blocks.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Both directions of a stream's connection, usable through a shared reference: the
/// fan-out writes without waiting while the stream's task reads (never both write).
pub trait SinkIo: Send + Sync + 'static {
    /// Writes what fits now, never waiting: `WouldBlock` when nothing does.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Writes some of `buf`, or arranges for `cx` to be woken when it can.
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Reads some bytes, or arranges for `cx` to be woken when there are some.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>>;

    /// Ends the writing direction (the end of a body delimited by the close).
    fn shutdown_write(&self) -> io::Result<()>;
}

impl SinkIo for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs {
            [one] => self.try_write(one),
            _ => TcpStream::try_write_vectored(self, bufs),
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            match self.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(Shutdown::Write)
    }
}

/// Any `AsyncRead + AsyncWrite` as a [`SinkIo`], behind a mutex held for one poll at a
/// time. A write that must not wait polls with a no-op waker: the fan-out never waits,
/// and the task that does polls again with its own.
pub struct Locked<T>(Mutex<T>);

impl<T> Locked<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Locked<T> {
        Locked(Mutex::new(io))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> SinkIo for Locked<T> {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self.lock()).poll_write_vectored(&mut cx, bufs) {
            Poll::Ready(written) => written,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self.lock()).poll_shutdown(&mut cx) {
            Poll::Ready(done) => done,
            // Best effort: the connection closes when the stream is dropped anyway.
            Poll::Pending => Ok(()),
        }
    }
}

/// Writes all of `bytes`, waiting as long as it takes (callers bound it with a time-out).
pub async fn write_all(io: &dyn SinkIo, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| io.poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Resolves when the peer has gone (end of stream or an error). Anything it sends is
/// read and dropped: a stream's client sends nothing after its request. Cancel-safe.
pub async fn gone(io: &dyn SinkIo) {
    let mut scratch = [0u8; 32];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match poll_fn(|cx| io.poll_read(cx, &mut buf)).await {
            Ok(()) if !buf.filled().is_empty() => {}
            _ => return,
        }
    }
}
