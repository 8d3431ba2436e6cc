//! Short polling: `GET /rooms/{room}/messages?after=N&limit=L`, answered at once from
//! the room's history.

use std::borrow::Cow;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::common::{self, QueryParams, RoomName, StrictQuery};
use crate::error::ApiError;
use crate::state::AppState;

pub const NAME: &str = "poll";

pub fn routes() -> Router<AppState> {
    Router::new().route("/rooms/{room}/messages", get(poll))
}

#[derive(Default)]
struct Params {
    after: Option<u64>,
    limit: Option<usize>,
}

impl QueryParams for Params {
    fn field(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError> {
        match name {
            "after" => common::query_number(&mut self.after, name, &value),
            "limit" => common::query_number(&mut self.limit, name, &value),
            _ => Ok(()),
        }
    }
}

async fn poll(
    State(state): State<AppState>,
    RoomName(room): RoomName,
    params: Result<StrictQuery<Params>, ApiError>,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.transport(NAME);
    metrics.requests.inc();
    let params = common::query(params)?;
    let limit = common::poll_limit(params.limit)?;
    common::check_room(&room)?;
    // A read makes no room: one nobody has written to answers empty, as a new room
    // would, so mistyped names cannot use up --max-rooms.
    let (count, body) = match state.rooms.get(&room) {
        Some(room) => {
            let slice = room.history_after(params.after.unwrap_or(0), limit);
            let last_id = slice.messages.last().map_or(slice.newest, |m| m.id);
            let body = common::poll_body(&slice.messages, last_id, slice.gap);
            (slice.messages.len(), body)
        }
        None => (0, common::poll_body(&[], 0, None)),
    };
    metrics.delivered(count, body.len());
    Ok(common::json_response(StatusCode::OK, body))
}
