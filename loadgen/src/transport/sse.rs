//! Server-Sent Events: `GET /rooms/{room}/events?after=N`. `message` and `gap` events
//! are passed on; comments, `retry` and other events carry no message.
//!
//! The stream is parsed here, not by a general SSE library: every delivery goes
//! through the parser, and one that keeps its buffers from event to event and hands
//! out the data as a borrowed slice costs no allocation per event.

use super::{Received, Receiver, Sub};
use crate::error::ClientError;
use crate::h1::{Conn, Stream};

pub struct Sse {
    body: Stream,
    parser: Parser,
}

impl Receiver for Sse {
    const NAME: &'static str = "sse";
    const STREAM: bool = true;

    async fn open(http: Conn, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError> {
        let path = format!("/rooms/{}/events?after={after}", sub.room);
        Ok(Sse {
            body: http.stream(&path).await?,
            parser: Parser::default(),
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, _cursor: u64) -> Result<Received<'_>, ClientError> {
        loop {
            if self.parser.next_event() {
                return Ok(Received::Message {
                    json: self.parser.data(),
                    wire: self.parser.event_bytes(),
                });
            }
            let parser = &mut self.parser;
            // A broken stream counts as an SSE error, whatever broke it.
            self.body
                .read(|b| parser.push(b))
                .await
                .map_err(|e| match e {
                    ClientError::Io(_) | ClientError::Protocol(_) => ClientError::Sse(e.to_string()),
                    e => e,
                })?;
        }
    }
}

/// An incremental `text/event-stream` parser (the WHATWG rules: lines end with CRLF,
/// LF or CR; `:` starts a comment; one space after the colon is dropped; `data` lines
/// are joined with LF; an empty line dispatches an event that has data).
///
/// An event with one `data` line (every event the lab sends) is handed out as a slice
/// of the received bytes, not copied; data is gathered into a buffer of its own only
/// when an event has several lines, or when more bytes must be read before its end.
#[derive(Debug, Default)]
pub struct Parser {
    /// Received bytes; those before `start` are parsed.
    buf: Vec<u8>,
    start: usize,
    /// The last line ended with CR: a LF right after it ends no line.
    after_cr: bool,
    /// The stream's first bytes are still to come (a leading BOM is dropped).
    begun: bool,
    /// The current event's type (empty: `message`) and data so far.
    event: Vec<u8>,
    building: Data,
    /// The data of an event that cannot be a slice of `buf`. Every event that moves
    /// its data here clears it first, so it holds one event's data at a time.
    gathered: Vec<u8>,
    /// The data of the event [`Parser::next_event`] found.
    found: Data,
    /// Bytes of the lines read since the last blank line, and of the event found.
    taken: usize,
    found_bytes: usize,
}

/// Where an event's data is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// None yet (an event without data is not dispatched).
    #[default]
    None,
    /// `buf[start..end]`, until the next push.
    InBuf(usize, usize),
    /// In `gathered`.
    Own,
}

impl Parser {
    /// Adds received bytes. The data [`Parser::data`] gave is gone.
    pub fn push(&mut self, bytes: &[u8]) {
        // The parsed bytes are dropped below: data still to be dispatched moves out.
        if let Data::InBuf(start, end) = self.building {
            self.gathered.clear();
            self.gathered.extend_from_slice(&self.buf[start..end]);
            self.building = Data::Own;
        }
        self.found = Data::None;
        crate::h1::drop_consumed(&mut self.buf, &mut self.start);
        self.buf.extend_from_slice(bytes);
    }

    /// Parses up to the next `message` or `gap` event with data; whether there was
    /// one. Its data is then [`Parser::data`].
    pub fn next_event(&mut self) -> bool {
        self.found = Data::None;
        loop {
            if !self.begun {
                if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                    return false;
                }
                self.begun = true;
                if self.buf.starts_with(b"\xEF\xBB\xBF") {
                    self.start = 3;
                }
            }
            let rest = &self.buf[self.start..];
            if self.after_cr && rest.first() == Some(&b'\n') {
                self.start += 1;
                self.taken += 1;
                self.after_cr = false;
                continue;
            }
            let Some(len) = memchr::memchr2(b'\n', b'\r', rest) else {
                return false;
            };
            let (line_start, line_end) = (self.start, self.start + len);
            self.after_cr = self.buf[line_end] == b'\r';
            self.start = line_end + 1;
            self.taken += len + 1;
            if self.line(line_start, line_end) {
                return true;
            }
        }
    }

    /// The bytes the event [`Parser::next_event`] found took on the stream: its lines
    /// and their ends (a CRLF's LF may be counted with the next event), and lines
    /// without a blank one after them since the last event (a stray field).
    pub fn event_bytes(&self) -> usize {
        self.found_bytes
    }

    /// The data of the event [`Parser::next_event`] found, until the next call of
    /// either method.
    pub fn data(&self) -> &[u8] {
        match self.found {
            Data::None => &[],
            Data::InBuf(start, end) => &self.buf[start..end],
            Data::Own => &self.gathered,
        }
    }

    /// Takes in `buf[start..end]`, one line; whether it dispatched a `message` or
    /// `gap` event.
    fn line(&mut self, start: usize, end: usize) -> bool {
        if start == end {
            let wanted = self.building != Data::None
                && matches!(&self.event[..], b"" | b"message" | b"gap");
            if wanted {
                self.found = self.building;
                self.found_bytes = self.taken;
            }
            self.taken = 0;
            self.event.clear();
            self.building = Data::None;
            return wanted;
        }
        let line = &self.buf[start..end];
        let (name, value) = match memchr::memchr(b':', line) {
            Some(0) => return false,
            Some(i) => {
                let from = i + 1 + usize::from(line.get(i + 1) == Some(&b' '));
                (&line[..i], start + from..end)
            }
            None => (line, end..end),
        };
        match name {
            b"data" => match self.building {
                Data::None => self.building = Data::InBuf(value.start, value.end),
                Data::InBuf(first_start, first_end) => {
                    self.gathered.clear();
                    self.gathered
                        .extend_from_slice(&self.buf[first_start..first_end]);
                    self.gathered.push(b'\n');
                    self.gathered.extend_from_slice(&self.buf[value]);
                    self.building = Data::Own;
                }
                Data::Own => {
                    self.gathered.push(b'\n');
                    self.gathered.extend_from_slice(&self.buf[value]);
                }
            },
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(&self.buf[value]);
            }
            // `id` and `retry` matter to a reconnecting browser; a user reconnects
            // from the highest message id it has seen instead.
            _ => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Parser;

    /// Every event the parser passes on, feeding `chunks` one after another.
    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while p.next_event() {
                out.push(String::from_utf8(p.data().to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn message_and_gap_events_pass_others_do_not() {
        let stream = b"retry: 1000\n\n: keep-alive\n\nid: 3\nevent: message\ndata: {\"id\":3}\n\n\
            event: gap\ndata: {\"gap\":true}\n\nevent: other\ndata: x\n\ndata: plain\n\n\
            event: message\n\nid: 4\n\n";
        let want = ["{\"id\":3}", "{\"gap\":true}", "plain"];
        assert_eq!(events(&[stream]), want);
        // Split at every byte boundary, the same events come out.
        for at in 0..stream.len() {
            assert_eq!(events(&[&stream[..at], &stream[at..]]), want, "split at {at}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn an_event_is_told_with_the_bytes_it_took() {
        let mut p = Parser::default();
        p.push(b": keep-alive\n\nid: 3\nevent: message\ndata: {\"id\":3}\n\nda");
        assert!(p.next_event());
        // The keep-alive comment is not the event's.
        assert_eq!(p.event_bytes(), 37);
        p.push(b"ta: x\r\n\r\n");
        assert!(p.next_event());
        // `data: x` and its CRLF, and the blank line's CR (its LF goes with the next).
        assert_eq!(p.event_bytes(), 10);
    }

    #[test]
    fn line_endings_fields_and_multiline_data_follow_the_spec() {
        let crlf = b"event: message\r\ndata: a\r\n\r\ndata:b\rdata\r\rdata:  c\n\n";
        assert_eq!(events(&[crlf]), ["a", "b\n", " c"]);
        assert_eq!(events(&[b"data: a\r", b"\ndata: b\r", b"\n\r\n"]), ["a\nb"]);
        assert_eq!(events(&[b"\xEF\xBB", b"\xBFdata: x\n\n"]), ["x"]);
        // An event without its blank line is not dispatched yet.
        assert!(events(&[b"data: x\n"]).is_empty());
        // `event` is reset after each dispatch.
        assert_eq!(
            events(&[b"event: other\ndata: 1\n\ndata: 2\n\n"]),
            ["2"]
        );
    }
}
