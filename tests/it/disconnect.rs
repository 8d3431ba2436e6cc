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
