//! A stream that first gives back bytes already read from it: what lets the lean path
//! read a request head and still hand the connection, head and all, to hyper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct Rewind {
    read: Bytes,
    inner: TcpStream,
}

impl Rewind {
    pub fn new(read: Bytes, inner: TcpStream) -> Rewind {
        Rewind { read, inner }
    }

    /// The same stream once hyper has upgraded it: `read_past` (what hyper had read
    /// beyond the handshake) comes first, then whatever hyper left unread here. An
    /// empty `read_past` is let go, and with it hyper's read buffer, which an empty
    /// slice of it would otherwise keep for the life of the connection.
    pub fn after_upgrade(self, read_past: Bytes) -> Rewind {
        let read = match (read_past.is_empty(), self.read.is_empty()) {
            (true, _) => self.read,
            (false, true) => read_past,
            (false, false) => [read_past, self.read].concat().into(),
        };
        Rewind { read, ..self }
    }
}

impl Rewind {
    /// What is to be read before the connection, and the connection.
    pub fn into_parts(self) -> (Bytes, TcpStream) {
        (self.read, self.inner)
    }
}

impl std::os::fd::AsRawFd for Rewind {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

/// Reads from `first` (bytes read past a head, to be read before the connection) into
/// `buf`, if any are left; whether it did. The buffer the head was read into is let go
/// once they are all read.
pub fn read_first(first: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if !first.has_remaining() {
        return false;
    }
    let n = first.len().min(buf.remaining());
    buf.put_slice(&first[..n]);
    first.advance(n);
    if !first.has_remaining() {
        *first = Bytes::new();
    }
    true
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if read_first(&mut self.read, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
