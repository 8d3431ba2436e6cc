//! What the transports share: name checks, the room and query extractors with JSON
//! errors, and the poll answer body used by short and long polling alike.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::room::{Draft, Gap, Published, Room};
use crate::state::Shared;

/// Most messages in one poll answer, and the default.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

/// `[A-Za-z0-9_-]{1,64}`.
pub fn check_room(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(bad_room()) }
}

fn bad_room() -> ApiError {
    ApiError::bad_request("room must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")
}

/// 1 to 64 characters of UTF-8 with no control characters (users and client ids).
pub fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if (1..=64).contains(&chars) && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be 1 to 64 characters with no control characters"
        )))
    }
}

/// 1 to `max` bytes; too long is 413, empty is 400.
pub fn check_text(text: &str, max: usize) -> Result<(), ApiError> {
    if text.is_empty() {
        return Err(ApiError::bad_request("text must not be empty"));
    }
    if text.len() > max {
        return Err(ApiError::TooLarge(format!(
            "text is {} bytes; the limit is {max}",
            text.len()
        )));
    }
    Ok(())
}

/// Checks what a sender supplied: the user name and the text's length.
pub fn check_draft(state: &Shared, draft: &Draft) -> Result<(), ApiError> {
    check_name("user", &draft.user)?;
    check_text(&draft.text, state.config.max_message_bytes())
}

/// Publishes a checked draft and counts it: the one way into a room, for every transport.
pub fn publish(state: &Shared, room: &Room, draft: &Draft) -> Arc<Published> {
    let message = room.publish(draft);
    state.metrics.messages_published.inc();
    message
}

/// The `{room}` of a path, undecoded bytes that are not UTF-8 refused with a JSON 400
/// like any other bad room name (axum's own rejection is plain text).
pub struct RoomName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RoomName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(room)) => Ok(RoomName(room)),
            Err(_) => Err(bad_room()),
        }
    }
}

/// A query string read strictly. serde_urlencoded turns percent-escapes that are not
/// UTF-8 into U+FFFD, which would make `client=%ff` and `client=%fe` one client; here
/// they are a 400, as is anything else wrong with the query.
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        // A query without escapes is the URI's own text, UTF-8 already: the usual poll
        // is not decoded twice.
        let utf8 = !raw.contains('%')
            || raw.split(['&', '=']).all(|part| {
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .is_ok()
            });
        if !utf8 {
            return Err(ApiError::bad_request(
                "query string: a percent-escaped value is not UTF-8",
            ));
        }
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| StrictQuery(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The query, or the 400 its extractor answered. Taken as a `Result` by handlers so
/// that a refused request is still counted against its transport.
pub fn query<T>(query: Result<StrictQuery<T>, ApiError>) -> Result<T, ApiError> {
    query.map(|StrictQuery(q)| q)
}

/// `limit` as polling takes it: default 100, 1 to 1000.
pub fn poll_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        ))),
    }
}

/// `{"messages":[...],"last_id":M}` with `"gap":true` when some were no longer held.
/// Built from each message's stored JSON, so nothing is serialized again.
pub fn poll_body(messages: &[Arc<Published>], last_id: u64, gap: Option<Gap>) -> Bytes {
    let size: usize = messages.iter().map(|m| m.json.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 48);
    out.put_slice(b"{\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&m.json);
    }
    out.put_slice(b"],\"last_id\":");
    out.put_slice(last_id.to_string().as_bytes());
    if gap.is_some() {
        out.put_slice(b",\"gap\":true");
    }
    out.put_u8(b'}');
    out.freeze()
}

/// A JSON answer with the right content type.
pub fn json_response(status: axum::http::StatusCode, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(check_room("lobby").is_ok());
        assert!(check_room("a-b_C9").is_ok());
        assert!(check_room(&"a".repeat(64)).is_ok());
        assert!(check_room(&"a".repeat(65)).is_err());
        assert!(check_room("").is_err());
        assert!(check_room("a b").is_err());
        assert!(check_room("ü").is_err());
    }

    #[test]
    fn user_names() {
        assert!(check_name("user", "ålice 🙂").is_ok());
        assert!(check_name("user", &"é".repeat(64)).is_ok());
        assert!(check_name("user", &"é".repeat(65)).is_err());
        assert!(check_name("user", "").is_err());
        assert!(check_name("user", "a\nb").is_err());
    }

    #[test]
    fn text_limits() {
        assert!(check_text("hi", 2).is_ok());
        assert!(matches!(check_text("hi!", 2), Err(ApiError::TooLarge(_))));
        assert!(matches!(check_text("", 2), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn poll_body_is_valid_json() {
        let body = poll_body(
            &[],
            7,
            Some(Gap {
                after: 1,
                next_id: 5,
            }),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"messages":[],"last_id":7,"gap":true}));
    }
}
