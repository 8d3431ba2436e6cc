//! The few protocol shapes the load generator reads and writes, parsed for what the
//! accounting needs only: `id`, `client_ts`, the text (borrowed) for the lag prefix,
//! and the `gap` signal. Everything else in a message is skipped by serde unread.

use std::borrow::Cow;

use serde::Deserialize;

/// One message as received (or a gap / error frame on SSE and WebSocket).
#[derive(Debug, Deserialize)]
pub struct Msg<'a> {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub client_ts: Option<u64>,
    #[serde(borrow, default)]
    pub text: Cow<'a, str>,
    #[serde(default)]
    pub gap: bool,
    #[serde(default)]
    pub error: Option<serde::de::IgnoredAny>,
}

/// A short- or long-poll answer.
#[derive(Debug, Deserialize)]
pub struct Page<'a> {
    #[serde(borrow)]
    pub messages: Vec<Msg<'a>>,
    pub last_id: u64,
    #[serde(default)]
    pub gap: bool,
}

/// The answer to a POST.
#[derive(Debug, Deserialize)]
pub struct Posted {
    pub id: u64,
}

/// Separates the lag prefix from the padding in a message text.
const LAG_END: char = '~';

/// The shortest `--message-bytes` that holds any lag prefix.
pub const MIN_MESSAGE_BYTES: usize = 16;

/// A message text of exactly `bytes` bytes (at least the prefix) that starts with the
/// send lag in microseconds: `"<lag>~xxxx..."`.
pub fn text_with_lag(lag_us: u64, bytes: usize) -> String {
    let mut text = format!("{lag_us}{LAG_END}");
    if text.len() < bytes {
        text.extend(std::iter::repeat_n('x', bytes - text.len()));
    }
    text
}

/// The send lag a loadgen sender wrote at the start of `text`, if it has one.
pub fn lag_of(text: &str) -> Option<u64> {
    let end = text.find(LAG_END)?;
    text[..end].parse().ok()
}

/// The JSON body of a POST.
pub fn post_body(user: &str, text: &str, client_ts: u64) -> String {
    // `user` is `u<digits>` and `text` digits, '~' and 'x': nothing needs escaping.
    format!(r#"{{"user":"{user}","text":"{text}","client_ts":{client_ts}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_round_trips_and_text_has_the_asked_length() {
        let t = text_with_lag(1234, 64);
        assert_eq!(t.len(), 64);
        assert_eq!(lag_of(&t), Some(1234));
        assert_eq!(lag_of("hello"), None);
        assert_eq!(lag_of("12x~"), None);
    }

    #[test]
    fn parses_message_page_gap_and_error_shapes() {
        let m: Msg = serde_json::from_str(
            r#"{"id":17,"room":"lobby","user":"a","text":"5~xx","client_ts":100,"server_ts":101}"#,
        )
        .unwrap();
        assert_eq!(
            (m.id, m.client_ts, lag_of(&m.text)),
            (Some(17), Some(100), Some(5))
        );
        assert!(matches!(m.text, Cow::Borrowed(_)));
        let g: Msg = serde_json::from_str(r#"{"gap":true,"after":3,"next_id":9}"#).unwrap();
        assert!(g.gap && g.id.is_none());
        let e: Msg = serde_json::from_str(r#"{"error":"bad"}"#).unwrap();
        assert!(e.error.is_some() && e.id.is_none());
        let p: Page = serde_json::from_str(
            r#"{"messages":[{"id":1,"text":"a\"b","client_ts":null}],"last_id":1}"#,
        )
        .unwrap();
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.messages[0].text, "a\"b");
        let body = post_body("u1", "3~x", 42);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["client_ts"], 42);
    }
}
