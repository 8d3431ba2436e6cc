//! WebSocket: `GET /rooms/{room}/ws?after=N` upgraded on the user's connection. Text
//! messages are passed on; pings are answered with pongs; a close frame ends the
//! connection.
//!
//! Frames are read by [`Frames::step`], in the connection's own buffer (the user's
//! `Conn` until the socket is handed to the worker's pump, `crate::pump`, then the
//! pump's), rather than through tokio-tungstenite: its adapter between async and
//! blocking I/O registers and wakes a waker around every read, and each message is
//! split out into its own buffer,
//! which the profile showed costing about a tenth of the loadgen's CPU per delivery.
//! The checks a client owes the protocol (RFC 6455) are kept: no reserved bits (no
//! extension is negotiated), no masked frame from the server, control frames whole and
//! at most 125 bytes, continuation frames only inside a fragmented message, text that
//! is UTF-8, and the same size limits as tungstenite's defaults.

use std::rc::Rc;

use super::{Received, Receiver, Sub};
use crate::error::ClientError;
use crate::h1::Conn;
use crate::pump::{Decoder, Pump, Pumped};

/// tungstenite's default limits.
const MAX_FRAME: u64 = 16 << 20;
const MAX_MESSAGE: usize = 64 << 20;

pub struct Ws {
    /// The user's connection, until its socket is handed to the worker's pump.
    conn: Option<Conn>,
    /// The pump to hand it to, and how the user's messages are accounted there.
    pump: Option<(Rc<Pump>, crate::pump::Feed)>,
    pumped: Option<Pumped>,
    frames: Frames,
    /// The last complete message was put together in `frames.message`, not read in
    /// place.
    from_fragments: bool,
    /// Where the last complete message lies in the connection's unread bytes.
    in_place: (usize, usize),
    /// The bytes of the last message's frames, headers included.
    wire: usize,
}

/// Where a message spread over frames stands, and the bytes of the frames of the
/// message being read.
#[derive(Default)]
pub struct Frames {
    /// A fragmented message being put together: whether it is text.
    fragmented: Option<bool>,
    /// Its bytes; after [`Step::Assembled`], the whole message.
    pub message: Vec<u8>,
    wire: usize,
}

/// What the frame at the start of a buffer was; each but `More` takes the frame's
/// bytes (the `usize` beside it) off the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A whole frame needs at least this many bytes.
    More(usize),
    /// A text message in one frame: its payload is `start..` the frame's end.
    Text { start: usize, wire: usize },
    /// A text message of several frames, whole in [`Frames::message`].
    Assembled { wire: usize },
    /// A ping whose payload is `start..` the frame's end.
    Ping { start: usize },
    /// A binary message, whole.
    Binary,
    /// A pong, or a fragment of a message not yet whole.
    Skip,
}

impl Frames {
    /// Reads the frame at the start of `b`: what it was and how many bytes it took.
    pub fn step(&mut self, b: &[u8]) -> Result<(Step, usize), ClientError> {
        let h = match header(b)? {
            Some(h) if (b.len() as u64) >= h.head as u64 + h.len => h,
            h => return Ok((Step::More(h.map_or(2, |h| h.head + h.len as usize)), 0)),
        };
        let (start, end) = (h.head, h.head + h.len as usize);
        if h.opcode <= 2 {
            self.wire += end;
        }
        let step = match (h.opcode, self.fragmented) {
            // Close: the server is going away.
            (8, _) => return Err(ClientError::Closed),
            (9, _) => Step::Ping { start },
            (10, _) => Step::Skip,
            (1 | 2, Some(_)) => return Err(violation("new message inside a fragmented one")),
            (0, None) => return Err(violation("continuation without a message")),
            (1 | 2, None) if h.fin => {
                let wire = std::mem::take(&mut self.wire);
                if h.opcode == 2 {
                    Step::Binary
                } else if std::str::from_utf8(&b[start..end]).is_err() {
                    return Err(violation("text is not UTF-8"));
                } else {
                    Step::Text { start, wire }
                }
            }
            (opcode, _) => {
                if self.fragmented.is_none() {
                    self.fragmented = Some(opcode == 1);
                    self.message.clear();
                }
                if self.message.len() + (end - start) > MAX_MESSAGE {
                    return Err(violation("message too large"));
                }
                self.message.extend_from_slice(&b[start..end]);
                if !h.fin {
                    Step::Skip
                } else {
                    let wire = std::mem::take(&mut self.wire);
                    if self.fragmented.take() != Some(true) {
                        Step::Binary
                    } else if std::str::from_utf8(&self.message).is_err() {
                        return Err(violation("text is not UTF-8"));
                    } else {
                        Step::Assembled { wire }
                    }
                }
            }
        };
        Ok((step, end))
    }
}

/// One frame's header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    /// Header bytes, then payload bytes.
    head: usize,
    len: u64,
}

pub(crate) fn violation(why: &str) -> ClientError {
    ClientError::Ws(why.to_owned())
}

/// The header at the start of `b`, or `None` if more bytes are needed.
fn header(b: &[u8]) -> Result<Option<Header>, ClientError> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(violation("reserved bits set"));
    }
    if b1 & 0x80 != 0 {
        return Err(violation("masked frame from the server"));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (head, len) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(x) => (4, u64::from(u16::from_be_bytes([x[0], x[1]]))),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(x) => (10, u64::from_be_bytes(x.try_into().expect("8 bytes"))),
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    match opcode {
        0..=2 if len > MAX_FRAME => return Err(violation("frame too large")),
        0..=2 => {}
        8..=10 if !fin || len > 125 => return Err(violation("bad control frame")),
        8..=10 => {}
        _ => return Err(violation("unknown opcode")),
    }
    Ok(Some(Header {
        fin,
        opcode,
        head,
        len,
    }))
}

/// A pong with `payload`, masked as a client must.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.extend_from_slice(&[0x8a, 0x80 | payload.len() as u8]);
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

impl Receiver for Ws {
    const NAME: &'static str = "ws";
    const STREAM: bool = true;
    const PUMPED: bool = true;

    async fn open(http: Conn, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError> {
        let conn = http
            .upgrade(&format!("/rooms/{}/ws?after={after}", sub.room))
            .await?;
        Ok(Ws {
            conn: Some(conn),
            pump: sub.pump.clone(),
            pumped: None,
            frames: Frames::default(),
            from_fragments: false,
            in_place: (0, 0),
            wire: 0,
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, _cursor: u64) -> Result<Received<'_>, ClientError> {
        // The last message read in place is used now.
        if let Some(conn) = self.conn.as_mut() {
            conn.consume(self.in_place.1);
            self.in_place = (0, 0);
        }
        if self.pumped.is_none() && !self.hand_over()? {
            // Errors keep the kind they had under tungstenite: `websocket`.
            let got = self.read_message().await.map_err(|e| match e {
                ClientError::Io(e) => ClientError::Ws(e.to_string()),
                e => e,
            })?;
            if !got {
                return Ok(Received::Nothing);
            }
            let json = if self.from_fragments {
                &self.frames.message[..]
            } else {
                let (start, end) = self.in_place;
                &self.conn.as_ref().expect("read in the task").unread()[start..end]
            };
            return Ok(Received::Message {
                json,
                wire: self.wire,
            });
        }
        self.pumped.as_mut().expect("handed over above").next().await
    }
}

impl Ws {
    /// Hands the socket to the pump once no whole frame is left in the connection's
    /// buffer (those are read here, a ping's pong written by the task); whether it
    /// was handed over.
    fn hand_over(&mut self) -> Result<bool, ClientError> {
        let Some((pump, feed)) = self.pump.as_ref() else {
            return Ok(false);
        };
        let Some(conn) = self.conn.as_ref() else {
            return Ok(false);
        };
        if let Some(h) = header(conn.unread())?
            && conn.unread().len() as u64 >= h.head as u64 + h.len
        {
            return Ok(false);
        }
        let fd = conn.raw_fd();
        let parts = || {
            let conn = self.conn.take().expect("checked above");
            Ok((conn.into_parts()?, Decoder::Ws(std::mem::take(&mut self.frames))))
        };
        match pump.hand_over(fd, parts, feed.clone()) {
            Ok(Some(pumped)) => self.pumped = Some(pumped),
            // The socket stays with the user, read in its task.
            Ok(None) => self.pump = None,
            Err(e) => return Err(ClientError::Ws(e.to_string())),
        }
        Ok(self.pumped.is_some())
    }

    /// Reads frames up to the end of a text message (`true`; where it lies is in
    /// `from_fragments` and `in_place`) or of a binary one (`false`).
    async fn read_message(&mut self) -> Result<bool, ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(violation("the connection was lost on its way to the pump"));
        };
        loop {
            let (step, end) = match self.frames.step(conn.unread())? {
                (Step::More(want), _) => {
                    if conn.fill_to(want).await? == 0 {
                        return Err(violation("connection reset without closing handshake"));
                    }
                    continue;
                }
                s => s,
            };
            match step {
                Step::Text { start, wire } => {
                    self.from_fragments = false;
                    self.in_place = (start, end);
                    self.wire = wire;
                    return Ok(true);
                }
                Step::Assembled { wire } => {
                    conn.consume(end);
                    self.from_fragments = true;
                    self.wire = wire;
                    return Ok(true);
                }
                Step::Ping { start } => {
                    let frame = pong_frame(&conn.unread()[start..end]);
                    conn.consume(end);
                    conn.write(&frame).await?;
                }
                Step::Binary => {
                    conn.consume(end);
                    return Ok(false);
                }
                Step::Skip => conn.consume(end),
                Step::More(_) => unreachable!("handled above"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::testing::{accept_request, pumped_run, sub};

    #[test]
    fn headers_of_every_length_and_the_protocols_refusals() {
        let h = |b: &[u8]| header(b).map_err(|e| e.to_string());
        assert_eq!(h(&[0x81]), Ok(None));
        assert_eq!(
            h(&[0x81, 5]),
            Ok(Some(Header { fin: true, opcode: 1, head: 2, len: 5 }))
        );
        assert_eq!(
            h(&[0x01, 126, 1, 0]),
            Ok(Some(Header { fin: false, opcode: 1, head: 4, len: 256 }))
        );
        assert_eq!(h(&[0x01, 126, 1]), Ok(None));
        assert_eq!(
            h(&[0x80, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            Ok(Some(Header { fin: true, opcode: 0, head: 10, len: 65536 }))
        );
        assert!(h(&[0x82, 127, 0, 0, 0, 0, 2, 0, 0, 0]).is_err()); // 32 MiB frame
        assert!(h(&[0xc1, 1]).is_err()); // RSV1
        assert!(h(&[0x81, 0x81]).is_err()); // masked
        assert!(h(&[0x09, 0]).is_err()); // fragmented ping
        assert!(h(&[0x89, 126, 0, 126]).is_err()); // long ping
        assert!(h(&[0x83, 0]).is_err()); // reserved opcode
        assert!(h(&[0x89, 0]).unwrap().is_some());
    }

    /// Accepts one connection on `listener` and reads its upgrade request: the
    /// connection and the 101 answer to write.
    async fn accept_upgrade(listener: tokio::net::TcpListener) -> (tokio::net::TcpStream, String) {
        let (s, req) = accept_request(listener).await;
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-key: "))
            .unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nsec-websocket-accept: {accept}\r\n\r\n"
        );
        (s, head)
    }

    /// A server that upgrades and writes a ping, a text message in two fragments with
    /// a pong between them, a binary message, a text message and a close, three bytes
    /// at a time (after a pause past its upgrade answer, if `pause`); it answers the
    /// pong it got.
    async fn script_server(pause: bool) -> (std::net::SocketAddr, tokio::task::JoinHandle<[u8; 8]>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, head) = accept_upgrade(listener).await;
            let mut out = Vec::new();
            out.extend_from_slice(&[0x89, 2, b'p', b'q']); // ping
            out.extend_from_slice(&[0x01, 2, b'h', b'e']); // text, first fragment
            out.extend_from_slice(&[0x8a, 0]); // pong, between fragments
            out.extend_from_slice(&[0x80, 3, b'l', b'l', b'o']); // last fragment
            out.extend_from_slice(&[0x82, 1, 0xff]); // binary
            out.extend_from_slice(&[0x81, 1, b'x']);
            out.extend_from_slice(&[0x88, 0]); // close
            if pause {
                s.write_all(head.as_bytes()).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            } else {
                out.splice(0..0, head.into_bytes());
            }
            for piece in out.chunks(3) {
                s.write_all(piece).await.unwrap();
                if pause {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            let mut pong = [0u8; 8];
            s.read_exact(&mut pong).await.unwrap();
            pong
        });
        (addr, server)
    }

    fn assert_pong_of_pq(pong: [u8; 8]) {
        assert_eq!(pong[..2], [0x8a, 0x82]);
        let mask = &pong[2..6];
        assert_eq!([pong[6] ^ mask[0], pong[7] ^ mask[1]], *b"pq");
    }

    #[tokio::test]
    async fn fragments_pings_binary_and_close_as_tungstenite_handled_them() {
        let (addr, server) = script_server(false).await;
        let target = crate::target::Target::parse(&addr.to_string()).unwrap();
        let conn = Conn::open(&target, None, Default::default()).await.unwrap();
        let sub = sub(None);
        let mut ws = Ws::open(conn, &sub, 0).await.unwrap();
        let mut got = Vec::new();
        let end = loop {
            match ws.next(&sub, 0).await {
                Ok(Received::Message { json, wire }) => {
                    got.push(format!("{} {wire}", String::from_utf8(json.to_vec()).unwrap()))
                }
                Ok(Received::Nothing) => got.push("-".into()),
                Ok(Received::Page(_)) => unreachable!(),
                Err(e) => break e,
            }
        };
        // Wire bytes: the two text fragments' frames, not the pong between them.
        assert_eq!(got, ["hello 9", "-", "x 3"]);
        assert!(matches!(end, ClientError::Closed));
        assert_pong_of_pq(server.await.unwrap());
    }

    /// The same frames with the worker's pump: what came with the upgrade's answer is
    /// read in the task, the rest by the pump once the socket is handed over (all of
    /// it, after a pause), frames split across reads included.
    #[tokio::test]
    async fn the_pump_reads_the_same_frames_and_hands_back_the_close() {
        for pause in [false, true] {
            let (addr, server) = script_server(pause).await;
            let run = pumped_run(addr, "never", |ws: &Ws| ws.pumped.is_some()).await;
            assert_eq!(run.got, ["hello 9", "x 3"], "pause: {pause}");
            assert!(matches!(run.end, Err(ClientError::Closed)), "{:?}", run.end);
            if pause {
                assert!(run.handed_over, "handed over before the frames came");
            }
            assert_pong_of_pq(server.await.unwrap());
        }
    }

    /// A server that upgrades, waits (so that the socket is handed to the pump with
    /// nothing buffered), writes `frames` at once and closes the TCP connection.
    async fn upgrade_then(frames: Vec<u8>) -> std::net::SocketAddr {
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, head) = accept_upgrade(listener).await;
            s.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s.write_all(&frames).await.unwrap();
        });
        addr
    }

    /// The last frames and the end of the stream come in one read: the pump reads on to
    /// the end rather than waiting for an edge that will not come.
    #[tokio::test]
    async fn the_pump_sees_an_end_that_comes_with_the_last_frames() {
        let addr = upgrade_then(vec![0x81, 1, b'y']).await;
        let run = pumped_run(addr, "never", |ws: &Ws| ws.pumped.is_some()).await;
        assert!(run.handed_over && run.in_task == 0, "read by the pump");
        assert_eq!(run.got, ["y 3"]);
        // A message came before the end: `Nothing` first, so that the user
        // counts a delivery before the break and resumes at once.
        assert_eq!(run.nothings, 1);
        let end = run.end.unwrap_err().to_string();
        assert!(end.contains("without closing handshake"), "{end}");
    }

    /// Once the user has every id it is owed, the pump accounts nothing more and does
    /// not report the close behind it as an error.
    #[tokio::test]
    async fn nothing_is_accounted_after_the_user_has_all_it_is_owed() {
        let frames = vec![0x81, 1, b'x', 0x81, 1, b'z', 0x88, 0];
        let addr = upgrade_then(frames).await;
        let run = pumped_run(addr, "x", |ws: &Ws| ws.pumped.is_some()).await;
        assert!(run.handed_over && run.in_task == 0, "read by the pump");
        assert_eq!(run.got, ["x 3"]);
        assert!(run.end.is_ok(), "{:?}", run.end);
    }
}
