//! Graceful shutdown: a held long poll is answered, SSE ends, WebSocket gets 1001,
//! and `run` returns within 5 s.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_ends_and_closes_everything() {
    let server = TestServer::start().await;
    server.post("r", "u", "x").await;
    let long_poll = {
        let http = server.http.clone();
        let url = server.url("/rooms/r/long-poll?client=c&timeout_ms=30000");
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    };
    let sse = server
        .http
        .get(server.url("/rooms/r/events"))
        .send()
        .await
        .unwrap();
    let mut sse_body = sse.bytes_stream();
    sse_body.next().await.unwrap().unwrap();
    let mut ws = server.ws("/rooms/r/ws").await;
    server
        .wait_for_metric("lab_open_connections{transport=\"long_poll\"}", 1.0)
        .await;

    let started = Instant::now();
    server.token.cancel();

    let response = long_poll.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["messages"], serde_json::json!([]));
    assert_eq!(body["last_id"], 1);

    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = sse_body.next().await {
            chunk.expect("the stream ends cleanly");
        }
    })
    .await;
    assert!(end.is_ok(), "the SSE stream ended");

    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, Some(CloseCode::Away));

    tokio::time::timeout(Duration::from_secs(5), server.handle)
        .await
        .expect("run returns")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
