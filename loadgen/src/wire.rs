//! The few protocol shapes the load generator reads and writes, read for what the
//! accounting needs only: `id`, `client_ts`, the prefix of the text (lag and send
//! time) and the `gap` and `error` signals.
//!
//! Messages and poll answers in the one shape the lab writes them (compact, fields
//! of strings without escapes, integers, booleans and nulls) are read by a scan
//! (`flat`) that takes only what it reads whole; everything else goes to serde_json,
//! into shapes that borrow from the received bytes and skip every other field. Both
//! give the same answer for any input the scan takes (a test checks it against serde
//! on mutated server output). A message in the lab's own field order is read in one
//! pass without looking keys up (`flat::lab_shaped`): about 110 ns a message here
//! against the general scan's 300 (`cargo bench --bench reading`). A malformed
//! answer (bad JSON, a wrong type, a duplicated key, a missing `messages` or
//! `last_id`) is refused and counts as a protocol error. Only JSON objects are taken:
//! serde would also read a struct written as an array of its fields, which no server
//! sends.

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
    match flat::msg(json) {
        Some(m) => Ok(m),
        None => object::<RawMsg>(json).map(|m| m.fields()),
    }
}

/// Reads a poll answer `{"messages":[...],"last_id":N,"gap":B}`, then hands each message
/// to `each` in order. The whole answer is read first: a malformed one hands out none.
pub fn page(json: &[u8], mut each: impl FnMut(&Msg)) -> Result<PageEnd, BadJson> {
    if let Some((messages, end)) = flat::page(json) {
        messages.iter().for_each(each);
        return Ok(end);
    }
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

/// A scan of the one shape a server writes a message in: a compact object of
/// strings, integers, booleans and nulls, as the lab's serde writes it. It answers
/// only what it reads whole and exactly as serde would; anything else (whitespace,
/// an escape, a byte beyond ASCII in a string, a nested value, a fraction, a field
/// twice) is left to serde, which reads it or refuses it. serde costs about a tenth of
/// the loadgen's CPU per delivery on a stream; this scan a fraction of that.
mod flat {
    use super::{Msg, PageEnd, prefix_of_bytes};

    /// A value the scan reads.
    enum Value<'a> {
        /// ASCII without escapes.
        Str(&'a [u8]),
        /// An integer; `None` beyond `u64` or below zero: a field read as one refuses
        /// it, another skips it.
        Int(Option<u64>),
        Bool(bool),
        Null,
    }

    /// The message in `json`, or `None` to leave it to serde.
    pub fn msg(json: &[u8]) -> Option<Msg> {
        let (m, end) = object(json, 0)?;
        (end == json.len()).then_some(m)
    }

    /// A poll answer as the lab writes it, `{"messages":[...],"last_id":N}` with
    /// `,"gap":B` before the end or not: its messages and its end, or `None` to leave
    /// it to serde.
    pub fn page(json: &[u8]) -> Option<(Vec<Msg>, PageEnd)> {
        const START: &[u8] = b"{\"messages\":[";
        const LAST_ID: &[u8] = b",\"last_id\":";
        if !json.starts_with(START) {
            return None;
        }
        // Room for the messages of a typical size, so that the list seldom grows;
        // bounded, so that a huge answer grows it as it is read instead.
        let mut messages = Vec::with_capacity((json.len() / 128).min(1024));
        let mut at = START.len();
        if json.get(at) == Some(&b']') {
            at += 1;
        } else {
            loop {
                let (m, next) = object(json, at)?;
                messages.push(m);
                match json.get(next)? {
                    b',' => at = next + 1,
                    b']' => break at = next + 1,
                    _ => return None,
                }
            }
        }
        if !json[at..].starts_with(LAST_ID) {
            return None;
        }
        let (Value::Int(Some(last_id)), mut at) = value(json, at + LAST_ID.len())? else {
            return None;
        };
        let mut gap = false;
        if let Some(rest) = json[at..].strip_prefix(b",\"gap\":") {
            let (Value::Bool(b), next) = value(json, json.len() - rest.len())? else {
                return None;
            };
            (gap, at) = (b, next);
        }
        (json.get(at..) == Some(b"}")).then_some(())?;
        let end = PageEnd {
            count: messages.len(),
            last_id,
            gap,
        };
        Some((messages, end))
    }

    /// The message object that starts at `at`, and the index after it.
    fn object(json: &[u8], at: usize) -> Option<(Msg, usize)> {
        lab_shaped(json, at).or_else(|| any_object(json, at))
    }

    /// A message in the exact order and shape the lab writes one,
    /// `{"id":N,"room":"..","user":"..","text":"..","client_ts":N|null,"server_ts":N}`,
    /// read without a key lookup or a value dispatch: the cost of a stream's delivery
    /// on the loadgen's side is mostly this read. Anything else goes to `any_object`.
    pub(super) fn lab_shaped(json: &[u8], at: usize) -> Option<(Msg, usize)> {
        let rest = json.get(at..)?.strip_prefix(b"{\"id\":")?;
        let (id, rest) = json_int(rest)?;
        let rest = rest.strip_prefix(b",\"room\":")?;
        let (_, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(b",\"user\":")?;
        let (_, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(b",\"text\":")?;
        let (text, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(b",\"client_ts\":")?;
        let (client_ts, rest) = match rest.strip_prefix(b"null") {
            Some(rest) => (None, rest),
            None => json_int(rest).map(|(n, rest)| (Some(n), rest))?,
        };
        let rest = rest.strip_prefix(b",\"server_ts\":")?;
        let (_, rest) = json_int(rest)?;
        let rest = rest.strip_prefix(b"}")?;
        let (lag, stamp) = stamped_prefix(text);
        let m = Msg {
            id: Some(id),
            client_ts,
            lag,
            stamp,
            gap: false,
            error: false,
        };
        Some((m, json.len() - rest.len()))
    }

    /// A JSON integer of at most 19 digits without a sign at the start of `b`, and
    /// what follows it. What comes next is the caller's to check: none of the shape's
    /// separators can continue a number.
    fn json_int(b: &[u8]) -> Option<(u64, &[u8])> {
        let (n, len) = digit_run(b)?;
        // A leading zero is not JSON: serde's to refuse.
        (b[0] != b'0' || len == 1).then_some((n, &b[len..]))
    }

    /// The value of the ASCII digits at the start of `b` and how many there are: one to
    /// 19 of them, which always fit a `u64`.
    pub(super) fn digit_run(b: &[u8]) -> Option<(u64, usize)> {
        let mut n = 0u64;
        let mut len = 0;
        // Eight at a step while eight more fit: a time stamp has sixteen, and a digit at
        // a time is a chain of dependent multiplications.
        while len + 8 <= 19 {
            let Some(word) = b.get(len..len + 8) else {
                break;
            };
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !eight_digits(word) {
                break;
            }
            n = n * 100_000_000 + value_of_eight(word);
            len += 8;
        }
        while let Some(&d) = b.get(len) {
            if !d.is_ascii_digit() {
                break;
            }
            if len == 19 {
                return None;
            }
            n = n * 10 + u64::from(d - b'0');
            len += 1;
        }
        (len > 0).then_some((n, len))
    }

    /// Whether each of the eight bytes of `word` is an ASCII digit: its high nibble
    /// is 3, and so is the high nibble of it plus 6 (a carry out of a byte comes only
    /// from one whose high nibble is F, which fails by itself).
    fn eight_digits(word: u64) -> bool {
        const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
        (word & HIGH) | ((word.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4)
            == 0x3333_3333_3333_3333
    }

    /// The value of eight ASCII digits read as a little-endian word (the first digit
    /// in the low byte): pairs, then fours, then the eight, by multiplications that
    /// run side by side.
    fn value_of_eight(word: u64) -> u64 {
        const MASK: u64 = 0x0000_00FF_0000_00FF;
        const MUL1: u64 = 100 + (1_000_000 << 32);
        const MUL2: u64 = 1 + (10_000 << 32);
        let v = word.wrapping_sub(0x3030_3030_3030_3030);
        let v = v.wrapping_mul(10).wrapping_add(v >> 8);
        ((v & MASK).wrapping_mul(MUL1)).wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2)) >> 32
    }

    /// The lag and the send time at the start of a loadgen text, `<digits>~<digits>~`,
    /// read in one pass; any other text is read by `prefix_of_bytes`.
    fn stamped_prefix(text: &[u8]) -> (Option<u64>, Option<u64>) {
        let read = || {
            let (lag, n) = digit_run(text)?;
            let rest = text[n..].strip_prefix(b"~")?;
            let (stamp, n) = digit_run(rest)?;
            rest[n..]
                .starts_with(b"~")
                .then_some((Some(lag), Some(stamp)))
        };
        read().unwrap_or_else(|| prefix_of_bytes(text))
    }

    /// A string of ASCII without escapes or control characters at the start of `b`,
    /// and what follows it.
    fn plain_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let (s, next) = string(b, 0)?;
        Some((s, &b[next..]))
    }

    /// Any message object the scan reads: fields in any order, unknown ones skipped.
    fn any_object(json: &[u8], at: usize) -> Option<(Msg, usize)> {
        let mut m = Msg::default();
        let mut seen = 0u8;
        if json.get(at) != Some(&b'{') {
            return None;
        }
        if json.get(at + 1) == Some(&b'}') {
            return Some((m, at + 2));
        }
        let mut at = at + 1;
        loop {
            let (key, next) = string(json, at)?;
            if json.get(next) != Some(&b':') {
                return None;
            }
            let (value, next) = value(json, next + 1)?;
            let bit = match key {
                b"id" => 1,
                b"client_ts" => 2,
                b"text" => 4,
                b"gap" => 8,
                b"error" => 16,
                _ => 0,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match (bit, value) {
                (0, _) => {}
                (1, Value::Int(n)) => m.id = Some(n?),
                (2, Value::Int(n)) => m.client_ts = Some(n?),
                (1 | 2 | 16, Value::Null) => {}
                (4, Value::Str(text)) => (m.lag, m.stamp) = prefix_of_bytes(text),
                (8, Value::Bool(b)) => m.gap = b,
                (16, _) => m.error = true,
                _ => return None,
            }
            match json.get(next) {
                Some(b',') => at = next + 1,
                Some(b'}') => return Some((m, next + 1)),
                _ => return None,
            }
        }
    }

    /// The string that starts at `at` and the index after it.
    fn string(json: &[u8], at: usize) -> Option<(&[u8], usize)> {
        if json.get(at) != Some(&b'"') {
            return None;
        }
        let from = at + 1;
        let len = memchr::memchr2(b'"', b'\\', json.get(from..)?)?;
        let s = &json[from..from + len];
        // An escape, a control character or a byte beyond ASCII (without a branch per
        // byte, so that the check runs many bytes a step).
        let odd = s
            .iter()
            .fold(false, |odd, &b| odd | (b.wrapping_sub(0x20) >= 0x60));
        if json[from + len] == b'\\' || odd {
            return None;
        }
        Some((s, from + len + 1))
    }

    /// The value that starts at `at` and the index after it.
    fn value(json: &[u8], at: usize) -> Option<(Value<'_>, usize)> {
        let rest = json.get(at..)?;
        let word = |w: &[u8], v| rest.starts_with(w).then_some((v, at + w.len()));
        match *rest.first()? {
            b'"' => string(json, at).map(|(s, next)| (Value::Str(s), next)),
            b't' => word(b"true", Value::Bool(true)),
            b'f' => word(b"false", Value::Bool(false)),
            b'n' => word(b"null", Value::Null),
            first @ (b'-' | b'0'..=b'9') => {
                let sign = usize::from(first == b'-');
                let digits = &rest[sign..];
                let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
                // A leading zero, a fraction or an exponent: serde's to judge.
                if len == 0
                    || (digits[0] == b'0' && len > 1)
                    || matches!(digits.get(len), Some(b'.' | b'e' | b'E'))
                {
                    return None;
                }
                let n = if sign == 1 {
                    None
                } else {
                    super::decimal(&digits[..len])
                };
                Some((Value::Int(n), at + sign + len))
            }
            _ => None,
        }
    }
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
    prefix_of_bytes(text.as_bytes())
}

fn prefix_of_bytes(text: &[u8]) -> (Option<u64>, Option<u64>) {
    let mut parts = text.splitn(3, |&b| b == LAG_END as u8);
    let (Some(lag), Some(rest)) = (parts.next(), parts.next()) else {
        return (None, None);
    };
    let stamp = parts.next().and_then(|_| unsigned(rest));
    (unsigned(lag), stamp)
}

/// `digits` read as `str::parse::<u64>` reads them: an optional `+`, then at least
/// one decimal digit, and no more than `u64` holds.
fn unsigned(digits: &[u8]) -> Option<u64> {
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    decimal(digits)
}

/// ASCII digits, at least one, as a `u64` if it holds them.
fn decimal(digits: &[u8]) -> Option<u64> {
    let zeros = digits.iter().take_while(|&&b| b == b'0').count();
    let digits = &digits[zeros.min(digits.len() - 1)..];
    let value = |d: &[u8]| d.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
    // 19 digits always fit; only a 20th can overflow.
    match digits.len() {
        ..=19 => Some(value(digits)),
        20 => value(&digits[..19])
            .checked_mul(10)?
            .checked_add(u64::from(digits[19] - b'0')),
        _ => None,
    }
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
        for digits in [
            "",
            "+",
            "+1",
            "-1",
            "1a",
            "007",
            "٣",
            "1234567890123456789",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "000000000000000000000000000001",
            "0018446744073709551615",
            "0018446744073709551616",
            "10000000000000000000000",
        ] {
            assert_eq!(unsigned(digits.as_bytes()), digits.parse().ok(), "{digits}");
        }
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

    /// A message as the lab writes it.
    const SERVER_MSG: &str = concat!(
        r#"{"id":17,"room":"lobby","user":"u3","text":"5~1795800000123456~xx","#,
        r#""client_ts":1795800000123456,"server_ts":1795800000123999}"#
    );

    /// serde's reading of a message, without the scan.
    fn by_serde(json: &[u8]) -> Result<Msg, BadJson> {
        object::<RawMsg>(json).map(|m| m.fields())
    }

    /// serde's reading of a poll answer, without the scan.
    fn page_by_serde(json: &[u8]) -> Option<(Vec<Msg>, PageEnd)> {
        let page: RawPage = object(json).ok()?;
        let messages: Vec<Msg> = page.messages.iter().map(|m| m.fields()).collect();
        let end = PageEnd {
            count: messages.len(),
            last_id: page.last_id,
            gap: page.gap,
        };
        Some((messages, end))
    }

    /// Checks that `scan` answers as `serde` does wherever it answers, on every cut of
    /// each of `bases` and on 20,000 copies of each with up to three bytes changed;
    /// the scan must answer a good share of the changed copies.
    fn scan_agrees_with_serde<T: PartialEq + std::fmt::Debug>(
        bases: &[&[u8]],
        scan: impl Fn(&[u8]) -> Option<T>,
        serde: impl Fn(&[u8]) -> Option<T>,
    ) {
        let check = |json: &[u8]| {
            let read = scan(json);
            if read.is_some() {
                assert_eq!(read, serde(json), "{}", String::from_utf8_lossy(json));
            }
            read.is_some()
        };
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"{}[]\",:.-+eE0123456789 tfnulrsxid_gap\x01\xc3\xa9";
        let mut scanned = 0;
        for base in bases {
            assert!(
                check(base),
                "the scan reads {}",
                String::from_utf8_lossy(base)
            );
            for cut in 0..base.len() {
                check(&base[..cut]);
            }
            for _ in 0..20_000 {
                let mut json = base.to_vec();
                for _ in 0..=next() % 3 {
                    let at = (next() % json.len() as u64) as usize;
                    json[at] = alphabet[(next() % alphabet.len() as u64) as usize];
                }
                scanned += usize::from(check(&json));
            }
        }
        assert!(scanned > 1_000, "{scanned}");
    }

    #[test]
    fn the_scan_takes_what_a_server_writes_and_reads_it_as_serde_does() {
        let read = flat::msg(SERVER_MSG.as_bytes()).unwrap();
        assert_eq!(
            (read.id, read.stamp),
            (Some(17), Some(1_795_800_000_123_456))
        );
        let gap = br#"{"gap":true,"after":3,"next_id":9}"#;
        assert_eq!(flat::msg(gap).map(|m| m.gap), Some(true));
        let error = br#"{"error":"message too large","id":null}"#;
        assert_eq!(flat::msg(error).map(|m| m.error), Some(true));
        for (json, _) in messages() {
            if let Some(m) = flat::msg(json.as_bytes()) {
                assert_eq!(Ok(m), by_serde(json.as_bytes()), "{json}");
            }
        }
        scan_agrees_with_serde(&[SERVER_MSG.as_bytes(), gap, error], flat::msg, |json| {
            by_serde(json).ok()
        });
    }

    #[test]
    fn digit_runs_are_read_as_str_parse_reads_them() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in 1..=22 {
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let digits: String = (0..len)
                    .map(|i| char::from(b'0' + (seed >> (i % 16 * 4)) as u8 % 10))
                    .collect();
                for tail in ["", "~", "x", "9"] {
                    let text = format!("{digits}{tail}");
                    let run =
                        text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                    let want = (run <= 19).then(|| (text[..run].parse().unwrap(), run));
                    assert_eq!(flat::digit_run(text.as_bytes()), want, "{text}");
                }
            }
        }
        // A byte next to the digits in the same word: each neighbour of '0' and '9'.
        for odd in [b'/', b':', 0x00, 0xff, 0xf9, b' '] {
            for at in 0..8 {
                let mut b = *b"12345678";
                b[at] = odd;
                let want = (at > 0).then(|| {
                    let digits = std::str::from_utf8(&b[..at]).unwrap();
                    (digits.parse().unwrap(), at)
                });
                assert_eq!(flat::digit_run(&b), want, "{b:?}");
            }
        }
        assert_eq!(flat::digit_run(b""), None);
    }

    #[test]
    fn the_lab_s_own_shape_is_read_in_one_pass_as_serde_reads_it() {
        let whole = |json: &[u8]| {
            flat::lab_shaped(json, 0).and_then(|(m, end)| (end == json.len()).then_some(m))
        };
        let read = whole(SERVER_MSG.as_bytes()).expect("the lab's shape");
        assert_eq!(Ok(read), by_serde(SERVER_MSG.as_bytes()));
        assert_eq!(
            (read.id, read.client_ts, read.lag, read.stamp),
            (
                Some(17),
                Some(1_795_800_000_123_456),
                Some(5),
                Some(1_795_800_000_123_456)
            )
        );
        let null_ts = SERVER_MSG.replace("1795800000123456,", "null,");
        assert_eq!(whole(null_ts.as_bytes()).map(|m| m.client_ts), Some(None));
        // A text that is not a loadgen's stamp is read as `prefix_of` reads it.
        for text in ["+5~+7~x", "5~7", "x", "~~", "00000000000000000000001~2~"] {
            let json = SERVER_MSG.replace("5~1795800000123456~xx", text);
            let m = whole(json.as_bytes()).expect("the lab's shape");
            assert_eq!((m.lag, m.stamp), prefix_of(text), "{text}");
        }
        // Another order or another field is left to the general scan.
        let reordered = SERVER_MSG.replace(r#""id":17,"room""#, r#""room""#);
        assert_eq!(whole(reordered.as_bytes()), None);
        scan_agrees_with_serde(&[SERVER_MSG.as_bytes()], whole, |json| by_serde(json).ok());
    }

    #[test]
    fn the_scan_takes_a_servers_poll_answers_and_reads_them_as_serde_does() {
        let one = SERVER_MSG;
        let pages = [
            format!(r#"{{"messages":[{one},{one}],"last_id":18}}"#),
            r#"{"messages":[],"last_id":7,"gap":true}"#.to_owned(),
            format!(r#"{{"messages":[{one}],"last_id":17,"gap":false}}"#),
        ];
        for (m, _) in messages() {
            let json = format!(r#"{{"messages":[{m},{m}],"last_id":9,"gap":false}}"#);
            if let Some(read) = flat::page(json.as_bytes()) {
                assert_eq!(Some(read), page_by_serde(json.as_bytes()), "{json}");
            }
        }
        let pages: Vec<&[u8]> = pages.iter().map(|p| p.as_bytes()).collect();
        scan_agrees_with_serde(&pages, flat::page, page_by_serde);
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
