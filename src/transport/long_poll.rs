//! Long polling: `GET /rooms/{room}/long-poll?client=C&after=N&timeout_ms=T`, held
//! until the client's queue has a message, the timeout passes, or the server stops.

use std::borrow::Cow;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;

use super::common::{self, QueryParams, RoomName, StrictQuery};
use crate::error::ApiError;
use crate::http1::{Direct, DirectAnswer};
use crate::room::Superseded;
use crate::state::AppState;

pub const NAME: &str = "long_poll";

pub const DEFAULT_TIMEOUT_MS: u64 = 25_000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/rooms/{room}/long-poll",
        get(long_poll).head(head).fallback(other_method),
    )
}

/// A HEAD would take the client's queued messages and throw the body away.
async fn head() -> Response {
    only_get("HEAD would take the client's messages; use GET")
}

/// Any other method: the same `Allow` as HEAD's refusal (axum's own would offer HEAD).
async fn other_method() -> Response {
    only_get("method not allowed on this path")
}

fn only_get(why: &str) -> Response {
    let mut refused = ApiError::MethodNotAllowed(why.into()).into_response();
    refused
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    refused
}

#[derive(Default)]
struct Params {
    client: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
    timeout_ms: Option<u64>,
}

impl QueryParams for Params {
    fn field(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError> {
        match name {
            "client" => common::query_text(&mut self.client, name, value),
            "after" => common::query_number(&mut self.after, name, &value),
            "limit" => common::query_number(&mut self.limit, name, &value),
            "timeout_ms" => common::query_number(&mut self.timeout_ms, name, &value),
            _ => Ok(()),
        }
    }
}

async fn long_poll(
    State(state): State<AppState>,
    RoomName(room): RoomName,
    params: Result<StrictQuery<Params>, ApiError>,
) -> Result<Response, ApiError> {
    answer(state, room, common::query(params)).await
}

/// The long poll as a direct route ([`Direct`]): `GET /rooms/{room}/long-poll`, read
/// as the router would read it, without the router. Other methods on the path, and
/// paths that are not one room segment, are the router's.
pub fn direct(state: AppState) -> Direct {
    Box::new(move |method, uri| {
        if method != Method::GET {
            return None;
        }
        let room = uri.path().strip_prefix("/rooms/")?.strip_suffix("/long-poll")?;
        if room.is_empty() || room.contains('/') {
            return None;
        }
        let state = state.clone();
        let answered: DirectAnswer = match common::room_segment(room) {
            Ok(room) => {
                let params = common::read_query(uri.query().unwrap_or_default());
                Box::pin(async move { answer(state, room, params).await.into_response() })
            }
            Err(refused) => Box::pin(std::future::ready(refused.into_response())),
        };
        Some(answered)
    })
}

async fn answer(
    state: AppState,
    room: String,
    params: Result<Params, ApiError>,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.transport(NAME);
    metrics.requests.inc();
    let params = params?;
    let client = params
        .client
        .ok_or_else(|| ApiError::bad_request("client is required"))?;
    common::check_name("client", &client)?;
    let limit = common::poll_limit(params.limit)?;
    let timeout_ms = params.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms > MAX_TIMEOUT_MS {
        return Err(ApiError::bad_request(format!(
            "timeout_ms must be at most {MAX_TIMEOUT_MS}"
        )));
    }
    // The slot first: a refused poll must not leave a room or a client queue behind.
    // A poll with `timeout_ms=0` is answered at once, never held: it takes no slot.
    common::check_room(&room)?;
    let _slot = if timeout_ms > 0 {
        Some(state.connections.acquire(&metrics.open_connections)?)
    } else {
        None
    };
    let room = state.rooms.get_or_create(&room)?;
    let queue = room.client(&client)?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);

    // A held poll is answered, empty, when the server stops or the client shuts its
    // sending side.
    let (batch, last_id) = queue
        .poll(
            params.after,
            limit,
            deadline,
            &state.shutdown,
            crate::http1::sending_shut(),
        )
        .await
        .map_err(|Superseded| {
            ApiError::Conflict(format!(
                "a newer poll of client `{client}` took this one's place: \
                 a client polls one request at a time"
            ))
        })?;
    let body = common::poll_body(&batch.messages, last_id, batch.gap);
    metrics.delivered(batch.messages.len(), body.len());
    Ok(common::json_response(StatusCode::OK, body))
}
