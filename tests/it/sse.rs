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
