//! Server-Sent Events: `GET /rooms/{room}/events?after=N`. `message` and `gap` events
//! are passed on; comments, `retry` and other events carry no message.
//!
//! The stream is parsed here, not by a general SSE library: every delivery goes
//! through the parser, and one that keeps its buffers from event to event and hands
//! out the data as a borrowed slice costs no allocation per event.
//!
//! Events that came with the answer's head are read in the user's task; then the
//! socket is handed to the worker's pump (`crate::pump`), which reads the rest with
//! the same parser, as it does a WebSocket's frames.

use std::rc::Rc;

use super::{Received, Receiver, Sub};
use crate::error::ClientError;
use crate::h1::{Conn, Stream};
use crate::pump::{Decoder, Pump, Pumped};

pub struct Sse {
    /// The answer's body, until its socket is handed to the worker's pump.
    body: Option<Stream>,
    parser: Parser,
    /// The pump to hand it to, and how the user's messages are accounted there.
    pump: Option<(Rc<Pump>, crate::pump::Feed)>,
    pumped: Option<Pumped>,
}

fn lost() -> ClientError {
    ClientError::Sse("the connection was lost on its way to the pump".into())
}

/// A broken stream counts as an SSE error, whatever broke it.
fn sse_error(e: ClientError) -> ClientError {
    match e {
        ClientError::Io(_) | ClientError::Protocol(_) => ClientError::Sse(e.to_string()),
        e => e,
    }
}

impl Receiver for Sse {
    const NAME: &'static str = "sse";
    const STREAM: bool = true;
    const PUMPED: bool = true;

    async fn open(http: Conn, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError> {
        let path = format!("/rooms/{}/events?after={after}", sub.room);
        Ok(Sse {
            body: Some(http.stream(&path).await?),
            parser: Parser::default(),
            pump: sub.pump.clone(),
            pumped: None,
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
            if self.pumped.is_none() && self.pump.is_some() {
                let (body, parser) = (self.body.as_mut(), &mut self.parser);
                let body = body.ok_or_else(lost)?;
                if body.buffered(|b| parser.push(b)).map_err(sse_error)? {
                    continue;
                }
                self.hand_over()?;
            }
            if let Some(pumped) = self.pumped.as_mut() {
                return pumped.next().await;
            }
            let (body, parser) = (self.body.as_mut(), &mut self.parser);
            let body = body.ok_or_else(lost)?;
            body.read(|b| parser.push(b)).await.map_err(sse_error)?;
        }
    }
}

impl Sse {
    /// Hands the socket to the pump, with the parser, once no whole event is left in
    /// what was read (`next` has taken them); a body that has ended stays, for the
    /// task to report its end.
    fn hand_over(&mut self) -> Result<(), ClientError> {
        let (Some((pump, feed)), Some(body)) = (self.pump.as_ref(), self.body.as_ref()) else {
            return Ok(());
        };
        if body.ended() {
            return Ok(());
        }
        let fd = body.raw_fd();
        let parts = || {
            let body = self.body.take().expect("checked above");
            let (parts, framing) = body.into_parts()?;
            let parser = std::mem::take(&mut self.parser);
            Ok((parts, Decoder::Sse { framing, parser }))
        };
        match pump.hand_over(fd, parts, feed.clone()) {
            Ok(Some(pumped)) => self.pumped = Some(pumped),
            // The socket stays with the user, read in its task.
            Ok(None) => self.pump = None,
            Err(e) => return Err(ClientError::Sse(e.to_string())),
        }
        Ok(())
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

    mod pumped {
        use tokio::io::AsyncWriteExt;

        use crate::error::ClientError;
        use crate::h1::Conn;
        use crate::transport::testing::{accept_request, pumped_run, sub};
        use crate::transport::{Received, Receiver};

        use super::super::Sse;

        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n";

        /// `events` as an HTTP body of one chunk each.
        fn chunked(events: &[&str]) -> Vec<u8> {
            let mut out = Vec::new();
            for e in events {
                out.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
            }
            out
        }

        /// A server that answers one subscription with `HEAD` and, after a pause if
        /// `pause` (so that the socket is handed to the pump with nothing buffered),
        /// `body` in pieces of `piece` bytes; then it closes the connection.
        async fn serve(body: Vec<u8>, pause: bool, piece: usize) -> std::net::SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = accept_request(listener).await;
                let mut out = HEAD.to_vec();
                if pause {
                    s.write_all(&out).await.unwrap();
                    out.clear();
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                out.extend_from_slice(&body);
                for p in out.chunks(piece) {
                    s.write_all(p).await.unwrap();
                    if pause {
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            });
            addr
        }

        /// A server that answers one subscription with `HEAD` followed by the first of
        /// `writes`, then writes each other after a pause of 50 ms (the first is read
        /// with the answer, by the user's task; the socket is handed to the pump before
        /// the next); then it keeps the connection open until the client closes it.
        async fn serve_writes(writes: Vec<Vec<u8>>) -> std::net::SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = accept_request(listener).await;
                let mut first = HEAD.to_vec();
                let mut writes = writes.into_iter();
                first.extend(writes.next().unwrap_or_default());
                s.write_all(&first).await.unwrap();
                for w in writes {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    s.write_all(&w).await.unwrap();
                }
                let mut rest = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest).await;
            });
            addr
        }

        /// An event begun in the task (its data line parsed, the chunk's CRLF half
        /// read) is finished by the pump: the parser and the framing move with the
        /// socket.
        #[tokio::test]
        async fn an_event_begun_in_the_task_is_finished_by_the_pump() {
            let writes = vec![b"8\r\ndata: x\n\r".to_vec(), b"\n1\r\n\n\r\n".to_vec()];
            let run = pumped_run(serve_writes(writes).await, "x", handed_over).await;
            assert!(run.handed_over && run.in_task == 0, "finished by the pump");
            assert_eq!(run.got, ["x 9"]);
            assert!(run.end.is_ok(), "{:?}", run.end);
        }

        /// One event over two chunks, both in one read of the pump.
        #[tokio::test]
        async fn an_event_over_two_chunks_in_one_read() {
            let writes = vec![Vec::new(), chunked(&["data: a", "b\n\n"])];
            let run = pumped_run(serve_writes(writes).await, "ab", handed_over).await;
            assert!(run.handed_over && run.in_task == 0, "read by the pump");
            assert_eq!(run.got, ["ab 10"]);
        }

        /// The body's last chunk ends the stream though the connection stays open.
        #[tokio::test]
        async fn the_last_chunk_ends_the_stream_on_an_open_connection() {
            let run = pumped_run(serve_writes(vec![Vec::new(), script()]).await, "never", handed_over).await;
            assert!(run.handed_over, "read by the pump");
            assert_eq!(run.got.len(), 4, "{:?}", run.got);
            assert!(matches!(run.end, Err(ClientError::Closed)), "{:?}", run.end);
        }

        /// A comment, an event of each kind the parser passes or drops, data over two
        /// lines with CRLF ends, then the body's last chunk.
        fn script() -> Vec<u8> {
            let mut body = chunked(&[
                ": keep-alive\n\n",
                "event: message\ndata: {\"a\":1}\n\n",
                "data: two\r\ndata: lines\r\n\r\n",
                "event: other\ndata: x\n\n",
                "event: gap\ndata: g\n\n",
                "data: last\n\n",
            ]);
            body.extend_from_slice(b"0\r\n\r\n");
            body
        }

        /// What a user reading in its own task gets from `addr`, and how it ends.
        async fn in_task(addr: std::net::SocketAddr) -> (Vec<String>, ClientError) {
            let target = crate::target::Target::parse(&addr.to_string()).unwrap();
            let conn = Conn::open(&target, None, Default::default()).await.unwrap();
            let sub = sub(None);
            let mut sse = Sse::open(conn, &sub, 0).await.unwrap();
            let mut got = Vec::new();
            loop {
                match sse.next(&sub, 0).await {
                    Ok(Received::Message { json, wire }) => {
                        got.push(format!("{} {wire}", String::from_utf8(json.to_vec()).unwrap()))
                    }
                    Ok(_) => unreachable!("a task reading its own stream hands out messages"),
                    Err(e) => return (got, e),
                }
            }
        }

        fn handed_over(sse: &Sse) -> bool {
            sse.pumped.is_some()
        }

        /// The pump reads what the user's task reads: the same events with the same
        /// wire bytes, the body's end as its end; in one piece with the answer's head
        /// or in pieces of 3 bytes after it (read partly in the task), in one piece or
        /// in pieces of 3 bytes after a pause (read wholly by the pump: several events
        /// in one read, chunk lines split across reads).
        #[tokio::test]
        async fn the_pump_reads_the_same_events_as_the_task() {
            let (want, end) = in_task(serve(script(), false, 3).await).await;
            assert!(matches!(end, ClientError::Closed), "{end}");
            let texts: Vec<&str> = want.iter().map(|m| m.rsplit_once(' ').unwrap().0).collect();
            assert_eq!(texts, ["{\"a\":1}", "two\nlines", "g", "last"]);
            for (pause, piece) in [(false, 4096), (false, 3), (true, 4096), (true, 3)] {
                let addr = serve(script(), pause, piece).await;
                let run = pumped_run(addr, "never", handed_over).await;
                assert_eq!(run.got, want, "pause {pause}, pieces of {piece}");
                assert!(matches!(run.end, Err(ClientError::Closed)), "{:?}", run.end);
                if pause {
                    assert!(run.handed_over && run.in_task == 0, "read by the pump");
                }
            }
        }

        /// The last event and the end of the connection come in one read: the pump
        /// reads on to the end, and says first that messages came.
        #[tokio::test]
        async fn the_pump_sees_an_end_that_comes_with_the_last_event() {
            let addr = serve(chunked(&["data: y\n\n"]), true, 4096).await;
            let run = pumped_run(addr, "never", handed_over).await;
            assert!(run.handed_over && run.in_task == 0, "read by the pump");
            assert_eq!(run.got, ["y 9"]);
            assert_eq!(run.nothings, 1);
            assert!(matches!(run.end, Err(ClientError::Closed)), "{:?}", run.end);
        }

        /// Once the user has every id it is owed, nothing more is accounted, and the
        /// end behind it is not reported.
        #[tokio::test]
        async fn nothing_is_accounted_after_the_user_has_all_it_is_owed() {
            let addr = serve(chunked(&["data: x\n\n", "data: z\n\n"]), true, 4096).await;
            let run = pumped_run(addr, "x", handed_over).await;
            assert!(run.handed_over && run.in_task == 0, "read by the pump");
            assert_eq!(run.got, ["x 9"]);
            assert!(run.end.is_ok(), "{:?}", run.end);
        }

        /// A body whose chunking is broken is an SSE error, from the pump as from
        /// the task.
        #[tokio::test]
        async fn a_broken_chunk_is_an_sse_error_from_the_pump() {
            let addr = serve(b"zz\r\ndata: y\n\n\r\n".to_vec(), true, 4096).await;
            let run = pumped_run(addr, "never", handed_over).await;
            assert!(run.handed_over, "read by the pump");
            assert!(run.got.is_empty());
            let end = run.end.unwrap_err();
            assert!(matches!(end, ClientError::Sse(_)), "{end:?}");
        }
    }
}
