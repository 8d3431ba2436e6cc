//! Server-Sent Events: `GET /rooms/{room}/events?after=N` (or `Last-Event-ID`).
//!
//! The body is a stream of ready-made event bytes: all messages waiting for this
//! reader are joined into one chunk, so a burst costs one write, not one per message.

use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::common::{self, RoomName, StrictQuery};
use crate::error::ApiError;
use crate::limits::ConnectionGuard;
use crate::metrics::TransportMetrics;
use crate::room::{Batch, Subscription, sse_event};
use crate::state::AppState;

pub const NAME: &str = "sse";

/// Reconnect delay the stream tells `EventSource` to use.
pub const RETRY_MS: u64 = 1000;
/// Most messages joined into one chunk.
const BATCH: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new().route("/rooms/{room}/events", get(events))
}

#[derive(Deserialize)]
struct Params {
    after: Option<u64>,
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
    let first = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    let body = stream::once(async move { Ok::<_, std::convert::Infallible>(first) }).chain(
        stream::unfold(stream, |mut s| async move {
            let chunk = s.next_chunk().await?;
            Some((Ok(chunk), s))
        }),
    );
    Ok((
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
        .into_response())
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
