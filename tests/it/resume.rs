//! Resume after a disconnect gives exactly the missed messages, on every transport.

use crate::common::*;

async fn post_n(server: &TestServer, room: &str, n: usize) {
    for i in 0..n {
        server.post(room, "u", &format!("{i}")).await;
    }
}

#[tokio::test]
async fn short_poll_resumes_with_after() {
    let server = TestServer::start().await;
    post_n(&server, "r", 3).await;
    let (_, body) = server.poll("/rooms/r/messages").await;
    let last = body["last_id"].as_u64().unwrap();
    post_n(&server, "r", 4).await;
    let (ids, _) = server
        .poll(&format!("/rooms/r/messages?after={last}"))
        .await;
    assert_eq!(ids, vec![4, 5, 6, 7]);
    server.stop().await;
}

#[tokio::test]
async fn long_poll_resumes_with_after_even_after_its_queue_expired() {
    let mut config = config();
    config.client_idle_ms = 50;
    let server = TestServer::with(config).await;
    server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    post_n(&server, "r", 3).await;
    let got = long_poll_ids(&server, "r", "c", 0, 3).await;
    assert_eq!(got, vec![1, 2, 3]);
    post_n(&server, "r", 4).await;
    // Long enough for the queue to be dropped: history serves the resume.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let got = long_poll_ids(&server, "r", "c", 3, 4).await;
    assert_eq!(got, vec![4, 5, 6, 7]);
    server.stop().await;
}

#[tokio::test]
async fn sse_resumes_with_last_event_id_which_beats_after() {
    let server = TestServer::start().await;
    let mut events = server.sse("/rooms/r/events").await;
    post_n(&server, "r", 3).await;
    assert_eq!(sse_ids(&mut events, 3).await, vec![1, 2, 3]);
    drop(events);
    post_n(&server, "r", 4).await;
    let mut events = server.sse_with("/rooms/r/events?after=1", Some(3)).await;
    assert_eq!(sse_ids(&mut events, 4).await, vec![4, 5, 6, 7]);
    post_n(&server, "r", 1).await;
    assert_eq!(sse_ids(&mut events, 1).await, vec![8]);
    // `after` alone works too.
    let mut events = server.sse("/rooms/r/events?after=6").await;
    assert_eq!(sse_ids(&mut events, 2).await, vec![7, 8]);
    server.stop().await;
}

#[tokio::test]
async fn websocket_resumes_with_after() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/rooms/r/ws").await;
    post_n(&server, "r", 3).await;
    assert_eq!(ws_ids(&mut ws, 3).await, vec![1, 2, 3]);
    ws.close(None).await.unwrap();
    post_n(&server, "r", 4).await;
    let mut ws = server.ws("/rooms/r/ws?after=3").await;
    assert_eq!(ws_ids(&mut ws, 4).await, vec![4, 5, 6, 7]);
    post_n(&server, "r", 1).await;
    assert_eq!(ws_ids(&mut ws, 1).await, vec![8]);
    server.stop().await;
}

#[tokio::test]
async fn resume_past_history_reports_a_gap_on_every_transport() {
    let mut config = config();
    config.history = 3;
    let server = TestServer::with(config).await;
    post_n(&server, "r", 10).await;

    let (ids, body) = server.poll("/rooms/r/messages?after=2").await;
    assert_eq!(ids, vec![8, 9, 10]);
    assert_eq!(body["gap"], true);

    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&after=2&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![8, 9, 10]);
    assert_eq!(body["gap"], true);

    let mut events = server.sse("/rooms/r/events?after=2").await;
    let gap = loop {
        let event = futures_util::StreamExt::next(&mut events).await.unwrap();
        if event.event == "gap" {
            assert!(event.id.is_empty(), "a gap event has no id");
            break serde_json::from_str::<serde_json::Value>(&event.data).unwrap();
        }
    };
    assert_eq!(
        gap,
        serde_json::json!({"gap": true, "after": 2, "next_id": 8})
    );
    assert_eq!(sse_ids(&mut events, 3).await, vec![8, 9, 10]);

    let mut ws = server.ws("/rooms/r/ws?after=2").await;
    assert_eq!(
        ws_next(&mut ws).await,
        serde_json::json!({"gap": true, "after": 2, "next_id": 8})
    );
    assert_eq!(ws_ids(&mut ws, 3).await, vec![8, 9, 10]);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_resumed_beyond_the_newest_id_starts_at_the_newest() {
    // A client back from before a restart: its last id is past anything this room has.
    let server = TestServer::start().await;
    post_n(&server, "r", 3).await;
    let mut events = server.sse_with("/rooms/r/events", Some(100)).await;
    let mut ws = server.ws("/rooms/r/ws?after=100").await;
    post_n(&server, "r", 2).await;
    assert_eq!(sse_next(&mut events).await["id"], 4);
    assert_eq!(sse_next(&mut events).await["id"], 5);
    assert_eq!(ws_ids(&mut ws, 2).await, vec![4, 5]);
    server.stop().await;
}
