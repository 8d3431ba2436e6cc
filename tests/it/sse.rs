//! Server-Sent Events: headers, `retry`, events, keep-alive, new-messages-only start.

use std::time::Duration;

use futures_util::StreamExt;

use crate::common::*;

#[tokio::test]
async fn headers_retry_and_a_message_event() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/rooms/r/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"retry: 1000\n\n");
    let id = server.post("r", "alice", "hi").await;
    let chunk = body.next().await.unwrap().unwrap();
    let text = std::str::from_utf8(&chunk).unwrap();
    let expected_start = format!("id: {id}\nevent: message\ndata: {{");
    assert!(text.starts_with(&expected_start), "{text}");
    assert!(text.ends_with("}\n\n"));
    server.stop().await;
}

#[tokio::test]
async fn a_stream_starts_with_new_messages_only() {
    let server = TestServer::start().await;
    server.post("r", "u", "before").await;
    let mut events = server.sse("/rooms/r/events").await;
    server.post("r", "u", "after").await;
    let m = sse_next(&mut events).await;
    assert_eq!(m["id"], 2);
    assert_eq!(m["text"], "after");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() {
    let mut config = config();
    config.sse_keepalive_ms = 100;
    let server = TestServer::with(config).await;
    let response = server
        .http
        .get(server.url("/rooms/r/events"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&chunk[..], b": keep-alive\n\n");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_last_event_id_is_400() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/rooms/r/events"))
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

/// Reads an SSE answer on a bare connection until `n` message ids have come: the ids
/// of its `id:` lines, in order, and the head. A `slow` reader pauses for 150 ms
/// after the first id and after every hundredth one.
async fn raw_sse_ids(mut conn: tokio::net::TcpStream, n: usize, slow: bool) -> (Vec<u64>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    conn.write_all(b"GET /rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (mut buf, mut head, mut ids) = (Vec::new(), None, Vec::new());
    let mut line_start = 0;
    while ids.len() < n {
        let mut more = [0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut more))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(got > 0, "the stream ended after {} ids", ids.len());
        buf.extend_from_slice(&more[..got]);
        if head.is_none() {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            head = Some(String::from_utf8(buf[..end].to_vec()).unwrap());
            line_start = end + 4;
        }
        while let Some(len) = buf[line_start..].iter().position(|&b| b == b'\n') {
            let line = &buf[line_start..line_start + len];
            if let Some(id) = line.strip_prefix(b"id: ") {
                ids.push(std::str::from_utf8(id).unwrap().parse().unwrap());
                if slow && ids.len() % 100 == 1 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
            line_start += len + 1;
        }
    }
    (ids, head.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_fall_behind_the_fan_out_and_catch_up_get_every_message_once_in_order() {
    let server = std::sync::Arc::new(TestServer::start().await);
    const EACH: usize = 400;
    const SENDERS: usize = 4;
    let total = EACH * SENDERS;
    // Streams that keep up, and streams with a small window that read in spurts: the
    // room's SSE fan-out hands these back and takes them up again, many times over.
    let mut fast = Vec::new();
    for _ in 0..6 {
        fast.push(server.sse("/rooms/r/events").await);
    }
    let mut slow = Vec::new();
    for _ in 0..4 {
        let conn = with_receive_buffer_tcp(&server, 8 * 1024).await;
        slow.push(tokio::spawn(raw_sse_ids(conn, total, true)));
    }
    // Every stream is subscribed before the first message.
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    for (i, reader) in slow.into_iter().enumerate() {
        let (ids, head) = reader.await.unwrap();
        assert!(
            ids == expected,
            "slow stream {i}: wrong from {:?}",
            first_wrong(&ids, &expected)
        );
        // Served on the lean path, which gives the stream its connection.
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
    }
    for sender in senders {
        sender.await.unwrap();
    }
    // Every stream is served after catching up: the next message reaches each, once.
    let next = server.post("r", "u", "after").await;
    for events in &mut fast {
        assert_eq!(sse_next(events).await["id"], next);
    }
}

fn first_wrong(ids: &[u64], expected: &[u64]) -> Option<usize> {
    ids.iter().zip(expected).position(|(a, b)| a != b)
}

/// A request the lean path hands to hyper (HTTP/1.0 here) gets the same stream, as a
/// body hyper writes: the stream is not taken over there.
#[tokio::test]
async fn a_stream_served_by_hyper_delivers_as_well() {
    use tokio::io::AsyncWriteExt;

    let server = TestServer::start().await;
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET /rooms/r/events HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    read_until(&mut conn, &mut got, "retry: 1000\n\n").await;
    assert!(got.starts_with("HTTP/1.0 200"), "{got}");
    assert!(!got.to_lowercase().contains("transfer-encoding"), "{got}");
    let id = server.post("r", "u", "through hyper").await;
    read_until(&mut conn, &mut got, &format!("id: {id}\nevent: message\n")).await;
    read_until(&mut conn, &mut got, "through hyper").await;
    server.stop().await;
}

/// Reads `conn` into `got` until it holds `want`.
async fn read_until(conn: &mut tokio::net::TcpStream, got: &mut String, want: &str) {
    use tokio::io::AsyncReadExt;

    while !got.contains(want) {
        let mut more = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut more))
            .await
            .expect("bytes within 5 s")
            .unwrap();
        assert!(n > 0, "the stream ended before {want:?}");
        got.push_str(std::str::from_utf8(&more[..n]).unwrap());
    }
}
