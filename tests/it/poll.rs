//! Short polling: delivery, `after`, `limit`, `last_id`.

use crate::common::*;

#[tokio::test]
async fn a_posted_message_is_delivered_with_every_field() {
    let server = TestServer::start().await;
    let before = now_micros();
    let id = server.post("lobby", "alice", "hello").await;
    assert_eq!(id, 1);
    let (ids, body) = server.poll("/rooms/lobby/messages").await;
    assert_eq!(ids, vec![1]);
    let m = &body["messages"][0];
    assert_eq!(m["room"], "lobby");
    assert_eq!(m["user"], "alice");
    assert_eq!(m["text"], "hello");
    assert!(m["client_ts"].as_i64().unwrap() >= before);
    assert!(m["server_ts"].as_i64().unwrap() >= m["client_ts"].as_i64().unwrap());
    assert_eq!(body["last_id"], 1);
    server.stop().await;
}

#[tokio::test]
async fn after_limit_and_last_id() {
    let server = TestServer::start().await;
    for i in 0..5 {
        server.post("r", "u", &format!("m{i}")).await;
    }
    let (ids, body) = server.poll("/rooms/r/messages?after=2&limit=2").await;
    assert_eq!(ids, vec![3, 4]);
    assert_eq!(body["last_id"], 4);
    let (ids, body) = server.poll("/rooms/r/messages?after=4").await;
    assert_eq!(ids, vec![5]);
    assert_eq!(body["last_id"], 5);
    // Nothing new: an empty list and the room's newest id.
    let (ids, body) = server.poll("/rooms/r/messages?after=5").await;
    assert!(ids.is_empty());
    assert_eq!(body["last_id"], 5);
    // Beyond the newest id tells a client where "now" is.
    let (ids, body) = server.poll("/rooms/r/messages?after=999999999").await;
    assert!(ids.is_empty());
    assert_eq!(body["last_id"], 5);
    assert!(body.get("gap").is_none());
    server.stop().await;
}

#[tokio::test]
async fn limit_defaults_to_100_and_caps_at_1000() {
    let server = TestServer::start().await;
    for _ in 0..150 {
        server.post("r", "u", "x").await;
    }
    let (ids, _) = server.poll("/rooms/r/messages").await;
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    let (ids, _) = server.poll("/rooms/r/messages?limit=1000").await;
    assert_eq!(ids.len(), 150);
    let (status, _) = server.get_json("/rooms/r/messages?limit=1001").await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn rooms_are_separate() {
    let server = TestServer::start().await;
    server.post("a", "u", "in a").await;
    assert_eq!(server.post("b", "u", "in b").await, 1);
    let (ids, body) = server.poll("/rooms/b/messages").await;
    assert_eq!(ids, vec![1]);
    assert_eq!(body["messages"][0]["text"], "in b");
    server.stop().await;
}
