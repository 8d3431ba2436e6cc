//! The few protocol shapes the load generator reads and writes, read for what the
//! accounting needs only: `id`, `client_ts`, the prefix of the text (lag and send
//! time) and the `gap` and `error` signals.
//!
//! Messages are deserialized by serde_json into shapes that borrow from the received
//! bytes (the text is read only for its prefix) and skip every other field, so a
//! message allocates nothing here (a poll answer, one list). A malformed answer (bad JSON, a wrong type, a
//! duplicated key, a missing `messages` or `last_id`) is refused and counts as a
//! protocol error. Only JSON objects are taken: serde would also read a struct written
//! as an array of its fields, which no server sends.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// What the accounting reads from one message (or a gap / error frame on SSE and
/// WebSocket).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub id: Option<u64>,
    pub client_ts: Option<u64>,
    /// The send lag a loadgen sender wrote at the start of the text, if it has one.
    pub lag: Option<u64>,
    /// The `client_ts` written into the text after the lag, if it has one.
    pub stamp: Option<u64>,
    pub gap: bool,
    /// Whether it has a non-null `error`.
    pub error: bool,
}

/// What the accounting reads from a short- or long-poll answer, besides its messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageEnd {
    pub count: usize,
    pub last_id: u64,
    pub gap: bool,
}

/// A JSON text that is not what the protocol says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadJson;

/// A message as received; `text` is borrowed unless it has escapes.
#[derive(Deserialize)]
struct RawMsg<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    client_ts: Option<u64>,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(default)]
    gap: bool,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

impl RawMsg<'_> {
    fn fields(&self) -> Msg {
        let (lag, stamp) = prefix_of(&self.text);
        Msg {
            id: self.id,
            client_ts: self.client_ts,
            lag,
            stamp,
            gap: self.gap,
            error: self.error.is_some(),
        }
    }
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    messages: Vec<RawMsg<'a>>,
    last_id: u64,
    #[serde(default)]
    gap: bool,
}

/// `json` deserialized as `T`, provided it is a JSON object.
fn object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, BadJson> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(BadJson);
    }
    serde_json::from_slice(json).map_err(|_| BadJson)
}

/// Reads one message object.
pub fn msg(json: &[u8]) -> Result<Msg, BadJson> {
    object::<RawMsg>(json).map(|m| m.fields())
}

/// Reads a poll answer `{"messages":[...],"last_id":N,"gap":B}`, then hands each message
/// to `each` in order. The whole answer is read first: a malformed one hands out none.
pub fn page(json: &[u8], mut each: impl FnMut(&Msg)) -> Result<PageEnd, BadJson> {
    let page: RawPage = object(json)?;
    for m in &page.messages {
        each(&m.fields());
    }
    Ok(PageEnd {
        count: page.messages.len(),
        last_id: page.last_id,
        gap: page.gap,
    })
}

/// The short poll that answers a room's newest id: `after` beyond any id.
pub fn newest_path(room: &str) -> String {
    format!("/rooms/{room}/messages?limit=1&after={}", crate::conn::NOW)
}

/// The `last_id` of a short poll's answer.
pub fn last_id(page_json: &[u8]) -> Result<u64, BadJson> {
    page(page_json, |_| {}).map(|p| p.last_id)
}

/// The answer to a POST.
#[derive(Debug, Deserialize)]
pub struct Posted {
    pub id: u64,
}

/// Ends the lag and the send time at the start of a message text.
const LAG_END: char = '~';

/// The shortest `--message-bytes` that holds the prefix: a lag and a `client_ts` of up
/// to 10 and 16 digits and their two separators, with room to spare.
pub const MIN_MESSAGE_BYTES: usize = 32;

/// A message text of exactly `bytes` bytes (at least the prefix) that starts with the
/// send lag in microseconds and the `client_ts` the message is sent with:
/// `"<lag>~<client_ts>~xxxx..."`. The second lets a user check that the `client_ts` it
/// measures from is the one that was sent: a server that changed it (or the text)
/// would otherwise change the latencies without a trace.
pub fn text_with_stamp(lag_us: u64, client_ts: u64, bytes: usize) -> String {
    let mut text = format!("{lag_us}{LAG_END}{client_ts}{LAG_END}");
    if text.len() < bytes {
        text.extend(std::iter::repeat_n('x', bytes - text.len()));
    }
    text
}

/// The send lag and the `client_ts` a loadgen sender wrote at the start of `text`,
/// each if it is there: one pass over the prefix.
pub fn prefix_of(text: &str) -> (Option<u64>, Option<u64>) {
    let Some((lag, rest)) = text.split_once(LAG_END) else {
        return (None, None);
    };
    let stamp = rest.split_once(LAG_END).and_then(|(ts, _)| ts.parse().ok());
    (lag.parse().ok(), stamp)
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
    fn lag_and_stamp_round_trip_and_text_has_the_asked_length() {
        let t = text_with_stamp(1234, 1_795_800_000_123_456, 64);
        assert_eq!(t.len(), 64);
        assert_eq!(prefix_of(&t).0, Some(1234));
        assert_eq!(prefix_of(&t).1, Some(1_795_800_000_123_456));
        let longest = text_with_stamp(9_999_999_999, 9_999_999_999_999_999, MIN_MESSAGE_BYTES);
        assert!(longest.len() <= MIN_MESSAGE_BYTES, "{longest}");
        assert_eq!(prefix_of("hello").0, None);
        assert_eq!(prefix_of("12x~").0, None);
        assert_eq!(prefix_of("12~xx").1, None);
        assert_eq!(prefix_of("12~3x~").1, None);
        assert_eq!(prefix_of("12~34~").1, Some(34));
    }

    fn m(id: Option<u64>, client_ts: Option<u64>, lag: Option<u64>, gap: bool, error: bool) -> Msg {
        Msg {
            id,
            client_ts,
            lag,
            stamp: None,
            gap,
            error,
        }
    }

    /// Each message text, and what is read from it (`None`: refused).
    fn messages() -> Vec<(&'static str, Option<Msg>)> {
        vec![
            (
                r#"{"id":17,"room":"lobby","user":"a","text":"5~xx","client_ts":100,"server_ts":101}"#,
                Some(m(Some(17), Some(100), Some(5), false, false)),
            ),
            (
                r#" { "id" : 1 , "text" : "12~" , "client_ts" : null } "#,
                Some(m(Some(1), None, Some(12), false, false)),
            ),
            (
                r#"{"gap":true,"after":3,"next_id":9}"#,
                Some(m(None, None, None, true, false)),
            ),
            (r#"{"error":"bad"}"#, Some(m(None, None, None, false, true))),
            (
                r#"{"error":null,"id":2}"#,
                Some(m(Some(2), None, None, false, false)),
            ),
            (
                r#"{"error":{"a":[1,2.5e-3,{"b":null}],"c":"\"x\u00e9"},"id":3}"#,
                Some(m(Some(3), None, None, false, true)),
            ),
            (
                r#"{"id":4,"text":"\u0037~x","client_ts":5}"#,
                Some(m(Some(4), Some(5), Some(7), false, false)),
            ),
            (
                r#"{"id":4,"te\u0078t":"7~x","client_ts":5}"#,
                Some(m(Some(4), Some(5), Some(7), false, false)),
            ),
            (
                r#"{"id":5,"text":"a\"b~","other":[true,false,null,-0.5,"é"]}"#,
                Some(m(Some(5), None, None, false, false)),
            ),
            (r#"{}"#, Some(Msg::default())),
            (
                r#"{"id":18446744073709551615}"#,
                Some(m(Some(u64::MAX), None, None, false, false)),
            ),
            (r#"{"id":18446744073709551616}"#, None),
            (r#"{"id":-1}"#, None),
            (r#"{"id":1.0}"#, None),
            (r#"{"id":1e2}"#, None),
            (r#"{"id":01}"#, None),
            (r#"{"id":"1"}"#, None),
            (r#"{"id":1,"id":2}"#, None),
            (r#"{"text":null}"#, None),
            (r#"{"gap":null}"#, None),
            (r#"{"gap":1}"#, None),
            (r#"{"id":1,}"#, None),
            (r#"{"id":1} x"#, None),
            (r#"{"id":1"#, None),
            (r#"{"x":01}"#, None),
            (r#"{"x":1.}"#, None),
            (r#"{"x":tru}"#, None),
            (r#"{"x":"\q"}"#, None),
            (r#"{"x":"\u12g4"}"#, None),
            ("{\"x\":\"a\u{1}b\"}", None),
            (r#""#, None),
        ]
    }

    #[test]
    fn messages_are_read_for_their_fields_and_malformed_ones_refused() {
        for (json, want) in messages() {
            assert_eq!(msg(json.as_bytes()).ok(), want, "{json}");
        }
        assert_eq!(msg(b"{\"text\":\"\xff~\"}"), Err(BadJson));
        // serde also takes a struct as an array of its fields; no server sends that.
        assert_eq!(msg(b"[1]"), Err(BadJson));
        // A field nobody reads is skipped without recursion, however deep; unbalanced,
        // it is refused.
        let deep = format!(
            "{{\"x\":{}{},\"id\":1}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(msg(deep.as_bytes()).map(|m| m.id), Ok(Some(1)));
        let unbalanced = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(199));
        assert_eq!(msg(unbalanced.as_bytes()), Err(BadJson));
    }

    #[test]
    fn pages_are_read_with_their_messages_in_order() {
        let read = |json: &str| {
            let mut msgs = Vec::new();
            page(json.as_bytes(), |m| msgs.push(*m)).ok().map(|end| {
                assert_eq!(end.count, msgs.len());
                (msgs, end.last_id, end.gap)
            })
        };
        assert_eq!(
            read(r#"{"messages":[],"last_id":0}"#),
            Some((vec![], 0, false))
        );
        assert_eq!(
            read(r#"{"messages":[],"gap":true,"last_id":7}"#),
            Some((vec![], 7, true))
        );
        for refused in [
            r#"{"messages":[]}"#,
            r#"{"last_id":3}"#,
            r#"{"messages":[],"last_id":3,"last_id":4}"#,
            r#"{"messages":{},"last_id":3}"#,
            r#"{"messages":[1],"last_id":3}"#,
            r#"{"messages":[{"id":1}],"last_id":-3}"#,
        ] {
            assert_eq!(read(refused), None, "{refused}");
        }
        // A malformed answer hands out none of its messages, not even those before the
        // fault: the user accounts for a page whole or not at all.
        let mut handed = 0;
        let broken = br#"{"messages":[{"id":1},{"id":2}],"last_id":"x"}"#;
        assert_eq!(page(broken, |_| handed += 1), Err(BadJson));
        assert_eq!(handed, 0);
        for (m, want) in messages() {
            let json = format!(r#"{{"messages":[{m},{m}],"last_id":9,"gap":false}}"#);
            let want = want
                .filter(|_| !m.trim().is_empty())
                .map(|w| (vec![w, w], 9, false));
            assert_eq!(read(&json), want, "{json}");
        }
    }
}
