//! A client that goes away is noticed at once: its task ends, its slot is freed, and
//! the server does not keep writing to it.

use std::time::Duration;

use crate::common::*;

const OPEN_SSE: &str = "lab_open_connections{transport=\"sse\"}";
const OPEN_WS: &str = "lab_open_connections{transport=\"ws\"}";
const OPEN_LP: &str = "lab_open_connections{transport=\"long_poll\"}";

#[tokio::test]
async fn an_sse_client_that_disconnects_frees_its_stream() {
    let server = TestServer::start().await;
    let events = server.sse("/rooms/r/events").await;
    server.wait_for_metric(OPEN_SSE, 1.0).await;
    drop(events);
    // Noticed without any message being written to it.
    server.wait_for_metric(OPEN_SSE, 0.0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_that_closes_or_drops_frees_its_session() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/rooms/r/ws").await;
    let dropped = server.ws("/rooms/r/ws").await;
    server.wait_for_metric(OPEN_WS, 2.0).await;
    ws.close(None).await.unwrap();
    server.wait_for_metric(OPEN_WS, 1.0).await;
    drop(dropped);
    server.wait_for_metric(OPEN_WS, 0.0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_long_poll_given_up_frees_its_slot_and_keeps_the_queue() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let request = http
        .get(server.url("/rooms/r/long-poll?client=c&timeout_ms=30000"))
        .send();
    let abandoned = tokio::time::timeout(Duration::from_millis(300), request).await;
    assert!(abandoned.is_err(), "the poll was held");
    drop(http);
    server.wait_for_metric(OPEN_LP, 0.0).await;
    // What is posted now waits in the queue for the client's next poll.
    server.post("r", "u", "x").await;
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![1]);
    server.stop().await;
}

#[tokio::test]
async fn an_sse_reader_that_stops_reading_is_closed_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut config = config();
    config.write_timeout_ms = 300;
    let server = TestServer::with(config).await;
    // Asks for the stream, then never reads a byte.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(b"GET /rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    server.wait_for_metric(OPEN_SSE, 1.0).await;
    // Posts until the socket buffers are full and a write has waited 300 ms.
    let text = "x".repeat(4000);
    let mut posted = 0;
    while server.metric(OPEN_SSE).await > 0.0 {
        assert!(posted < 20_000, "a stream nobody reads was never closed");
        for _ in 0..50 {
            server.post("r", "u", &text).await;
        }
        posted += 50;
    }
    // The room serves on.
    let (status, _) = server.get_json("/rooms/r/messages?after=0").await;
    assert_eq!(status, 200);
    drop(stalled);
    server.stop().await;
}
