//! One room, 100 messages from a mix of POST and WebSocket senders: every transport
//! sees the same ids in the same order, 1..=100.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_transports_see_the_same_sequence() {
    let server = TestServer::start().await;
    let room = "mix";
    let mut ws_reader = server.ws(&format!("/rooms/{room}/ws")).await;
    let mut sse = server.sse(&format!("/rooms/{room}/events")).await;
    // The long-poll client's queue starts with its first poll.
    server
        .poll(&format!("/rooms/{room}/long-poll?client=lp&timeout_ms=0"))
        .await;

    let mut senders = Vec::new();
    for s in 0..2 {
        let mut ws = server.ws(&format!("/rooms/{room}/ws?user=ws{s}")).await;
        senders.push(tokio::spawn(async move {
            for i in 0..25 {
                let frame = format!(r#"{{"text":"ws{s} {i}","client_ts":{}}}"#, now_micros());
                ws.send(Message::text(frame)).await.unwrap();
            }
            Some(ws)
        }));
    }
    for p in 0..2 {
        let http = server.http.clone();
        let url = server.url(&format!("/rooms/{room}/messages"));
        senders.push(tokio::spawn(async move {
            for i in 0..25 {
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({"user": format!("post{p}"), "text": format!("{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
            }
            None
        }));
    }

    let expected: Vec<u64> = (1..=100).collect();
    let long_polled = long_poll_ids(&server, room, "lp", 0, 100).await;
    assert_eq!(long_polled, expected, "long poll");
    assert_eq!(sse_ids(&mut sse, 100).await, expected, "sse");
    assert_eq!(ws_ids(&mut ws_reader, 100).await, expected, "ws");
    let mut polled = Vec::new();
    let mut after = 0;
    while polled.len() < 100 {
        let (got, body) = server
            .poll(&format!("/rooms/{room}/messages?after={after}&limit=7"))
            .await;
        after = body["last_id"].as_u64().unwrap();
        polled.extend(got);
    }
    assert_eq!(polled, expected, "short poll");
    for sender in senders {
        drop(sender.await.unwrap());
    }
    server.stop().await;
}
