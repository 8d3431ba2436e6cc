//! The routes every transport shares: sending a message, health, metrics, the page,
//! the latest load-generator results, and JSON answers for unknown paths and methods.

use axum::Router;
use axum::body::{Body, HttpBody, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::LengthLimitError;
use serde::Deserialize;

use crate::error::ApiError;
use crate::room::Draft;
use crate::state::AppState;
use crate::time_limit::within;
use crate::transport::common::{self, RoomName};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room}/messages", post(send))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/results/latest", get(latest_results))
        .merge(crate::web::routes())
}

#[derive(Deserialize)]
struct SendBody {
    user: String,
    text: String,
    #[serde(default)]
    client_ts: Option<i64>,
}

/// `POST /rooms/{room}/messages` -> `201 {"id":N}`.
async fn send(
    State(state): State<AppState>,
    RoomName(room): RoomName,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Everything is checked before the room is looked up: a refused message must not
    // create a room.
    common::check_room(&room)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    // JSON escapes can make a body up to six times its text; past that it is too large
    // whatever it says.
    let limit = state.config.max_message_bytes() * 6 + 1024;
    let too_large = || ApiError::TooLarge(format!("request body is over {limit} bytes"));
    // A declared length over the limit is refused before any of the body is read (and
    // before an `Expect: 100-continue` is answered).
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    // The lean HTTP/1 path has the whole body in memory by now, read within the read
    // timeout; a body it handed to hyper (chunked, or behind `Expect`) still streams in
    // and must arrive within the same time, or it would hold its connection for ever.
    let read_timeout = state.config.timeouts().read;
    let bytes = match within(read_timeout, to_bytes(body, limit)).await {
        Some(read) => read.map_err(|e| {
            let over = std::error::Error::source(&e).is_some_and(|s| s.is::<LengthLimitError>());
            if over {
                too_large()
            } else {
                // A chunked body that breaks its framing: bad input, not a large one.
                ApiError::bad_request(format!("bad request body: {e}"))
            }
        })?,
        None => {
            return Err(ApiError::Timeout(
                "the request body did not arrive in time".into(),
            ));
        }
    };
    let body: SendBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    let draft = Draft {
        user: body.user,
        text: body.text,
        client_ts: body.client_ts,
    };
    common::check_draft(&state, &draft)?;
    let room = state.rooms.get_or_create(&room)?;
    let message = common::publish(&state, &room, &draft);
    Ok(common::json_response(
        StatusCode::CREATED,
        format!("{{\"id\":{}}}", message.id).into(),
    ))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The newest `*.json` the load generator wrote under `--results-dir`, or 204 when there
/// is none yet (an expected state, so not an error a browser would log). A newest file
/// over `--max-results-bytes` is a 500 naming it: read whole into memory, and again as
/// the answer, a stray gigabyte would cost the server twice that per request.
async fn latest_results(State(state): State<AppState>) -> Result<Response, ApiError> {
    let dir = state.config.results_dir.clone();
    let limit = state.config.max_results_bytes;
    let newest = tokio::task::spawn_blocking(move || newest_json(&dir, limit))
        .await
        .ok()
        .flatten();
    match newest {
        Some(Ok(body)) => Ok(common::json_response(StatusCode::OK, body.into())),
        Some(Err(too_large)) => Err(ApiError::Internal(too_large)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The newest run file's bytes, an error naming it if it is over `limit` bytes, or
/// `None` when there is none (or it cannot be read).
fn newest_json(dir: &std::path::Path, limit: u64) -> Option<Result<Vec<u8>, String>> {
    use std::io::Read;
    let (_, path) = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        // Through symlinks: a linked run file is a run; a folder is not.
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            meta.is_file().then_some((meta.modified().ok()?, path))
        })
        .max()?;
    let mut body = Vec::new();
    // Read to one byte past the limit: a file still growing is measured as read.
    std::fs::File::open(&path)
        .ok()?
        .take(limit + 1)
        .read_to_end(&mut body)
        .ok()?;
    if body.len() as u64 > limit {
        return Some(Err(format!(
            "the newest results file, {}, is over --max-results-bytes ({limit})",
            path.file_name().unwrap_or_default().to_string_lossy()
        )));
    }
    Some(Ok(body))
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such path".into())
}

/// Known paths asked with a method they do not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this path".into())
}
