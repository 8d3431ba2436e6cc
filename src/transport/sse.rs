//! Server-Sent Events: `GET /rooms/{room}/events?after=N` (or `Last-Event-ID`).
//!
//! On the lean HTTP/1 path the stream takes its connection over once the answer's
//! head is written ([`http1::Takeover`]). From then on it is served as a WebSocket is:
//! while it has had every message, the room's SSE fan-out (`super::fanout`) writes
//! each new event, framed once as an HTTP chunk for every stream, to its socket
//! itself, through the socket's outbox (`super::outbox`); the stream's own task runs
//! only to catch up (at its start, or when the fan-out hands it back), for keep-alives,
//! and for its end. An answer served by hyper (a request the lean path does not take)
//! is a body of ready-made event bytes instead: all messages waiting for the reader
//! are joined into one chunk, so a burst costs one write, not one per message.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::common::{self, QueryParams, RoomName, StrictQuery};
use super::fanout::{Encoding, FanOut};
use super::outbox::Outbox;
use crate::error::ApiError;
use crate::http1;
use crate::limits::ConnectionGuard;
use crate::metrics::TransportMetrics;
use crate::room::{Batch, Published, Subscription, sse_event};
use crate::state::AppState;

pub const NAME: &str = "sse";

/// Reconnect delay the stream tells `EventSource` to use.
pub const RETRY_MS: u64 = 1000;
/// Most messages joined into one chunk.
const BATCH: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new().route("/rooms/{room}/events", get(events))
}

#[derive(Default)]
struct Params {
    after: Option<u64>,
}

impl QueryParams for Params {
    fn field(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError> {
        match name {
            "after" => common::query_number(&mut self.after, name, &value),
            _ => Ok(()),
        }
    }
}

async fn events(
    State(state): State<AppState>,
    RoomName(room): RoomName,
    headers: HeaderMap,
    params: Result<StrictQuery<Params>, ApiError>,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.transport(NAME);
    metrics.requests.inc();
    let params = common::query(params)?;
    let after = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a message id"))?,
        ),
        None => params.after,
    };
    // The slot first: a refused stream must not leave a room behind.
    common::check_room(&room)?;
    let slot = state.connections.acquire(&metrics.open_connections)?;
    let room = state.rooms.get_or_create(&room)?;
    let keep_alive = Duration::from_millis(state.config.sse_keepalive_ms);
    let stream = EventStream {
        subscription: room.subscribe(after),
        metrics: metrics.clone(),
        keep_alive,
        quiet_since: Instant::now(),
        keep_alive_timer: Box::pin(tokio::time::sleep(keep_alive)),
        stop: Box::pin(state.shutdown.clone().cancelled_owned()),
        _slot: slot,
    };
    // The stream goes to whichever takes it first: the lean path's takeover, or the
    // body hyper writes.
    let taken = Arc::new(Mutex::new(Some(stream)));
    let takeover = http1::Takeover::new({
        let (taken, state) = (taken.clone(), state.clone());
        move |socket| async move {
            let stream = taken.lock().unwrap().take();
            if let Some(stream) = stream {
                stream.serve(socket, &state).await;
            }
        }
    });
    let first = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let events = stream::once(async move { taken.lock().unwrap().take() })
        .filter_map(std::future::ready)
        .flat_map(|stream| {
            stream::unfold(stream, |mut s| async move {
                let chunk = s.next_chunk().await?;
                Some((Ok(chunk), s))
            })
        });
    let body = stream::once(async move { Ok::<_, std::convert::Infallible>(first) }).chain(events);
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response();
    response.extensions_mut().insert(takeover);
    Ok(response)
}

/// An SSE event as the fan-out writes it: one HTTP chunk of the message's event bytes.
pub struct SseChunk;

impl Encoding for SseChunk {
    fn push(out: &mut Vec<u8>, message: &Published) -> usize {
        http1::push_chunk(out, &message.sse);
        message.sse.len()
    }

    fn len(message: &Published) -> usize {
        message.sse.len() + 12
    }
}

/// `data` as one chunk of the stream's body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    http1::push_chunk(&mut out, data);
    out
}

/// One reader's stream. Dropped by hyper when the client goes away, which frees its
/// subscription and its connection slot.
struct EventStream {
    subscription: Subscription,
    metrics: TransportMetrics,
    keep_alive: Duration,
    /// When the stream last sent anything.
    quiet_since: Instant,
    // The timer and the cancellation future are made once per stream, not once per
    // chunk: re-arming a timer for every delivery costs more than the delivery.
    keep_alive_timer: Pin<Box<Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    _slot: ConnectionGuard,
}

impl EventStream {
    /// The stream's whole life on a connection the lean path handed over, the answer's
    /// head written: until the client goes away, a write makes no progress for the
    /// write timeout, or the server stops (then the body is ended properly).
    ///
    /// While the stream has every message so far it is live: the room's SSE fan-out
    /// writes new events to the socket and this task is not woken for them. It writes
    /// from its own subscription only to catch up (at the start, or when the fan-out
    /// hands it back), and goes live again once it has nothing left.
    async fn serve(mut self, socket: TcpStream, state: &AppState) {
        let outbox = Outbox::new(socket, state.config.queue_capacity as usize);
        let write_limit = Duration::from_millis(state.config.write_timeout_ms);
        // One statement: nothing of it stays in the stream's state.
        if !outbox
            .write(&chunk(format!("retry: {RETRY_MS}\n\n").as_bytes()), write_limit)
            .await
        {
            return;
        }
        let room = self.subscription.room().clone();
        let _joined = room
            .attachment::<FanOut<SseChunk>>()
            .enter(&room, &outbox, state, &self.metrics);
        if let Some(batch) = outbox.go_live(|| self.subscription.caught_up(BATCH)) {
            if !self.catch_up(&outbox, batch, write_limit, state).await {
                return;
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = &mut self.stop => {
                    outbox.close();
                    let mut end = Vec::new();
                    http1::push_last_chunk(&mut end);
                    outbox.write(&end, write_limit).await;
                    return;
                }
                handed_back = outbox.attention() => {
                    // As a WebSocket session does: the subscription moves up to what
                    // the outbox took, and what the fan-out left for the kernel is
                    // written here.
                    let through = handed_back.unwrap_or_else(|| outbox.cursor());
                    self.subscription.skip_to(through);
                    if !outbox.flush(write_limit).await {
                        return;
                    }
                }
                batch = self.subscription.next(BATCH), if !outbox.is_live() => {
                    if !self.catch_up(&outbox, batch, write_limit, state).await {
                        return;
                    }
                }
                () = outbox.peer_closed() => return,
                _ = &mut self.keep_alive_timer => {
                    // The fan-out's writes are not this task's: the outbox says when
                    // the last was.
                    let now = Instant::now();
                    if let Some(at) = outbox.offered_at() {
                        self.quiet_since = self.quiet_since.max(at);
                    }
                    let due = self.quiet_since + self.keep_alive;
                    if now >= due {
                        if !outbox.write(&chunk(b": keep-alive\n\n"), write_limit).await {
                            return;
                        }
                        self.quiet_since = now;
                    }
                    self.keep_alive_timer.as_mut().reset(self.quiet_since + self.keep_alive);
                }
            }
        }
    }

    /// Writes `batch` and whatever else the subscription has, until the stream goes
    /// live. Whether the writes finished in time.
    async fn catch_up(
        &mut self,
        outbox: &Outbox,
        mut batch: Batch,
        limit: Duration,
        state: &AppState,
    ) -> bool {
        loop {
            if !outbox.write(&chunk(&self.encode(batch)), limit).await {
                return false;
            }
            self.quiet_since = Instant::now();
            // A reader slower than the room would keep the stream here: the loop's
            // `stop` branch ends it.
            if state.shutdown.is_cancelled() {
                return true;
            }
            match outbox.go_live(|| self.subscription.caught_up(BATCH)) {
                None => return true,
                Some(more) => batch = more,
            }
        }
    }

    /// The next chunk to write, or `None` when the server is stopping.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                biased;
                _ = &mut self.stop => return None,
                batch = self.subscription.next(BATCH) => {
                    self.quiet_since = Instant::now();
                    return Some(self.encode(batch));
                }
                _ = &mut self.keep_alive_timer => {
                    let due = self.quiet_since + self.keep_alive;
                    let now = Instant::now();
                    if now >= due {
                        self.quiet_since = now;
                        self.keep_alive_timer.as_mut().reset(now + self.keep_alive);
                        return Some(Bytes::from_static(b": keep-alive\n\n"));
                    }
                    self.keep_alive_timer.as_mut().reset(due);
                }
            }
        }
    }

    fn encode(&self, batch: Batch) -> Bytes {
        if let (None, [only]) = (batch.gap, batch.messages.as_slice()) {
            self.metrics.delivered(1, only.sse.len());
            return only.sse.clone();
        }
        let size: usize = batch.messages.iter().map(|m| m.sse.len()).sum();
        let mut out = BytesMut::with_capacity(size + 64);
        if let Some(gap) = batch.gap {
            out.put_slice(&sse_event(None, "gap", gap.json().as_bytes()));
        }
        for message in &batch.messages {
            out.put_slice(&message.sse);
        }
        self.metrics.delivered(batch.messages.len(), out.len());
        out.freeze()
    }
}
