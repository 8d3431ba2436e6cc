//! WebSocket: `GET /rooms/{room}/ws?after=N` upgraded on the user's connection. Text
//! messages are passed on; pings are answered with pongs; a close frame ends the
//! connection.
//!
//! Frames are read here, in the connection's own 4 KiB buffer, rather than through
//! tokio-tungstenite: its adapter between async and blocking I/O registers and wakes
//! a waker around every read, and each message is split out into its own buffer,
//! which the profile showed costing about a tenth of the loadgen's CPU per delivery.
//! The checks a client owes the protocol (RFC 6455) are kept: no reserved bits (no
//! extension is negotiated), no masked frame from the server, control frames whole and
//! at most 125 bytes, continuation frames only inside a fragmented message, text that
//! is UTF-8, and the same size limits as tungstenite's defaults.

use super::{Received, Receiver, Sub};
use crate::error::ClientError;
use crate::h1::Conn;

/// tungstenite's default limits.
const MAX_FRAME: u64 = 16 << 20;
const MAX_MESSAGE: usize = 64 << 20;

pub struct Ws {
    conn: Conn,
    /// A fragmented message being put together: whether it is text, and its bytes.
    fragmented: Option<bool>,
    message: Vec<u8>,
    /// The last complete message was put together in `message`, not read in place.
    from_fragments: bool,
    /// Where the last complete message lies in the connection's unread bytes.
    in_place: (usize, usize),
    /// The bytes of the last message's frames, headers included.
    wire: usize,
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

fn violation(why: &str) -> ClientError {
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

impl Receiver for Ws {
    const NAME: &'static str = "ws";
    const STREAM: bool = true;

    async fn open(http: Conn, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError> {
        let conn = http
            .upgrade(&format!("/rooms/{}/ws?after={after}", sub.room))
            .await?;
        Ok(Ws {
            conn,
            fragmented: None,
            message: Vec::new(),
            from_fragments: false,
            in_place: (0, 0),
            wire: 0,
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, _cursor: u64) -> Result<Received<'_>, ClientError> {
        // Errors keep the kind they had under tungstenite: `websocket`.
        let got = self.read_message().await.map_err(|e| match e {
            ClientError::Io(e) => ClientError::Ws(e.to_string()),
            e => e,
        })?;
        if !got {
            return Ok(Received::Nothing);
        }
        let json = if self.from_fragments {
            &self.message[..]
        } else {
            let (start, end) = self.in_place;
            &self.conn.unread()[start..end]
        };
        Ok(Received::Message {
            json,
            wire: self.wire,
        })
    }
}

impl Ws {
    /// Reads frames up to the end of a text message (`true`; where it lies is in
    /// `from_fragments` and `in_place`) or of a binary one (`false`).
    async fn read_message(&mut self) -> Result<bool, ClientError> {
        // The last message read in place is used now.
        self.conn.consume(self.in_place.1);
        self.in_place = (0, 0);
        self.wire = 0;
        loop {
            let h = match header(self.conn.unread())? {
                Some(h) if (self.conn.unread().len() as u64) >= h.head as u64 + h.len => h,
                h => {
                    let want = h.map_or(0, |h| h.head + h.len as usize);
                    if self.conn.fill_to(want).await? == 0 {
                        return Err(violation("connection reset without closing handshake"));
                    }
                    continue;
                }
            };
            let (start, end) = (h.head, h.head + h.len as usize);
            if h.opcode <= 2 {
                self.wire += end;
            }
            match (h.opcode, self.fragmented) {
                // Close: the server is going away.
                (8, _) => return Err(ClientError::Closed),
                (9, _) => {
                    let payload = self.conn.unread()[start..end].to_vec();
                    self.conn.consume(end);
                    self.pong(&payload).await?;
                }
                (10, _) => self.conn.consume(end),
                (1 | 2, Some(_)) => return Err(violation("new message inside a fragmented one")),
                (0, None) => return Err(violation("continuation without a message")),
                (1 | 2, None) if h.fin => {
                    let text = h.opcode == 1;
                    if text && std::str::from_utf8(&self.conn.unread()[start..end]).is_err() {
                        return Err(violation("text is not UTF-8"));
                    }
                    if !text {
                        self.conn.consume(end);
                        return Ok(false);
                    }
                    self.from_fragments = false;
                    self.in_place = (start, end);
                    return Ok(true);
                }
                (opcode, _) => {
                    if self.fragmented.is_none() {
                        self.fragmented = Some(opcode == 1);
                        self.message.clear();
                    }
                    if self.message.len() + (end - start) > MAX_MESSAGE {
                        return Err(violation("message too large"));
                    }
                    self.message
                        .extend_from_slice(&self.conn.unread()[start..end]);
                    self.conn.consume(end);
                    if h.fin {
                        let text = self.fragmented.take() == Some(true);
                        if !text {
                            return Ok(false);
                        }
                        if std::str::from_utf8(&self.message).is_err() {
                            return Err(violation("text is not UTF-8"));
                        }
                        self.from_fragments = true;
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Answers a ping: a pong with the same payload, masked as a client must.
    async fn pong(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mask: [u8; 4] = rand::random();
        let mut frame = Vec::with_capacity(6 + payload.len());
        frame.extend_from_slice(&[0x8a, 0x80 | payload.len() as u8]);
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.conn.write(&frame).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn fragments_pings_binary_and_close_as_tungstenite_handled_them() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while !req.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                .unwrap();
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nsec-websocket-accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            out.extend_from_slice(&[0x89, 2, b'p', b'q']); // ping
            out.extend_from_slice(&[0x01, 2, b'h', b'e']); // text, first fragment
            out.extend_from_slice(&[0x8a, 0]); // pong, between fragments
            out.extend_from_slice(&[0x80, 3, b'l', b'l', b'o']); // last fragment
            out.extend_from_slice(&[0x82, 1, 0xff]); // binary
            out.extend_from_slice(&[0x81, 1, b'x']);
            out.extend_from_slice(&[0x88, 0]); // close
            for piece in out.chunks(3) {
                s.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            let mut pong = [0u8; 8];
            s.read_exact(&mut pong).await.unwrap();
            pong
        });
        let target = crate::target::Target::parse(&addr.to_string()).unwrap();
        let conn = Conn::open(&target, None, Default::default()).await.unwrap();
        let sub = Sub {
            room: "r",
            client: "c",
            poll_interval: std::time::Duration::from_secs(1),
            long_poll_timeout_ms: 0,
            phase: 0.0,
        };
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
        let pong = server.await.unwrap();
        assert_eq!(pong[..2], [0x8a, 0x82]);
        let mask = &pong[2..6];
        assert_eq!([pong[6] ^ mask[0], pong[7] ^ mask[1]], *b"pq");
    }
}
