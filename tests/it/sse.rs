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
