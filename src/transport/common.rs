//! What the transports share: name checks, the room and query extractors with JSON
//! errors, and the poll answer body used by short and long polling alike.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use bytes::{BufMut, Bytes, BytesMut};

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

/// The `{room}` segment of a path as it arrived, decoded as the router decodes it;
/// escapes that are not UTF-8 are refused like [`RoomName`] refuses them. The name
/// itself is checked later, with the request's other checks.
pub fn room_segment(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| bad_room())
}

/// A query string read strictly: `name=value` pairs split on `&`, with `+` and
/// percent escapes decoded as HTML forms send them (a name alone has the value "").
/// Percent escapes that are not UTF-8 are a 400 (a lossy decoding would make
/// `client=%ff` and `client=%fe` one client), as are a value that does not parse and a
/// name given twice; names a transport does not know are ignored. Read by hand rather
/// than through serde: every poll and long poll pays for it, and serde's walk over the
/// pairs cost a long poll 5-7% of the server's CPU (form_urlencoded's, which checks
/// each part's UTF-8 again, 2-4%).
pub struct StrictQuery<T>(pub T);

/// A transport's query parameters, filled one pair at a time.
pub trait QueryParams: Default {
    /// Takes one pair; a name the transport does not know is ignored.
    fn field(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError>;
}

impl<T: QueryParams, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        read_query(parts.uri.query().unwrap_or_default()).map(StrictQuery)
    }
}

/// The parameters of a raw query string (without the `?`), read as [`StrictQuery`]
/// reads them.
pub fn read_query<T: QueryParams>(raw: &str) -> Result<T, ApiError> {
    let mut params = T::default();
    for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.field(&query_decode(name)?, query_decode(value)?)?;
    }
    Ok(params)
}

/// One name or value of a query, `+` as a space and percent escapes decoded. The usual
/// one has neither and is the URI's own text, UTF-8 already.
fn query_decode(raw: &str) -> Result<Cow<'_, str>, ApiError> {
    if !raw.contains(['%', '+']) {
        return Ok(Cow::Borrowed(raw));
    }
    let spaced = if raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    // One allocation at most: the spaced copy, or the decoded one.
    let decoded = match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(decoded)) => Some(decoded),
        Err(_) => {
            return Err(ApiError::bad_request(
                "query string: a percent-escaped value is not UTF-8",
            ));
        }
    };
    Ok(decoded.map_or(spaced, Cow::Owned))
}

/// A whole number from the query, into its field; a second one for the same field is
/// refused.
pub fn query_number<N: FromStr>(
    slot: &mut Option<N>,
    name: &str,
    value: &str,
) -> Result<(), ApiError> {
    let number = value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "query string: {name} must be a whole number, not `{value}`"
        ))
    })?;
    query_once(slot, name, number)
}

/// A text from the query, into its field; a second one for the same field is refused.
pub fn query_text(
    slot: &mut Option<String>,
    name: &str,
    value: Cow<'_, str>,
) -> Result<(), ApiError> {
    query_once(slot, name, value.into_owned())
}

fn query_once<V>(slot: &mut Option<V>, name: &str, value: V) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::bad_request(format!(
            "query string: {name} is given more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
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

/// A JSON answer with the right content type. Built directly: through axum's
/// `IntoResponse` for a tuple, the body first gets a content type of its own, which
/// the tuple's then replaces.
pub fn json_response(status: axum::http::StatusCode, body: Bytes) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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

    #[derive(Default, Debug)]
    struct Probe {
        client: Option<String>,
        after: Option<u64>,
    }

    impl QueryParams for Probe {
        fn field(&mut self, name: &str, value: Cow<'_, str>) -> Result<(), ApiError> {
            match name {
                "client" => query_text(&mut self.client, name, value),
                "after" => query_number(&mut self.after, name, &value),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn queries_decode_like_forms_and_refuse_what_is_wrong() {
        let p: Probe = read_query("client=a+b%C3%A9&after=7&other=1&x").unwrap();
        assert_eq!(p.client.as_deref(), Some("a bé"));
        assert_eq!(p.after, Some(7));
        let p: Probe = read_query("").unwrap();
        assert!(p.client.is_none() && p.after.is_none());
        let p: Probe = read_query("client=").unwrap();
        assert_eq!(p.client.as_deref(), Some(""));
        // Escaped names, an escaped `+`, empty pairs and an `=` inside a value.
        let p: Probe = read_query("&&cli%65nt=%2B1&after=3&").unwrap();
        assert_eq!((p.client.as_deref(), p.after), (Some("+1"), Some(3)));
        let p: Probe = read_query("client=a=b").unwrap();
        assert_eq!(p.client.as_deref(), Some("a=b"));
        // Spaces alone, and an escape that is no escape (kept as it came).
        let p: Probe = read_query("client=a+b+c").unwrap();
        assert_eq!(p.client.as_deref(), Some("a b c"));
        let p: Probe = read_query("client=100%+x").unwrap();
        assert_eq!(p.client.as_deref(), Some("100% x"));
        for bad in [
            "client=%ff",
            "after=x",
            "after=",
            "after=-1",
            "after=1&after=2",
        ] {
            let refused = read_query::<Probe>(bad).unwrap_err();
            assert!(matches!(refused, ApiError::BadRequest(_)), "{bad}");
        }
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
