//! An HTTP/1.1 connection for the senders and the run's own checks: a TCP stream
//! (optionally from a chosen source address) wrapped so that every byte read is
//! counted, driven by hyper's connection-level client. Keep-alive requests and JSON
//! bodies go over it. Simulated users have their own, leaner connection (`crate::h1`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::error::ClientError;
use crate::target::Target;

/// `after` beyond any id: a short poll with it answers the room's newest id.
pub const NOW: u64 = 9_007_199_254_740_991;

/// How long a connect may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may wait for its whole answer (a stream: for its head). A
/// server that takes a request and never answers must not hold a run past its end.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `request`'s outcome, or [`ClientError::Timeout`] after [`ANSWER_TIMEOUT`].
pub(crate) async fn answered<T>(
    request: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(ANSWER_TIMEOUT, request)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

/// A TCP stream that adds every byte it reads to a shared counter.
pub struct Counted {
    inner: TcpStream,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP connection to `target` (from `source` if given), within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(
    target: &Target,
    source: Option<IpAddr>,
) -> Result<TcpStream, ClientError> {
    tokio::time::timeout(CONNECT_TIMEOUT, tcp(target.addr, source))
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(ClientError::Connect)
}

async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
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
    Ok(stream)
}

/// An open HTTP/1.1 connection to one target.
pub struct Http {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Http {
    /// Connects to `target`; what the connection reads is added to `bytes`. The
    /// connection is driven by a task on the current `LocalSet`.
    pub async fn open(
        target: &Target,
        source: Option<IpAddr>,
        bytes: Arc<AtomicU64>,
    ) -> Result<Http, ClientError> {
        let stream = connect(target, source).await?;
        let io = TokioIo::new(Counted {
            inner: stream,
            bytes,
        });
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::task::spawn_local(async move {
            // Errors reach the user through its requests.
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&target.authority)
            .map_err(|e| ClientError::Protocol(format!("bad host: {e}")))?;
        Ok(Http { sender, host })
    }

    /// Whether the server has not closed the connection (as far as hyper has seen).
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().expect("paths are built from checked parts");
        req.headers_mut().insert(HOST, self.host.clone());
        req
    }

    /// Sends `req` and returns the answer's head; its body is still to be read.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// `GET path`, expecting `200`; the answer's head.
    pub async fn get(&mut self, path: &str) -> Result<Response<Incoming>, ClientError> {
        let req = self.request(Method::GET, path, Bytes::new());
        let resp = self.send(req).await?;
        expect_status(resp, StatusCode::OK, path)
    }

    /// `GET path`, expecting `200`; the whole body, within [`ANSWER_TIMEOUT`].
    pub async fn get_body(&mut self, path: &str) -> Result<Bytes, ClientError> {
        answered(async {
            let resp = self.get(path).await?;
            Ok(resp.into_body().collect().await?.to_bytes())
        })
        .await
    }

    /// `POST path` with a JSON body; the status and the whole answer body.
    pub async fn post_json(
        &mut self,
        path: &str,
        body: String,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut req = self.request(Method::POST, path, Bytes::from(body));
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let resp = self.send(req).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// Opens `GET path` and closes it once the head has come: `Ok` for a `200`, else
    /// the status and the answer's body, as the server gave them (within
    /// [`ANSWER_TIMEOUT`]).
    pub async fn try_open(&mut self, path: &str) -> Result<Result<(), String>, ClientError> {
        let req = self.request(Method::GET, path, Bytes::new());
        answered(async {
            let resp = self.send(req).await?;
            let status = resp.status();
            if status == StatusCode::OK {
                return Ok(Ok(()));
            }
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(Err(said(status, &body)))
        })
        .await
    }

    /// The room's newest id (a short poll with `after` beyond any id).
    pub async fn newest(&mut self, room: &str) -> Result<u64, ClientError> {
        let body = self.get_body(&crate::wire::newest_path(room)).await?;
        crate::wire::last_id(&body)
            .map_err(|_| ClientError::Protocol("short poll answer is not a page".into()))
    }
}

/// A refusal as the server said it: the status and the answer's body.
pub(crate) fn said(status: StatusCode, body: &[u8]) -> String {
    format!("{status} {}", String::from_utf8_lossy(body).trim())
}

fn expect_status(
    resp: Response<Incoming>,
    want: StatusCode,
    path: &str,
) -> Result<Response<Incoming>, ClientError> {
    if resp.status() == want {
        Ok(resp)
    } else {
        Err(ClientError::status(resp.status().as_u16(), path))
    }
}
