//! WebSocket: `GET /rooms/{room}/ws?user=U&after=N`.
//!
//! One task per socket owns both directions: it writes whatever the subscription has
//! ready as one batch with one flush, reads frames the client sends, pings an idle
//! peer and closes one that stops answering.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::time::{Instant, interval_at};
use tokio_tungstenite::tungstenite;

use super::common::{self, RoomName, StrictQuery};
use crate::error::ApiError;
use crate::limits::ConnectionGuard;
use crate::metrics::TransportMetrics;
use crate::room::{Batch, Draft, Subscription};
use crate::state::AppState;
use crate::time_limit::within;

pub const NAME: &str = "ws";

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

#[derive(Deserialize)]
struct Params {
    user: Option<String>,
    after: Option<u64>,
}

async fn upgrade(
    State(state): State<AppState>,
    RoomName(room): RoomName,
    params: Result<StrictQuery<Params>, ApiError>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.transport(NAME);
    metrics.requests.inc();
    let params = common::query(params)?;
    let upgrade = upgrade.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_key(&headers)?;
    if let Some(user) = &params.user {
        common::check_name("user", user)?;
    }
    // The slot first: a refused socket must not leave a room behind.
    common::check_room(&room)?;
    let slot = state.connections.acquire(&metrics.open_connections)?;
    let room = state.rooms.get_or_create(&room)?;
    let subscription = room.subscribe(params.after);
    let max_frame = 16 * state.config.max_message_bytes();
    let session = Session {
        subscription,
        user: params.user,
        metrics: metrics.clone(),
        state: state.clone(),
        _slot: slot,
    };
    let tracker = state.sessions.token();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Bounded: tungstenite queues a pong for every ping it reads, and a peer that
        // pings without reading would otherwise grow the buffer without end (a
        // gigabyte in seconds). At the bound a pong replaces the one queued; a
        // batch never comes near it, as writes wait once WRITE_BUFFER is reached.
        .max_write_buffer_size(WRITE_BUFFER + 2 * max_frame)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| async move {
            session.run(socket).await;
            drop(tracker);
        }))
}

/// RFC 6455 4.2.1: the key is 16 bytes in base64, and a server that finds otherwise
/// answers 400 instead of accepting the handshake (axum checks only that it is there).
fn check_key(headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map_or(&b""[..], |v| v.as_bytes());
    let base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    if key.len() == 24 && key[..22].iter().all(base64) && key.ends_with(b"==") {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters ending in ==)",
        ))
    }
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
    async fn run(mut self, mut socket: WebSocket) {
        let every = Duration::from_millis(self.state.config.ws_ping_ms);
        // A write that cannot finish in two ping periods means the peer is gone: every
        // write here is bounded by it (replies, pings and closes as well as messages),
        // or a peer that stops reading would hold its session, socket and slot.
        let write_limit = every * 2;
        let mut ping = interval_at(Instant::now() + every, every);
        let mut heard_since_ping = true;
        // Made once: a fresh cancellation future per loop would re-register every time.
        let mut stop = pin!(self.state.shutdown.clone().cancelled_owned());
        loop {
            // Biased, messages before reads: a delivery does not pay for polling a socket
            // that has nothing to read; under sustained overload frames from the client
            // wait until the reader has caught up.
            tokio::select! {
                biased;
                _ = &mut stop => {
                    close(&mut socket, close_code::AWAY, "server shutting down", write_limit).await;
                    return;
                }
                batch = self.subscription.next(BATCH) => {
                    if !in_time(write_limit, write_batch(&mut socket, batch, &self.metrics)).await {
                        return;
                    }
                }
                incoming = socket.recv() => {
                    heard_since_ping = true;
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
                            close(&mut socket, close_code::UNSUPPORTED, "binary frames are not accepted", write_limit).await;
                            return;
                        }
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite has queued the closing reply; send it.
                            in_time(write_limit, socket.flush()).await;
                            return;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Err(error)) => {
                            if let Some((code, reason)) = close_for(error) {
                                close(&mut socket, code, reason, write_limit).await;
                            }
                            return;
                        }
                    }
                }
                _ = ping.tick() => {
                    if !heard_since_ping {
                        return;
                    }
                    heard_since_ping = false;
                    if !in_time(write_limit, socket.send(Message::Ping(Bytes::new()))).await {
                        return;
                    }
                }
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
    socket: &mut WebSocket,
    batch: Batch,
    metrics: &TransportMetrics,
) -> Result<(), axum::Error> {
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

/// The close code for a read error the protocol names, if any.
fn close_for(error: axum::Error) -> Option<(u16, &'static str)> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((close_code::SIZE, "frame too large")),
        tungstenite::Error::Utf8(_) => Some((close_code::INVALID, "text frame is not valid UTF-8")),
        // A peer that reset the connection cannot be told anything.
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => None,
        // RFC 6455 7.4.1: a frame that breaks the framing rules (reserved bits or
        // opcodes, an unmasked client frame, a fragmented or oversized control frame).
        tungstenite::Error::Protocol(_) => Some((close_code::PROTOCOL, "WebSocket protocol error")),
        _ => None,
    }
}

/// Sends a close frame, giving up on a peer that does not take it within `limit`.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, limit: Duration) {
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
