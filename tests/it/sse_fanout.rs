//! SSE streams on the room's fan-out: read on bare connections whose chunked bodies
//! are decoded strictly, so that a chunk out of place on the wire fails the test.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// An SSE answer read on a bare connection.
struct RawSse {
    conn: TcpStream,
    /// Bytes read and not yet decoded.
    wire: Vec<u8>,
    /// The body decoded so far and not yet taken as events.
    body: Vec<u8>,
    head: String,
    /// The last chunk has come.
    ended: bool,
}

/// One event of the stream.
#[derive(Debug)]
struct RawEvent {
    id: Option<u64>,
    event: String,
    data: String,
}

impl RawSse {
    /// Subscribes to `path` on `conn` and reads the answer's head.
    async fn open(mut conn: TcpStream, path: &str) -> RawSse {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut raw = RawSse {
            conn,
            wire: Vec::new(),
            body: Vec::new(),
            head: String::new(),
            ended: false,
        };
        while !raw.wire.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(raw.read().await > 0, "the connection ended before the head");
        }
        let end = raw.wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        raw.head = String::from_utf8(raw.wire.drain(..end + 4).collect()).unwrap();
        assert!(raw.head.starts_with("HTTP/1.1 200"), "{}", raw.head);
        assert!(
            raw.head.contains("transfer-encoding: chunked"),
            "{}",
            raw.head
        );
        raw
    }

    /// One read; its byte count.
    async fn read(&mut self) -> usize {
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.conn.read(&mut more))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        self.wire.extend_from_slice(&more[..n]);
        n
    }

    /// Moves whole chunks from `wire` to `body`: a size line in hex, that many bytes,
    /// CRLF; a chunk of size 0 and its CRLF end the body, and nothing may follow.
    fn decode(&mut self) {
        loop {
            assert!(
                !self.ended || self.wire.is_empty(),
                "bytes after the last chunk"
            );
            let Some(line) = self.wire.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.wire[..line]).unwrap();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("a chunk size line: {size:?}"));
            let (start, end) = (line + 2, line + 2 + size);
            if self.wire.len() < end + 2 {
                return;
            }
            assert_eq!(&self.wire[end..end + 2], b"\r\n", "a chunk ends with CRLF");
            self.body.extend_from_slice(&self.wire[start..end]);
            self.wire.drain(..end + 2);
            if size == 0 {
                self.ended = true;
            }
        }
    }

    /// The next event, `None` once the body has ended.
    async fn next(&mut self) -> Option<RawEvent> {
        loop {
            if let Some(at) = self.body.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8(self.body.drain(..at + 2).collect()).unwrap();
                let mut event = RawEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                for line in text.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.parse().unwrap());
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.event = name.into();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = data.into();
                    }
                }
                return Some(event);
            }
            if self.ended {
                assert!(self.body.is_empty(), "a body that ends inside an event");
                return None;
            }
            assert!(
                self.read().await > 0,
                "the connection ended inside the body"
            );
            self.decode();
        }
    }

    /// The ids of the next `n` messages; a `slow` reader pauses for 150 ms after the
    /// first and after every hundredth.
    async fn ids(&mut self, n: usize, slow: bool) -> Vec<u64> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let event = self.next().await.expect("the stream ended");
            // Only an event with data is dispatched (the `retry` and comments are not).
            if event.event == "message" && !event.data.is_empty() {
                ids.push(event.id.unwrap());
                if slow && ids.len() % 100 == 1 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        }
        ids
    }
}

fn first_wrong(ids: &[u64], expected: &[u64]) -> Option<usize> {
    ids.iter().zip(expected).position(|(a, b)| a != b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_fall_behind_the_fan_out_and_catch_up_get_every_message_once_in_order() {
    let server = std::sync::Arc::new(TestServer::start().await);
    const EACH: usize = 400;
    const SENDERS: usize = 4;
    let total = EACH * SENDERS;
    // Streams that keep up, and streams with a small window that read in spurts: the
    // room's SSE fan-out hands these back and takes them up again.
    let mut fast = Vec::new();
    for _ in 0..6 {
        fast.push(server.sse("/rooms/r/events").await);
    }
    let mut slow = Vec::new();
    for _ in 0..4 {
        let conn = with_receive_buffer_tcp(&server, 8 * 1024).await;
        let mut raw = RawSse::open(conn, "/rooms/r/events").await;
        slow.push(tokio::spawn(async move {
            let ids = raw.ids(total, true).await;
            (ids, raw)
        }));
    }
    let text = "y".repeat(4000);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (server, text) = (server.clone(), text.clone());
            tokio::spawn(async move {
                for _ in 0..EACH {
                    server.post("r", "u", &text).await;
                }
            })
        })
        .collect();
    let expected: Vec<u64> = (1..=total as u64).collect();
    let reads = fast.iter_mut().map(|events| sse_ids(events, total));
    for (i, ids) in futures_util::future::join_all(reads)
        .await
        .iter()
        .enumerate()
    {
        assert!(
            ids == &expected,
            "fast stream {i}: wrong from {:?}",
            first_wrong(ids, &expected)
        );
    }
    let mut raws = Vec::new();
    for (i, reader) in slow.into_iter().enumerate() {
        let (ids, raw) = reader.await.unwrap();
        assert!(
            ids == expected,
            "slow stream {i}: wrong from {:?}",
            first_wrong(&ids, &expected)
        );
        assert!(raw.head.contains("connection: close"), "{}", raw.head);
        raws.push(raw);
    }
    for sender in senders {
        sender.await.unwrap();
    }
    // Every stream is served after catching up: the next message reaches each, once.
    let next = server.post("r", "u", "after").await;
    for events in &mut fast {
        assert_eq!(sse_next(events).await["id"], next);
    }
    for raw in &mut raws {
        assert_eq!(raw.ids(1, false).await, [next]);
    }
}

/// At shutdown a stream's body ends with its last chunk, after every message written
/// before it, and the connection closes with nothing after it.
#[tokio::test]
async fn at_shutdown_a_stream_ends_with_its_last_chunk_and_the_connection_closes() {
    let server = TestServer::start().await;
    let conn = TcpStream::connect(server.addr).await.unwrap();
    let mut raw = RawSse::open(conn, "/rooms/r/events").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(server.post("r", "u", &format!("m{i}")).await);
    }
    assert_eq!(raw.ids(20, false).await, ids);
    server.stop().await;
    while raw.next().await.is_some() {}
    assert!(raw.ended);
    assert_eq!(
        raw.read().await,
        0,
        "the connection closes after the last chunk"
    );
}

/// The keep-alive comment comes once the stream has been quiet for the keep-alive
/// interval after the last message the fan-out wrote, not an interval later.
#[tokio::test]
async fn a_keep_alive_follows_the_last_message_by_the_interval() {
    let mut config = config();
    config.sse_keepalive_ms = 400;
    let server = TestServer::with(config).await;
    let conn = TcpStream::connect(server.addr).await.unwrap();
    let mut raw = RawSse::open(conn, "/rooms/r/events").await;
    // A message long before the first keep-alive check.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = server.post("r", "u", "one").await;
    assert_eq!(raw.ids(1, false).await, [id]);
    let after_message = tokio::time::Instant::now();
    while raw
        .body
        .windows(b": keep-alive".len())
        .all(|w| w != b": keep-alive")
    {
        assert!(raw.read().await > 0);
        raw.decode();
    }
    let quiet = after_message.elapsed();
    assert!(
        quiet < Duration::from_millis(650),
        "a keep-alive {quiet:?} after the last message, for an interval of 400 ms"
    );
    server.stop().await;
}

/// A stream that stops reading while the room moves on is told of a gap for what
/// history let go, then gets the rest in order: nothing skipped silently, nothing
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_gets_a_gap_only_for_what_history_lost() {
    let mut config = config();
    config.queue_capacity = 8;
    config.history = 50;
    let server = TestServer::with(config).await;
    let conn = with_receive_buffer_tcp(&server, 8 * 1024).await;
    let mut slow = RawSse::open(conn, "/rooms/r/events").await;
    let mut fast = server.sse("/rooms/r/events").await;
    let text = "x".repeat(4000);
    const MESSAGES: u64 = 2000;
    for _ in 0..MESSAGES / 25 {
        for _ in 0..25 {
            server.post("r", "u", &text).await;
        }
        sse_ids(&mut fast, 25).await;
    }
    let (mut last, mut gaps) = (0, 0);
    while last < MESSAGES {
        let event = slow.next().await.expect("the stream ended");
        match event.event.as_str() {
            "gap" => {
                let gap: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(gap["after"], last, "a gap starts where the reader was");
                let next = gap["next_id"].as_u64().unwrap();
                assert!(next > MESSAGES - 50, "what it skips is gone from history");
                last = next - 1;
                gaps += 1;
            }
            "message" if !event.data.is_empty() => {
                let id = event.id.unwrap();
                assert_eq!(id, last + 1, "no id skipped without a gap, none repeated");
                last = id;
            }
            _ => {}
        }
    }
    assert!(gaps >= 1, "the stalled stream fell behind the history");
    server.stop().await;
}
