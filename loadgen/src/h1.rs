//! A simulated user's own HTTP/1.1 connection: `GET` requests with keep-alive, a
//! streamed body (SSE) and the WebSocket upgrade, read and written by the user's task
//! itself (a subscribed WebSocket's socket is then handed to the worker's pump,
//! `crate::pump`).
//!
//! Users do not go through hyper's client: with it every message a user receives
//! costs two task wake-ups (hyper's connection task, then the user's), a channel hop
//! and a `Bytes` split, which together cost the loadgen more than reading the message.
//! Here the bytes are read straight into the connection's buffer and parsed in place.
//! Every byte read is counted, as on the hyper connections (`crate::conn`).

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake;

use crate::conn::connect;
use crate::error::ClientError;
use crate::target::Target;

/// The read buffer's size: room for any answer head, small enough for 10,000 users.
const BUF: usize = 4096;
/// Most header lines an answer may have.
const MAX_HEADERS: usize = 32;

/// One user's connection.
pub struct Conn {
    stream: TcpStream,
    bytes: Arc<AtomicU64>,
    host: String,
    /// Bytes read; those before `start` are used.
    buf: Vec<u8>,
    start: usize,
    /// The request being written and the last body read, kept for their allocations.
    req: Vec<u8>,
    body: Vec<u8>,
    /// Whether the server lets another request follow.
    reusable: bool,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// At the end of the connection.
    Close,
    /// It has ended.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many data bytes of the chunk are left.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer lines, up to an empty one, are next.
    Trailers,
}

/// An answer's head, as far as a user needs it.
pub(crate) struct Head {
    pub status: u16,
    pub framing: Framing,
    event_stream: bool,
    /// `Sec-WebSocket-Accept`, on an upgrade's answer.
    accept: Option<String>,
    /// Whether the server lets another request follow on the connection.
    pub reusable: bool,
}

/// The head of the answer at the start of `buf` and its length, passing over the 1xx
/// answers (but 101) before it; `None` until it is whole.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ClientError> {
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let parsed = resp
            .parse(&buf[at..])
            .map_err(|e| bad(&format!("answer head: {e}")))?;
        let httparse::Status::Complete(len) = parsed else {
            return Ok(None);
        };
        at += len;
        let status = resp.code.unwrap_or(0);
        let version = resp.version.unwrap_or(1);
        let (mut length, mut chunked, mut close, mut event_stream) = (None, false, false, false);
        let mut accept = None;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| bad("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("two content-lengths"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                close |= value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case("close"));
            } else if h.name.eq_ignore_ascii_case("content-type") {
                event_stream = value.starts_with("text/event-stream");
            } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
                accept = Some(value.to_owned());
            }
        }
        // 1xx answers other than 101 precede the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = if status == 101 || status == 204 || status == 304 {
            Framing::Done
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        let head = Head {
            status,
            framing,
            event_stream,
            accept,
            reusable: !(close || version == 0 || framing == Framing::Close),
        };
        return Ok(Some((head, at)));
    }
}

/// Appends a `GET` request to `out`: its target as `target` writes it, the `host`
/// line, `extra` header lines (each ending in CRLF) and the blank line.
pub(crate) fn write_get(
    out: &mut Vec<u8>,
    host: &str,
    extra: &str,
    target: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(b"GET ");
    target(out);
    for part in [" HTTP/1.1\r\nhost: ", host, "\r\n", extra, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
}

fn io_err(e: io::Error) -> ClientError {
    ClientError::Io(e)
}

fn bad(why: &str) -> ClientError {
    ClientError::Protocol(why.to_owned())
}

impl Conn {
    /// Connects to `target`; what the connection reads is added to `bytes`.
    pub async fn open(
        target: &Target,
        source: Option<IpAddr>,
        bytes: Arc<AtomicU64>,
    ) -> Result<Conn, ClientError> {
        let stream = connect(target, source).await?;
        Ok(Conn {
            stream,
            bytes,
            host: target.authority.clone(),
            buf: Vec::with_capacity(BUF),
            start: 0,
            req: Vec::new(),
            body: Vec::new(),
            reusable: true,
        })
    }

    /// Reads more bytes into the buffer; how many (0 at the end of the connection).
    async fn fill(&mut self) -> Result<usize, ClientError> {
        self.fill_to(0).await
    }

    /// [`Conn::fill`], with room for at least `want` unread bytes in the buffer.
    pub(crate) async fn fill_to(&mut self, want: usize) -> Result<usize, ClientError> {
        drop_consumed(&mut self.buf, &mut self.start);
        if self.buf.capacity() - self.buf.len() < BUF / 4 {
            self.buf.reserve(BUF);
        }
        if self.buf.capacity() < want {
            self.buf.reserve(want - self.buf.len());
        }
        let n = self.stream.read_buf(&mut self.buf).await.map_err(io_err)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Sends `GET path` with `extra` header lines and reads the answer's head.
    async fn request(&mut self, path: &str, extra: &str) -> Result<Head, ClientError> {
        self.send(path, extra).await?;
        self.read_head().await
    }

    /// Writes `GET path` with `extra` header lines.
    async fn send(&mut self, path: &str, extra: &str) -> Result<(), ClientError> {
        if !self.reusable {
            return Err(ClientError::Closed);
        }
        self.req.clear();
        write_get(&mut self.req, &self.host, extra, |out| {
            out.extend_from_slice(path.as_bytes())
        });
        self.stream.write_all(&self.req).await.map_err(io_err)
    }

    /// Reads the head of the answer to the request sent last.
    async fn read_head(&mut self) -> Result<Head, ClientError> {
        loop {
            let Some((head, len)) = parse_head(&self.buf[self.start..])? else {
                if self.buf.len() - self.start >= 64 * 1024 {
                    return Err(bad("answer head too long"));
                }
                if self.fill().await? == 0 {
                    return Err(ClientError::Closed);
                }
                continue;
            };
            self.start += len;
            if !head.reusable {
                self.reusable = false;
            }
            return Ok(head);
        }
    }

    /// [`decode`] on the connection's buffer.
    fn decode(
        &mut self,
        framing: Framing,
        out: &mut impl FnMut(&[u8]),
    ) -> Result<Framing, ClientError> {
        decode(&self.buf, &mut self.start, framing, out)
    }

    /// `GET path`, expecting `200`; the whole body, until the next request.
    pub async fn get_body(&mut self, path: &str) -> Result<&[u8], ClientError> {
        self.send_get(path).await?;
        self.read_body(path).await
    }

    /// Writes `GET path`; its answer is read with [`Conn::read_body`], or by the
    /// worker's pump once the socket is handed over.
    pub async fn send_get(&mut self, path: &str) -> Result<(), ClientError> {
        self.send(path, "").await
    }

    /// Reads the answer to `GET path` (sent with [`Conn::send_get`]), expecting `200`;
    /// the whole body, until the next request.
    pub async fn read_body(&mut self, path: &str) -> Result<&[u8], ClientError> {
        let head = self.read_head().await?;
        expect(&head, 200, path).inspect_err(|_| self.reusable = false)?;
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        let mut framing = head.framing;
        let result = loop {
            match self.decode(framing, &mut |b| body.extend_from_slice(b)) {
                Ok(Framing::Done) => break Ok(()),
                Ok(f) => framing = f,
                Err(e) => break Err(e),
            }
            match self.fill().await {
                Ok(0) if framing == Framing::Close => break Ok(()),
                Ok(0) => break Err(ClientError::Closed),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.body = body;
        if result.is_err() {
            self.reusable = false;
        }
        result.map(|()| &self.body[..])
    }

    /// The room's newest id (a short poll with `after` beyond any id).
    pub async fn newest(&mut self, room: &str) -> Result<u64, ClientError> {
        let body = self.get_body(&crate::wire::newest_path(room)).await?;
        crate::wire::last_id(body).map_err(|_| bad("short poll answer is not a page"))
    }

    /// `GET path` answered with `200 text/event-stream`: its body, as it comes.
    pub async fn stream(mut self, path: &str) -> Result<Stream, ClientError> {
        let head = self.request(path, "").await?;
        expect(&head, 200, path)?;
        if !head.event_stream {
            return Err(bad(&format!("{path} is not text/event-stream")));
        }
        self.reusable = false;
        Ok(Stream {
            conn: self,
            framing: head.framing,
        })
    }

    /// Upgrades the connection to a WebSocket with a `GET path`; the connection, to
    /// be read and written as the socket (`crate::transport::ws`).
    pub async fn upgrade(mut self, path: &str) -> Result<Conn, ClientError> {
        let key = handshake::client::generate_key();
        let extra = format!(
            "connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: {key}\r\n"
        );
        let head = self.request(path, &extra).await?;
        expect(&head, 101, path)?;
        if head.accept.as_deref() != Some(&handshake::derive_accept_key(key.as_bytes())) {
            return Err(bad(
                "the upgrade's sec-websocket-accept does not match its key",
            ));
        }
        self.reusable = false;
        self.req = Vec::new();
        self.body = Vec::new();
        Ok(self)
    }

    /// The `host` header's value.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The bytes read and not used yet.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` more bytes as used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Writes all of `bytes`.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await.map_err(io_err)
    }

    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// The socket, out of tokio's hands (non-blocking), with the bytes read and not
    /// used yet and the count its reads are added to: for the worker's pump
    /// (`crate::pump`).
    pub(crate) fn into_parts(self) -> io::Result<Parts> {
        let mut unread = self.buf;
        unread.drain(..self.start);
        Ok((self.stream.into_std()?, unread, self.bytes))
    }
}

/// Takes body bytes out of `buf[*start..]` (moving `start` past them), handing the
/// data to `out`; the framing after them. Stops when the body has ended or `buf` holds
/// no more of it: what is left is at most the start of a chunk's line or its CRLF.
pub(crate) fn decode(
    buf: &[u8],
    start: &mut usize,
    mut framing: Framing,
    out: &mut impl FnMut(&[u8]),
) -> Result<Framing, ClientError> {
    loop {
        let avail = &buf[*start..];
        match framing {
            Framing::Done => return Ok(framing),
            Framing::Close => {
                out(avail);
                *start = buf.len();
                return Ok(framing);
            }
            Framing::Length(0) => return Ok(Framing::Done),
            Framing::Length(n) | Framing::Chunked(Chunk::Data(n)) => {
                if avail.is_empty() {
                    return Ok(framing);
                }
                let take = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                out(&avail[..take]);
                *start += take;
                let left = n - take as u64;
                framing = match framing {
                    Framing::Length(_) => Framing::Length(left),
                    _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                    _ => Framing::Chunked(Chunk::Data(left)),
                };
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if avail.len() < 2 {
                    return Ok(framing);
                }
                if &avail[..2] != b"\r\n" {
                    return Err(bad("chunk not followed by CRLF"));
                }
                *start += 2;
                framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(state @ (Chunk::Size | Chunk::Trailers)) => {
                let Some(eol) = avail.windows(2).position(|w| w == b"\r\n") else {
                    if avail.len() > 1024 {
                        return Err(bad("chunk line too long"));
                    }
                    return Ok(framing);
                };
                let line = &avail[..eol];
                *start += eol + 2;
                framing = if state == Chunk::Trailers {
                    if line.is_empty() {
                        Framing::Done
                    } else {
                        framing
                    }
                } else {
                    let hex = line.split(|&b| b == b';').next().unwrap_or(line);
                    let hex = std::str::from_utf8(hex).map_err(|_| bad("chunk size"))?;
                    match u64::from_str_radix(hex.trim(), 16) {
                        Ok(0) => Framing::Chunked(Chunk::Trailers),
                        Ok(n) => Framing::Chunked(Chunk::Data(n)),
                        Err(_) => return Err(bad("chunk size")),
                    }
                };
            }
        }
    }
}

/// A connection's socket out of tokio's hands (non-blocking), the bytes read from it
/// and not used yet, and the count its reads are added to.
pub(crate) type Parts = (std::net::TcpStream, Vec<u8>, Arc<AtomicU64>);

fn expect(head: &Head, want: u16, path: &str) -> Result<(), ClientError> {
    if head.status == want {
        Ok(())
    } else {
        Err(ClientError::status(head.status, path))
    }
}

/// A streamed answer body.
pub struct Stream {
    conn: Conn,
    framing: Framing,
}

impl Stream {
    /// Waits for more of the body and hands what came to `out`; `Closed` at its end.
    pub async fn read(&mut self, mut out: impl FnMut(&[u8])) -> Result<(), ClientError> {
        loop {
            if self.buffered(&mut out)? {
                return Ok(());
            }
            if self.framing == Framing::Done || self.conn.fill().await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Hands the body bytes already read to `out`, without reading; whether there
    /// were any.
    pub fn buffered(&mut self, mut out: impl FnMut(&[u8])) -> Result<bool, ClientError> {
        let mut got = false;
        self.framing = self.conn.decode(self.framing, &mut |b: &[u8]| {
            got |= !b.is_empty();
            out(b);
        })?;
        Ok(got)
    }

    /// Whether the body has ended.
    pub fn ended(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.conn.raw_fd()
    }

    /// [`Conn::into_parts`], and where the body's framing is.
    pub(crate) fn into_parts(self) -> io::Result<(Parts, Framing)> {
        Ok((self.conn.into_parts()?, self.framing))
    }
}

/// Drops the bytes of `buf` before `start` (already used), so the unused rest begins
/// at 0 and the buffer's room can be reused.
pub(crate) fn drop_consumed(buf: &mut Vec<u8>, start: &mut usize) {
    if *start == buf.len() {
        buf.clear();
    } else if *start > 0 {
        buf.drain(..*start);
    }
    *start = 0;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each request with the next of `answers`, written a few
    /// bytes at a time; a connection to it.
    async fn serve(answers: &'static [&'static [u8]]) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut req = Vec::new();
                while !req.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read(&mut b).await.unwrap() == 0 {
                        return;
                    }
                    req.push(b[0]);
                }
                for piece in answer.chunks(3) {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let target = Target::parse(&addr.to_string()).unwrap();
        Conn::open(&target, None, Default::default()).await.unwrap()
    }

    #[tokio::test]
    async fn bodies_by_length_and_by_chunks_on_one_connection() {
        let mut c = serve(&[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        assert_eq!(c.get_body("/a").await.unwrap(), b"hello");
        assert_eq!(c.get_body("/b").await.unwrap(), b"hello world");
        assert!(matches!(
            c.get_body("/c?x=1").await,
            Err(ClientError::Status { status: 404, ref path }) if path == "/c"
        ));
    }

    #[tokio::test]
    async fn an_upgrade_whose_accept_does_not_match_its_key_is_refused() {
        let c = serve(&[
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
            connection: upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        ])
        .await;
        assert!(matches!(
            c.upgrade("/ws").await,
            Err(ClientError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn a_stream_hands_over_its_body_as_it_comes_until_it_ends() {
        let c = serve(&[b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n4\r\ndata\r\n3\r\n: x\r\n0\r\n\r\n"])
        .await;
        let mut s = c.stream("/events").await.unwrap();
        let mut got = Vec::new();
        let end = loop {
            if let Err(e) = s.read(|b| got.extend_from_slice(b)).await {
                break e;
            }
        };
        assert_eq!(got, b"data: x");
        assert!(matches!(end, ClientError::Closed));
    }
}
