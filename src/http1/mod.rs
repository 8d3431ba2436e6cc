//! HTTP/1.1 connections. Plain GET and POST requests (every poll, long poll, SSE
//! stream and posted message) are served by a lean loop that holds no buffer while it
//! waits; anything else (WebSocket upgrades, chunked or expected bodies, other methods,
//! HTTP/1.0, long heads) is handed, with the bytes read so far, to hyper, which serves
//! the rest of that connection. A head no server could read gets a JSON 400 here.
//!
//! hyper keeps an 8 KiB read buffer (reserved again while it waits for the next
//! request) and an 8 KiB header buffer for the whole life of a connection. At ten
//! thousand open SSE streams or held long polls those buffers were most of the
//! server's memory; here a waiting connection holds only its task (and, once it has
//! waited between two requests, its keep-alive timer).

mod host;
mod request;
mod response;
mod rewind;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::HttpBody;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures_util::{FutureExt, StreamExt};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::time_limit::within;
use response::Framing;

pub use host::{Direct, DirectAnswer, Service};
pub use rewind::{Rewind, read_first};

/// The connection under a WebSocket that hyper upgraded, taken out of hyper's box and
/// without its read buffer. Every connection hyper serves is one [`serve`] handed it,
/// so the stream is always a [`Rewind`]; `None` would mean hyper upgraded another.
pub fn upgraded_stream(upgraded: hyper::upgrade::Upgraded) -> Option<Rewind> {
    let parts = upgraded.downcast::<TokioIo<Rewind>>().ok()?;
    Some(parts.io.into_inner().after_upgrade(parts.read_buf))
}

/// A handler's wish to serve the rest of its connection itself, as an extension of its
/// answer (a `Clone` handle, as extensions must be): the lean path writes the answer's
/// head for a chunked body and `Connection: close`, then hands the socket to the
/// function, whose future ends the connection; the body is dropped unread. hyper, which
/// serves the requests the lean path does not take, knows nothing of it and writes
/// the body, so an answer that carries this must have a body that works alone too.
#[derive(Clone)]
pub struct Takeover(Arc<Mutex<Option<TakeoverFn>>>);

type TakeoverFn = Box<dyn FnOnce(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl Takeover {
    pub fn new<F>(serve: impl FnOnce(TcpStream) -> F + Send + 'static) -> Takeover
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let serve: TakeoverFn = Box::new(move |stream| Box::pin(serve(stream)));
        Takeover(Arc::new(Mutex::new(Some(serve))))
    }

    fn take(&self) -> Option<TakeoverFn> {
        self.0.lock().unwrap().take()
    }
}

/// Appends `data` as one chunk of a chunked body, as the lean path writes a body
/// (nothing for no data: a chunk of none would end the body); for a handler that took
/// its connection over ([`Takeover`]).
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    response::encode_data(out, Framing::Chunked, data);
}

/// Appends the end of a chunked body.
pub fn push_last_chunk(out: &mut Vec<u8>) {
    response::encode_end(out, Framing::Chunked);
}

/// Bytes asked of the kernel per read of a request.
const READ_CHUNK: usize = 2048;
/// Longest request head the lean loop reads; a longer one goes to hyper, which has
/// its own, larger limit.
const MAX_HEAD: usize = 16 * 1024;
/// Most body bytes gathered into one write.
const MAX_WRITE: usize = 64 * 1024;

/// The answer to a request that did not arrive within [`Timeouts::read`].
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
content-type: application/json\r\ncontent-length: 46\r\nconnection: close\r\n\r\n\
{\"error\":\"the request did not arrive in time\"}";

/// How long a client may keep a connection waiting on it.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A write that makes no progress this long (a reader that stopped reading) closes
    /// the connection, which drops the answer and frees its connection slot.
    pub write: Duration,
    /// A request's head and body must all have arrived this long after its first
    /// byte (for a new connection's first request: after the connection was accepted);
    /// otherwise it is answered 408 and the connection closed.
    pub read: Duration,
    /// A keep-alive connection that has answered its requests and receives no new
    /// one this long is closed, without an answer (none is owed). Requests in flight,
    /// held long polls and open streams are never idle.
    pub idle: Duration,
}

/// Serves one connection until the client closes it, an answer asks for `close`, or
/// `shutdown` is cancelled while no request is in flight. An answer being written when
/// shutdown comes is finished (the transports end theirs on the same token).
pub async fn serve(
    stream: TcpStream,
    service: Service,
    shutdown: CancellationToken,
    timeouts: Arc<Timeouts>,
) {
    let mut connection = Connection {
        stream,
        buf: BytesMut::new(),
        service,
        shutdown,
        timeouts,
        idle_timer: None,
    };
    // The flag a held answer reads to learn that its client has shut its sending side.
    let served = SENDING_SHUT.scope(Cell::new(false), connection.serve_requests());
    match served.await {
        Ok(Next::Hyper) => connection.hand_to_hyper().await,
        // The rest of the connection (its service, timers, any pipelined bytes) is
        // let go of first: the stream may last for hours.
        Ok(Next::Takeover(serve)) => serve(connection.into_stream()).await,
        Ok(Next::Close) | Err(_) => {}
    }
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet used. Empty, with no allocation, between requests.
    buf: BytesMut,
    service: Service,
    shutdown: CancellationToken,
    timeouts: Arc<Timeouts>,
    /// The keep-alive timer (see [`Connection::read_within`]).
    idle_timer: Option<Pin<Box<Sleep>>>,
}

enum Next {
    Close,
    Hyper,
    /// The head of an answer with a [`Takeover`] is written: the rest is the handler's.
    Takeover(TakeoverFn),
}

/// What ends a read that has to wait, besides shutdown.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    /// The request's read deadline: answered 408, then closed.
    Request(Instant),
    /// [`Timeouts::idle`] from now, between two requests: closed without an answer.
    Idle,
}

impl Connection {
    async fn serve_requests(&mut self) -> io::Result<Next> {
        let mut first = true;
        loop {
            // The first request is timed from the accept: a connection that never
            // sends one does not hold its place for ever. Later ones from their first
            // byte. The deadline lives only until the request is read, so a waiting
            // connection's state does not carry it.
            let first_request = std::mem::take(&mut first);
            let mut deadline = first_request.then(|| Instant::now() + self.timeouts.read);
            let head = match self.read_head(&mut deadline, !first_request).await? {
                Ok(head) => head,
                Err(next) => return Ok(next),
            };
            self.buf.advance(head.len);
            // The buffer grows with what arrives, not with what the head announces: a
            // client that announces 64 KiB and sends one byte holds one read's worth.
            while self.buf.len() < head.body_len {
                let at = *deadline.get_or_insert_with(|| Instant::now() + self.timeouts.read);
                match self.read_within(Wait::Request(at)).await? {
                    Some(0) | None => return Ok(Next::Close),
                    Some(_) => {}
                }
            }
            let body = self.buf.split_to(head.body_len).freeze();
            if self.buf.is_empty() {
                self.buf = BytesMut::new();
            }
            let asked_close = head.close;
            let answer = self.service.call(head.into_request(body));
            // A client that goes away while its answer is pending (a held long poll)
            // drops the handler at once, which frees its connection slot.
            let response = tokio::select! {
                // An answer that is ready is written even if the client has gone.
                biased;
                response = answer => match response {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                () = gone(&mut self.stream, &mut self.buf) => return Ok(Next::Close),
            };
            let takeover = response
                .extensions()
                .get::<Takeover>()
                .and_then(Takeover::take);
            if let Some(serve) = takeover {
                return Ok(match self.writer().write_head(response).await? {
                    true => Next::Takeover(serve),
                    false => Next::Close,
                });
            }
            let close = asked_close || asks_close(&response) || self.shutdown.is_cancelled();
            if !self.writer().write_response(response, close).await? {
                return Ok(Next::Close);
            }
            if close || self.shutdown.is_cancelled() {
                return Ok(Next::Close);
            }
        }
    }

    fn writer(&mut self) -> Writer<'_> {
        Writer {
            stream: &mut self.stream,
            buf: &mut self.buf,
            timeout: self.timeouts.write,
        }
    }

    /// The next request's head, or what to do with the connection instead. The
    /// request's `deadline` is set, if it has none yet, when part of it is there and a
    /// read has to wait for the rest: a request that arrives whole reads no clock.
    /// `between`: the connection has answered a request and waits for the next, for
    /// at most [`Timeouts::idle`] until its first byte.
    async fn read_head(
        &mut self,
        deadline: &mut Option<Instant>,
        between: bool,
    ) -> io::Result<Result<request::Head, Next>> {
        loop {
            if !self.buf.is_empty() {
                match request::parse(&self.buf) {
                    Ok(Some(head)) => return Ok(Ok(head)),
                    Ok(None) if self.buf.len() < MAX_HEAD => {
                        deadline.get_or_insert_with(|| Instant::now() + self.timeouts.read);
                    }
                    Ok(None) | Err(request::NotLean::Other) => return Ok(Err(Next::Hyper)),
                    Err(request::NotLean::Malformed(why)) => {
                        let refused = ApiError::bad_request(why).into_response();
                        let _ = self.writer().write_response(refused, true).await;
                        return Ok(Err(Next::Close));
                    }
                }
            }
            let wait = match *deadline {
                Some(at) => Wait::Request(at),
                None if between && self.buf.is_empty() => Wait::Idle,
                None => Wait::Forever,
            };
            match self.read_within(wait).await? {
                Some(0) | None => return Ok(Err(Next::Close)),
                Some(_) => {}
            }
        }
    }

    /// One read, unless shutdown comes first or `wait` ends it (`None`; a request
    /// that timed out is told so with a 408, an idle connection is just closed).
    async fn read_within(&mut self, wait: Wait) -> io::Result<Option<usize>> {
        let Connection {
            stream,
            buf,
            shutdown,
            timeouts,
            idle_timer,
            ..
        } = self;
        // Runs only once the read has to wait. A request's timer is made then, and
        // boxed so that it is not part of every waiting connection's state. The idle
        // timer is made at the first wait between two requests and pushed later at
        // each next one: tokio moves a pending timer's deadline later without
        // re-registering it (until the old deadline comes round).
        let expired = async {
            match wait {
                Wait::Forever => std::future::pending().await,
                Wait::Request(at) => {
                    Box::pin(tokio::time::sleep_until(at)).await;
                    true
                }
                Wait::Idle => {
                    let until = Instant::now() + timeouts.idle;
                    let timer = match idle_timer {
                        Some(timer) => {
                            timer.as_mut().reset(until);
                            timer
                        }
                        None => idle_timer.insert(Box::pin(tokio::time::sleep_until(until))),
                    };
                    timer.as_mut().await;
                    false
                }
            }
        };
        // Biased, the read before the timer: a read that can complete at once does not
        // make or move a timer first.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Ok(None),
            read = read_some(stream, buf) => read.map(Some),
            answer = expired => {
                if answer {
                    // Best effort: a client that sends nothing may not read either.
                    let _ = stream.try_write(REQUEST_TIMEOUT);
                }
                Ok(None)
            }
        }
    }

    fn into_stream(self) -> TcpStream {
        self.stream
    }

    async fn hand_to_hyper(self) {
        let io = rewind::Rewind::new(self.buf.freeze(), self.stream);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.read)
            .serve_connection(TokioIo::new(io), self.service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = self.shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
        }
        let _ = connection.await;
    }
}

/// The answer is written with `Connection: close` when the handler asked for it.
fn asks_close(response: &Response) -> bool {
    has_token(response.headers(), axum::http::header::CONNECTION, "close")
}

/// Whether a comma-separated header (`Connection`, `Upgrade`, ...) has `token`, in any
/// case.
pub fn has_token(
    headers: &axum::http::HeaderMap,
    name: axum::http::HeaderName,
    token: &str,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Writes one answer to the connection.
struct Writer<'a> {
    stream: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    timeout: Duration,
}

impl Writer<'_> {
    /// Writes the answer; `false` when the client went away before it was all written.
    async fn write_response(mut self, response: Response, close: bool) -> io::Result<bool> {
        let (parts, body) = response.into_parts();
        let framing = Framing::new(parts.status, body.size_hint().exact());
        let mut out = Vec::with_capacity(512);
        response::encode_head(&mut out, &parts, framing, close);
        drop(parts);
        if framing == Framing::None {
            return self.write(&out).await;
        }
        let mut frames = body.into_data_stream();
        loop {
            let next = tokio::select! {
                biased;
                next = frames.next() => next,
                // A stream does not end by itself, so requests behind it would never be
                // answered: a client that shut its sending side is done with it.
                _ = closed(self.stream, self.buf) => return Ok(false),
            };
            let mut end = false;
            match next {
                None => end = true,
                // A body that fails half-way cannot be answered any more.
                Some(Err(_)) => return Ok(false),
                Some(Ok(data)) => {
                    response::encode_data(&mut out, framing, &data);
                    // Whatever else is ready goes into the same write.
                    while out.len() < MAX_WRITE {
                        match frames.next().now_or_never() {
                            Some(Some(Ok(data))) => response::encode_data(&mut out, framing, &data),
                            Some(Some(Err(_))) => return Ok(false),
                            Some(None) => {
                                end = true;
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            if end {
                response::encode_end(&mut out, framing);
            }
            if !self.write(&out).await? {
                return Ok(false);
            }
            if end {
                return Ok(true);
            }
            // A stream waiting for its next event holds no write buffer.
            out = Vec::new();
        }
    }

    /// Writes the head of an answer whose body the handler writes itself, chunked, on
    /// a connection that ends with it ([`Takeover`]); `false` when the client went away.
    async fn write_head(mut self, response: Response) -> io::Result<bool> {
        let (parts, _body) = response.into_parts();
        let mut out = Vec::with_capacity(512);
        response::encode_head(&mut out, &parts, Framing::Chunked, true);
        self.write(&out).await
    }

    /// Writes all of `bytes`; `false` when that made no progress for the write timeout.
    /// Most writes complete at once; a timer is armed only for one that has to wait.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<bool> {
        let mut written = 0;
        while written < bytes.len() {
            let Some(n) = within(self.timeout, self.stream.write(&bytes[written..])).await else {
                return Ok(false);
            };
            let n = n?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written += n;
        }
        Ok(true)
    }
}

/// How a client's side of the connection ended while its answer was pending.
enum Closed {
    /// Closed or reset with nothing more asked.
    Gone,
    /// Shut after more requests: it may still read their answers (they are served, in
    /// order), or may have closed for good; only a write can tell.
    SendingShut,
}

/// Resolves when the client closes its end or the socket fails. Bytes that arrive
/// meanwhile (a pipelined next request) are kept for later, up to [`MAX_HEAD`].
async fn closed(stream: &mut TcpStream, buf: &mut BytesMut) -> Closed {
    loop {
        if buf.len() >= MAX_HEAD {
            return std::future::pending().await;
        }
        match read_some(stream, buf).await {
            Ok(0) if !buf.is_empty() => return Closed::SendingShut,
            Ok(0) | Err(_) => return Closed::Gone,
            Ok(_) => {}
        }
    }
}

/// Resolves when the client has gone while its answer is pending. One that shut its
/// sending side with more requests sent may still read their answers, or may have
/// closed for good; only a write can tell. Its held answer is asked to end now
/// ([`sending_shut`]), and polled again, so that it is written and the requests
/// behind it follow.
async fn gone(stream: &mut TcpStream, buf: &mut BytesMut) {
    match closed(stream, buf).await {
        Closed::Gone => {}
        Closed::SendingShut => {
            SENDING_SHUT.with(|s| s.set(true));
            tokio::task::yield_now().await;
            std::future::pending().await
        }
    }
}

tokio::task_local! {
    /// Set, for a connection on the lean path, when its client shuts its sending side.
    static SENDING_SHUT: Cell<bool>;
}

/// For a handler that holds its answer (a long poll): completes once the client has
/// shut its sending side while the answer is held, so that it is given at once. A
/// client that pipelined more requests and closed for good would otherwise keep the
/// held request, its connection slot and its socket until the hold ends, with none
/// of its own. Never completes outside the lean path's requests. It keeps no waker:
/// the connection loop has the handler polled again as soon as it has set the flag.
pub fn sending_shut() -> impl Future<Output = ()> {
    std::future::poll_fn(|_| {
        if SENDING_SHUT.try_with(Cell::get).unwrap_or(false) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// One read of what the kernel has. The bytes land in a scratch array on the stack
/// (left uninitialized: the kernel writes what it reads) and are then copied into the
/// buffer, which grows by what arrived: a connection that waits holds no buffer, and
/// a request of a few hundred bytes costs an allocation glibc serves from its
/// per-thread cache. Reserving the whole chunk in the buffer instead asked malloc for
/// 2 KiB per request, a size before which glibc consolidates its free lists (with
/// axum's box of the handler's future, then the other such allocation a poll, 3% of a
/// long-poll server's CPU). The read goes through
/// tokio's `AsyncRead`, which takes a short read to mean the socket is drained: the
/// next wait then really waits instead of costing a `recv` that finds nothing.
async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    stream.readable().await?;
    std::future::poll_fn(|cx| {
        // Lives only inside one poll, so it is no part of a waiting connection's state.
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = tokio::io::ReadBuf::uninit(&mut chunk);
        std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
    .await
}
