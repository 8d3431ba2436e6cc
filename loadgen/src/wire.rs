//! The few protocol shapes the load generator reads and writes, read for what the
//! accounting needs only: `id`, `client_ts`, the lag prefix of the text and the `gap`
//! and `error` signals.
//!
//! Messages are read by a small JSON reader of its own rather than deserialized: every
//! delivery goes through here, and a reader that knows the few keys it wants, borrows
//! everything and builds nothing costs a fraction of a general deserializer. It is
//! still a strict reader: what serde would refuse for the old `Msg` / `Page` structs
//! (bad JSON, a wrong type, a duplicated key, a missing `messages` or `last_id`) is
//! refused here too, so a malformed answer still counts as a protocol error; the tests
//! hold the two side by side. It is stricter in one way: serde would also take an
//! object written as an array of its fields.

use std::borrow::Cow;

use serde::Deserialize;

/// What the accounting reads from one message (or a gap / error frame on SSE and
/// WebSocket).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    pub id: Option<u64>,
    pub client_ts: Option<u64>,
    /// The send lag a loadgen sender wrote at the start of the text, if it has one.
    pub lag: Option<u64>,
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

/// Reads one message object.
pub fn msg(json: &[u8]) -> Result<Msg, BadJson> {
    let mut r = Reader::new(json)?;
    let m = r.msg()?;
    r.end()?;
    Ok(m)
}

/// Reads a poll answer `{"messages":[...],"last_id":N,"gap":B}`, handing each message
/// to `each` in order.
pub fn page(json: &[u8], mut each: impl FnMut(&Msg)) -> Result<PageEnd, BadJson> {
    let mut r = Reader::new(json)?;
    let mut end = PageEnd::default();
    let (mut messages, mut last_id, mut gap) = (false, None, None);
    r.object(|r, key| {
        match key {
            b"messages" if !messages => {
                messages = true;
                r.array(|r| {
                    let m = r.msg()?;
                    end.count += 1;
                    each(&m);
                    Ok(())
                })?;
            }
            b"last_id" if last_id.is_none() => last_id = Some(r.u64()?),
            b"gap" if gap.is_none() => gap = Some(r.bool()?),
            b"messages" | b"last_id" | b"gap" => return Err(BadJson),
            _ => r.skip(0)?,
        }
        Ok(())
    })?;
    r.end()?;
    if !messages {
        return Err(BadJson);
    }
    end.last_id = last_id.ok_or(BadJson)?;
    end.gap = gap.unwrap_or(false);
    Ok(end)
}

/// Nesting deeper than this is refused, as serde_json refuses it.
const MAX_DEPTH: usize = 128;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    /// JSON text is UTF-8; checking it once up front lets strings be borrowed as `str`.
    fn new(b: &'a [u8]) -> Result<Self, BadJson> {
        std::str::from_utf8(b).map_err(|_| BadJson)?;
        Ok(Reader { b, i: 0 })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), BadJson> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(BadJson)
        }
    }

    fn lit(&mut self, word: &[u8]) -> Result<(), BadJson> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(BadJson)
        }
    }

    /// Nothing but whitespace is left.
    fn end(&mut self) -> Result<(), BadJson> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(BadJson),
        }
    }

    /// `{ "key": value, ... }`; `field` reads (or skips) each value.
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Result<(), BadJson>,
    ) -> Result<(), BadJson> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            if key.contains(&b'\\') {
                // An escaped key can only be one of ours spelled oddly: read it properly.
                let key: Cow<'_, str> =
                    serde_json::from_slice(key_token(self.b, key)).map_err(|_| BadJson)?;
                let key: &[u8] = match key.as_bytes() {
                    b"id" => b"id",
                    b"client_ts" => b"client_ts",
                    b"text" => b"text",
                    b"gap" => b"gap",
                    b"error" => b"error",
                    b"messages" => b"messages",
                    b"last_id" => b"last_id",
                    _ => b"",
                };
                field(self, key)?;
            } else {
                field(self, key)?;
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(BadJson),
            }
        }
    }

    /// `[ value, ... ]`; `item` reads each value.
    fn array(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), BadJson>,
    ) -> Result<(), BadJson> {
        self.eat(b'[')?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(BadJson),
            }
        }
    }

    /// One message object.
    fn msg(&mut self) -> Result<Msg, BadJson> {
        let mut m = Msg::default();
        // Which keys were seen: a repeated one is refused.
        let mut seen = 0u8;
        let mut once = |bit: u8| {
            if seen & bit != 0 {
                return Err(BadJson);
            }
            seen |= bit;
            Ok(())
        };
        self.object(|r, key| {
            match key {
                b"id" => {
                    once(1)?;
                    m.id = r.opt_u64()?;
                }
                b"client_ts" => {
                    once(2)?;
                    m.client_ts = r.opt_u64()?;
                }
                b"text" => {
                    once(4)?;
                    let raw = r.string()?;
                    m.lag = if raw.contains(&b'\\') {
                        let text: Cow<'_, str> =
                            serde_json::from_slice(key_token(r.b, raw)).map_err(|_| BadJson)?;
                        lag_of(&text)
                    } else {
                        // Valid UTF-8: the whole input was checked.
                        lag_of(std::str::from_utf8(raw).map_err(|_| BadJson)?)
                    };
                }
                b"gap" => {
                    once(8)?;
                    m.gap = r.bool()?;
                }
                b"error" => {
                    once(16)?;
                    if r.peek() == Some(b'n') {
                        r.lit(b"null")?;
                    } else {
                        r.skip(0)?;
                        m.error = true;
                    }
                }
                _ => r.skip(0)?,
            }
            Ok(())
        })?;
        Ok(m)
    }

    fn bool(&mut self) -> Result<bool, BadJson> {
        match self.peek() {
            Some(b't') => self.lit(b"true").map(|_| true),
            Some(b'f') => self.lit(b"false").map(|_| false),
            _ => Err(BadJson),
        }
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, BadJson> {
        if self.peek() == Some(b'n') {
            self.lit(b"null")?;
            return Ok(None);
        }
        self.u64().map(Some)
    }

    /// A non-negative integer that fits in a `u64` (no fraction, no exponent).
    fn u64(&mut self) -> Result<u64, BadJson> {
        self.ws();
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(&d @ b'0'..=b'9') = self.b.get(self.i) {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(BadJson)?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.b[start] == b'0') {
            return Err(BadJson);
        }
        if let Some(b'.' | b'e' | b'E') = self.b.get(self.i) {
            return Err(BadJson);
        }
        Ok(n)
    }

    /// A string's raw contents, between the quotes, escapes checked but not undone.
    fn string(&mut self) -> Result<&'a [u8], BadJson> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i).ok_or(BadJson)? {
                b'"' => {
                    self.i += 1;
                    return Ok(&self.b[start..self.i - 1]);
                }
                b'\\' => match *self.b.get(self.i + 1).ok_or(BadJson)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let hex = self.b.get(self.i + 2..self.i + 6).ok_or(BadJson)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(BadJson);
                        }
                        self.i += 6;
                    }
                    _ => return Err(BadJson),
                },
                0..=0x1f => return Err(BadJson),
                _ => self.i += 1,
            }
        }
    }

    /// Skips one value of any kind.
    fn skip(&mut self, depth: usize) -> Result<(), BadJson> {
        if depth >= MAX_DEPTH {
            return Err(BadJson);
        }
        match self.peek().ok_or(BadJson)? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object(|r, _| r.skip(depth + 1)),
            b'[' => self.array(|r| r.skip(depth + 1)),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            _ => self.number(),
        }
    }

    /// Any JSON number.
    fn number(&mut self) -> Result<(), BadJson> {
        let digits = |r: &mut Self| {
            let start = r.i;
            while r.b.get(r.i).is_some_and(u8::is_ascii_digit) {
                r.i += 1;
            }
            r.i - start
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let start = self.i;
        match digits(self) {
            0 => return Err(BadJson),
            n if n > 1 && self.b[start] == b'0' => return Err(BadJson),
            _ => {}
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(BadJson);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(BadJson);
            }
        }
        Ok(())
    }
}

/// The quoted token around a string's raw contents `raw`, a slice of `all`.
fn key_token<'a>(all: &'a [u8], raw: &[u8]) -> &'a [u8] {
    let start = raw.as_ptr() as usize - all.as_ptr() as usize;
    &all[start - 1..start + raw.len() + 1]
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

    /// The serde shapes the reader replaced: what they accept and read is the reference.
    mod reference {
        use std::borrow::Cow;

        use serde::Deserialize;

        #[derive(Deserialize)]
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

        #[derive(Deserialize)]
        pub struct Page<'a> {
            #[serde(borrow)]
            pub messages: Vec<Msg<'a>>,
            pub last_id: u64,
            #[serde(default)]
            pub gap: bool,
        }

        pub fn fields(m: &Msg) -> super::Msg {
            super::Msg {
                id: m.id,
                client_ts: m.client_ts,
                lag: super::lag_of(&m.text),
                gap: m.gap,
                error: m.error.is_some(),
            }
        }
    }

    const MESSAGES: &[&str] = &[
        r#"{"id":17,"room":"lobby","user":"a","text":"5~xx","client_ts":100,"server_ts":101}"#,
        r#" { "id" : 1 , "text" : "12~" , "client_ts" : null } "#,
        r#"{"gap":true,"after":3,"next_id":9}"#,
        r#"{"error":"bad"}"#,
        r#"{"error":null,"id":2}"#,
        r#"{"error":{"a":[1,2.5e-3,{"b":null}],"c":"\"x\u00e9"},"id":3}"#,
        r#"{"id":4,"text":"\u0037~x","client_ts":5}"#,
        r#"{"id":4,"te\u0078t":"7~x","client_ts":5}"#,
        r#"{"id":5,"text":"a\"b~","other":[true,false,null,-0.5,"é"]}"#,
        r#"{}"#,
        r#"{"id":18446744073709551615}"#,
        // Refused, by serde and by the reader.
        r#"{"id":18446744073709551616}"#,
        r#"{"id":-1}"#,
        r#"{"id":1.0}"#,
        r#"{"id":1e2}"#,
        r#"{"id":01}"#,
        r#"{"id":"1"}"#,
        r#"{"id":1,"id":2}"#,
        r#"{"text":null}"#,
        r#"{"gap":null}"#,
        r#"{"gap":1}"#,
        r#"{"id":1,}"#,
        r#"{"id":1} x"#,
        r#"{"id":1"#,
        r#"{"x":01}"#,
        r#"{"x":1.}"#,
        r#"{"x":tru}"#,
        r#"{"x":"\q"}"#,
        r#"{"x":"\u12g4"}"#,
        "{\"x\":\"a\u{1}b\"}",
        r#""#,
    ];

    #[test]
    fn messages_read_as_serde_reads_them() {
        for json in MESSAGES {
            let want = serde_json::from_str::<reference::Msg>(json)
                .map(|m| reference::fields(&m))
                .ok();
            assert_eq!(msg(json.as_bytes()).ok(), want, "{json}");
        }
        assert_eq!(msg(b"{\"text\":\"\xff~\"}"), Err(BadJson));
        // serde also takes a struct as an array of its fields; no server sends that.
        assert_eq!(msg(b"[1]"), Err(BadJson));
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(msg(deep.as_bytes()), Err(BadJson));
    }

    #[test]
    fn pages_read_as_serde_reads_them() {
        let mut pages: Vec<String> = vec![
            r#"{"messages":[],"last_id":0}"#.into(),
            r#"{"messages":[],"gap":true,"last_id":7}"#.into(),
            r#"{"messages":[]}"#.into(),
            r#"{"last_id":3}"#.into(),
            r#"{"messages":[],"last_id":3,"last_id":4}"#.into(),
            r#"{"messages":{},"last_id":3}"#.into(),
            r#"{"messages":[1],"last_id":3}"#.into(),
            r#"{"messages":[{"id":1}],"last_id":-3}"#.into(),
        ];
        for m in MESSAGES {
            pages.push(format!(
                r#"{{"messages":[{m},{m}],"last_id":9,"gap":false}}"#
            ));
        }
        for json in &pages {
            let want = serde_json::from_str::<reference::Page>(json).ok().map(|p| {
                let msgs: Vec<Msg> = p.messages.iter().map(reference::fields).collect();
                (msgs, p.last_id, p.gap)
            });
            let mut msgs = Vec::new();
            let got = page(json.as_bytes(), |m| msgs.push(*m)).ok().map(|end| {
                assert_eq!(end.count, msgs.len());
                (msgs, end.last_id, end.gap)
            });
            assert_eq!(got, want, "{json}");
        }
    }
}
