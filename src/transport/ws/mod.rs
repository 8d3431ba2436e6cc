//! WebSocket: `GET /rooms/{room}/ws?user=U&after=N`.
//!
//! The handshake is checked here and answered 101 through hyper. Then one task per
//! socket reads frames the client sends, pings an idle peer and closes one that stops
//! answering, and writes messages only to catch up: while the session has had every
//! message, the room's fan-out (`fanout.rs`) writes new ones to the socket itself,
//! through the socket's outbox (`outbox.rs`). The task runs tokio-tungstenite on the bare
//! connection rather than axum's `WebSocket`: that one's task held the session twice
//! over and hyper's read buffer for the socket's life (3.7 KiB per idle socket, 3.1
//! now).

use std::borrow::Cow;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use tokio::time::{Instant, MissedTickBehavior, interval_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::common::{self, QueryParams, RoomName, StrictQuery};
use super::fanout::{FanOut, WsText};
use super::outbox::{Outbox, SessionIo, tcp_info};
use crate::error::ApiError;
use crate::http1::{self, has_token};
use crate::limits::ConnectionGuard;
use crate::metrics::TransportMetrics;
use crate::room::{Batch, Draft, Subscription};
use crate::state::AppState;
use crate::time_limit::within;

pub const NAME: &str = "ws";

/// A session's socket: tungstenite on the connection the lean path handed to hyper,
/// writing through the outbox it shares with the room's fan-out.
type Socket = WebSocketStream<SessionIo>;

/// Most messages written between two flushes.
const BATCH: usize = 256;
/// Per-socket read buffer. tungstenite zero-fills it up to this size before every read
/// attempt, so it is both resident memory for every idle socket (the default, 128 KiB,
/// made each socket cost 134 KiB) and a memset per read. Clients send small frames;
/// a larger frame grows the buffer as far as it needs.
const READ_BUFFER: usize = 512;
/// Writes are buffered up to this much before they go to the socket without a flush.
const WRITE_BUFFER: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route("/rooms/{room}/ws", get(upgrade))
}

#[derive(Default)]
struct Params {
    user: Option<String>,
    after: Option<u64>,
}

impl QueryParams for Params {
    fn field(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError> {
        match name {
            "user" => common::query_text(&mut self.user, name, value),
            "after" => common::query_number(&mut self.after, name, &value),
            _ => Ok(()),
        }
    }
}

async fn upgrade(
    State(state): State<AppState>,
    RoomName(room): RoomName,
    params: Result<StrictQuery<Params>, ApiError>,
    handshake: Result<Handshake, Refused>,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.transport(NAME);
    metrics.requests.inc();
    let params = common::query(params)?;
    let handshake = match handshake {
        Ok(handshake) => handshake,
        Err(refused) => return Ok(refused.into_response()),
    };
    if let Some(user) = &params.user {
        common::check_name("user", user)?;
    }
    // The slot first: a refused socket must not leave a room behind.
    common::check_room(&room)?;
    let slot = state.connections.acquire(&metrics.open_connections)?;
    let room = state.rooms.get_or_create(&room)?;
    // Subscribed before the answer: nothing published after it is missed.
    let session = Session {
        subscription: room.subscribe(params.after),
        user: params.user,
        metrics: metrics.clone(),
        state: state.clone(),
        _slot: slot,
    };
    state.sessions.spawn(serve(handshake.on_upgrade, session));
    Ok(handshake.response)
}

/// A checked WebSocket handshake (RFC 6455 4.2.1): the 101 that accepts it, and the
/// connection once hyper has sent that answer.
struct Handshake {
    response: Response,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Refused> {
        let headers = &parts.headers;
        // The route takes HEAD with GET; a handshake is a GET alone.
        if parts.method != Method::GET {
            return Err(not_an_upgrade("the method is not GET").into());
        }
        if parts.version != Version::HTTP_11 {
            return Err(not_an_upgrade("it is not an HTTP/1.1 request").into());
        }
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(not_an_upgrade("`Connection` does not include `upgrade`").into());
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(not_an_upgrade("`Upgrade` does not include `websocket`").into());
        }
        if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
            return Err(Refused {
                error: not_an_upgrade("`Sec-WebSocket-Version` is not 13"),
                name_version: true,
            });
        }
        let key = check_key(headers)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| not_an_upgrade("this connection cannot be upgraded"))?;
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key))
            .body(Body::empty())
            .expect("a 101 with valid headers");
        Ok(Handshake {
            response,
            on_upgrade,
        })
    }
}

/// A refused handshake: a 400 saying why. One in a version the server does not speak
/// also names the one it does (RFC 6455 4.2.2).
struct Refused {
    error: ApiError,
    name_version: bool,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Refused {
            error,
            name_version: false,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if self.name_version {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }
}

fn not_an_upgrade(why: &str) -> ApiError {
    ApiError::bad_request(format!("not a WebSocket upgrade: {why}"))
}

/// RFC 6455 4.2.1: the key is 16 bytes in base64, and a server that finds otherwise
/// answers 400 instead of accepting the handshake.
fn check_key(headers: &HeaderMap) -> Result<&[u8], ApiError> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map_or(&b""[..], |v| v.as_bytes());
    let base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    if key.len() == 24 && key[..22].iter().all(base64) && key.ends_with(b"==") {
        Ok(key)
    } else {
        Err(ApiError::bad_request(
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters ending in ==)",
        ))
    }
}

/// The socket's whole life, in one task of its own: the session is held here once,
/// and the socket is the bare connection (see [`crate::http1::upgraded_stream`]) rather
/// than hyper's box around it, which would keep hyper's read buffer.
async fn serve(on_upgrade: OnUpgrade, mut session: Session) {
    let Some(stream) = on_upgrade.await.ok().and_then(http1::upgraded_stream) else {
        return;
    };
    let (read_past, stream) = stream.into_parts();
    let outbox = Outbox::new(stream, session.state.config.queue_capacity as usize);
    let config = socket_config(session.state.config.max_message_bytes());
    let io = SessionIo::new(read_past, outbox.clone());
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let room = session.subscription.room().clone();
    let _joined = room.attachment::<FanOut<WsText>>().enter(
        &room,
        &outbox,
        &session.state,
        &session.metrics,
    );
    session.run(socket, &outbox).await;
}

fn socket_config(max_message_bytes: usize) -> WebSocketConfig {
    let max_frame = 16 * max_message_bytes;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Bounded: tungstenite queues a pong for every ping it reads, and a peer that
        // pings without reading would otherwise grow the buffer without end (a
        // gigabyte in seconds). At the bound a pong replaces the one queued; a
        // batch never comes near it, as writes wait once WRITE_BUFFER is reached.
        .max_write_buffer_size(WRITE_BUFFER + 2 * max_frame)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// Where a client's frame was wrong, told back to it in an `{"error":...}` frame.
#[derive(Deserialize)]
struct Incoming {
    text: String,
    client_ts: Option<i64>,
}

struct Session {
    subscription: Subscription,
    user: Option<String>,
    metrics: TransportMetrics,
    state: AppState,
    _slot: ConnectionGuard,
}

impl Session {
    /// Serves the socket until either side ends it. Takes the session by reference: it
    /// is held once, in the task, not again in this future.
    ///
    /// While the session has every message so far it is live: the room's fan-out
    /// writes new messages to the socket and this task is not woken for them. It
    /// writes from its own subscription only to catch up (at the start, or when the
    /// fan-out hands it back), and goes live again once it has nothing left.
    async fn run(&mut self, mut socket: Socket, outbox: &Outbox) {
        let every = Duration::from_millis(self.state.config.ws_ping_ms);
        // A write that cannot finish in two ping periods means the peer is gone: every
        // write here is bounded by it (replies, pings and closes as well as messages),
        // or a peer that stops reading would hold its session, socket and slot.
        let write_limit = every * 2;
        let mut ping = interval_at(Instant::now() + every, every);
        // Ticks missed while the session was busy writing come back as one, not as a
        // burst of them (the second of which would judge a ping just sent).
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The last ping, until anything is heard from the peer.
        let mut unanswered: Option<AwaitedPing> = None;
        // Made once: a fresh cancellation future per loop would re-register every time.
        let mut stop = pin!(self.state.shutdown.clone().cancelled_owned());
        if let Some(batch) = outbox.go_live(|| self.subscription.caught_up(BATCH)) {
            if !self.catch_up(&mut socket, outbox, batch, write_limit).await {
                return;
            }
        }
        loop {
            // Biased, messages before reads: a delivery does not pay for polling a socket
            // that has nothing to read; under sustained overload frames from the client
            // wait until the reader has caught up.
            tokio::select! {
                biased;
                _ = &mut stop => {
                    close(&mut socket, CloseCode::Away, "server shutting down", write_limit).await;
                    return;
                }
                handed_back = outbox.attention() => {
                    // The subscription moves up to what the outbox took, letting go of
                    // what its queue holds up to there: when handed back, the session
                    // goes on from there, from the queue while it holds the rest (and
                    // from history for what it passed). The fan-out also wakes a live
                    // session for this every half ring of messages and whenever it
                    // leaves bytes pending, so that a queue not read while the
                    // session was live has not passed what it will need.
                    let through = handed_back.unwrap_or_else(|| outbox.cursor());
                    self.subscription.skip_to(through);
                    // What the fan-out left for the kernel to take.
                    if !in_time(write_limit, socket.flush()).await {
                        return;
                    }
                }
                batch = self.subscription.next(BATCH), if !outbox.is_live() => {
                    if !self.catch_up(&mut socket, outbox, batch, write_limit).await {
                        return;
                    }
                }
                incoming = socket.next() => {
                    unanswered = None;
                    match incoming {
                        None => return,
                        Some(Ok(Message::Text(text))) => {
                            if let Err(error) = self.publish(&text) {
                                let reply = serde_json::json!({ "error": error.to_string() }).to_string();
                                if !in_time(write_limit, socket.send(Message::Text(reply.into()))).await {
                                    return;
                                }
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            close(&mut socket, CloseCode::Unsupported, "binary frames are not accepted", write_limit).await;
                            return;
                        }
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite has queued the closing reply; send it.
                            in_time(write_limit, socket.flush()).await;
                            return;
                        }
                        // Pings are answered by tungstenite; raw frames are only ever sent.
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Err(error)) => {
                            if let Some((code, reason)) = close_for(error) {
                                close(&mut socket, code, reason, write_limit).await;
                            }
                            return;
                        }
                    }
                }
                _ = ping.tick() => {
                    if let Some(last) = unanswered.as_mut() {
                        // The last ping may still be queued behind what was written
                        // before it (a reader working through a backlog): a peer whose
                        // TCP keeps taking that in is given another period, and one
                        // more once it has the ping; one that takes nothing in, or had
                        // the ping a whole period ago, is gone.
                        if !PeerProgress::of(&socket, outbox).is_some_and(|now| last.still_reaching(now)) {
                            return;
                        }
                        continue;
                    }
                    if !in_time(write_limit, socket.send(Message::Ping(Bytes::new()))).await {
                        return;
                    }
                    unanswered = Some(AwaitedPing::sent(PeerProgress::of(&socket, outbox)));
                }
            }
        }
    }

    /// Writes `batch` and whatever else the subscription has, until the session goes
    /// live. Whether the writes finished in time.
    async fn catch_up(
        &mut self,
        socket: &mut Socket,
        outbox: &Outbox,
        mut batch: Batch,
        write_limit: Duration,
    ) -> bool {
        loop {
            if !in_time(write_limit, write_batch(socket, batch, &self.metrics)).await {
                return false;
            }
            // A reader slower than the room would keep the session here: the loop's
            // `stop` branch closes it.
            if self.state.shutdown.is_cancelled() {
                return true;
            }
            match outbox.go_live(|| self.subscription.caught_up(BATCH)) {
                None => return true,
                Some(more) => batch = more,
            }
        }
    }

    fn publish(&self, frame: &str) -> Result<(), ApiError> {
        let user = self
            .user
            .as_ref()
            .ok_or_else(|| ApiError::bad_request("open the socket with ?user= to send"))?;
        let incoming: Incoming = serde_json::from_str(frame)
            .map_err(|e| ApiError::bad_request(format!("bad message frame: {e}")))?;
        let draft = Draft {
            user: user.clone(),
            text: incoming.text,
            client_ts: incoming.client_ts,
        };
        common::check_draft(&self.state, &draft)?;
        common::publish(&self.state, self.subscription.room(), &draft);
        Ok(())
    }
}


/// Writes a gap notice and the batch's messages, then flushes once.
async fn write_batch(
    socket: &mut Socket,
    batch: Batch,
    metrics: &TransportMetrics,
) -> Result<(), tungstenite::Error> {
    if let Some(gap) = batch.gap {
        socket.feed(Message::Text(gap.json().into())).await?;
    }
    let mut bytes = 0;
    for message in &batch.messages {
        bytes += message.json.len();
        let text = Utf8Bytes::try_from(message.json.clone()).expect("message JSON is UTF-8");
        socket.feed(Message::Text(text)).await?;
    }
    socket.flush().await?;
    metrics.delivered(batch.messages.len(), bytes);
    Ok(())
}

/// How far the peer's TCP has taken in what the session wrote, from the kernel.
#[derive(Clone, Copy)]
struct PeerProgress {
    /// Bytes the peer has acknowledged since the connection opened.
    acknowledged: u64,
    /// Bytes written and not acknowledged yet, sent or still queued.
    outstanding: u64,
}

impl PeerProgress {
    /// Read from the socket; `None` where the kernel does not tell. Bytes the outbox
    /// holds for the kernel count as outstanding.
    fn of(socket: &Socket, outbox: &Outbox) -> Option<PeerProgress> {
        let fd = socket.get_ref().as_raw_fd();
        let (info, len) = tcp_info(fd)?;
        let acked_end = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
        let mut outstanding: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int for a valid descriptor.
        if len < acked_end || unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outstanding) } != 0 {
            return None;
        }
        Some(PeerProgress {
            acknowledged: info.tcpi_bytes_acked,
            outstanding: outstanding.max(0) as u64 + outbox.pending_len() as u64,
        })
    }
}

/// Where the last ping sits in what the session wrote, and how far the peer had
/// acknowledged at the last look.
struct AwaitedPing {
    /// The stream offset just past the ping: once acknowledged, the peer has it.
    ends_at: u64,
    acknowledged: u64,
}

impl AwaitedPing {
    /// Read just after the ping was written: it is the last of what is outstanding.
    /// Where the kernel does not tell, the ping counts as had at once.
    fn sent(now: Option<PeerProgress>) -> AwaitedPing {
        let now = now.unwrap_or(PeerProgress {
            acknowledged: 0,
            outstanding: 0,
        });
        AwaitedPing {
            ends_at: now.acknowledged + now.outstanding,
            acknowledged: now.acknowledged,
        }
    }

    /// Whether the peer may not have had the ping for a whole period yet: at the last
    /// look its TCP had not acknowledged it, and it has taken more in since. Records
    /// this look.
    fn still_reaching(&mut self, now: PeerProgress) -> bool {
        let reaching = self.acknowledged < self.ends_at && now.acknowledged > self.acknowledged;
        self.acknowledged = now.acknowledged;
        reaching
    }
}

/// The close code for a read error the protocol names, if any.
fn close_for(error: tungstenite::Error) -> Option<(CloseCode, &'static str)> {
    match error {
        tungstenite::Error::Capacity(_) => Some((CloseCode::Size, "frame too large")),
        tungstenite::Error::Utf8(_) => Some((CloseCode::Invalid, "text frame is not valid UTF-8")),
        // A peer that reset the connection cannot be told anything.
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        // RFC 6455 7.4.1: a frame that breaks the framing rules (reserved bits or
        // opcodes, an unmasked client frame, a fragmented or oversized control frame).
        tungstenite::Error::Protocol(_) => Some((CloseCode::Protocol, "WebSocket protocol error")),
        _ => None,
    }
}

/// Sends a close frame, giving up on a peer that does not take it within `limit`.
async fn close(socket: &mut Socket, code: CloseCode, reason: &'static str, limit: Duration) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    in_time(limit, socket.send(Message::Close(Some(frame)))).await;
}

/// Whether `write` finished, without error, within `limit`. Boxed before it is
/// awaited: a write and its timer live only while it runs, not in every idle
/// session's state (about 600 bytes for a batch's).
fn in_time<E>(
    limit: Duration,
    write: impl Future<Output = Result<(), E>>,
) -> impl Future<Output = bool> {
    let write = Box::pin(within(limit, write));
    async move { matches!(write.await, Some(Ok(()))) }
}

#[cfg(test)]
mod tests {
    use super::{AwaitedPing, PeerProgress};

    fn at(acknowledged: u64) -> PeerProgress {
        PeerProgress {
            acknowledged,
            outstanding: 0,
        }
    }

    #[test]
    fn a_silent_peer_is_waited_for_only_while_it_is_reaching_the_ping() {
        // Written with 50 bytes ahead of it and the ping's own: it ends at byte 150.
        let mut ping = AwaitedPing::sent(Some(PeerProgress {
            acknowledged: 100,
            outstanding: 50,
        }));
        assert!(ping.still_reaching(at(120)), "taking in the backlog");
        assert!(ping.still_reaching(at(160)), "has the ping since this period");
        assert!(!ping.still_reaching(at(400)), "had it a whole period: more traffic is no excuse");

        let mut stalled = AwaitedPing::sent(Some(PeerProgress {
            acknowledged: 100,
            outstanding: 50,
        }));
        assert!(!stalled.still_reaching(at(100)), "takes nothing in");
    }
}
