//! Limits not covered elsewhere: long-poll client idle expiry, and every limit as a flag.

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use lab::Config;

use crate::common::*;

#[tokio::test]
async fn an_idle_long_poll_queue_is_dropped() {
    let mut config = config();
    config.client_idle_ms = 100;
    let server = TestServer::with(config).await;
    server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    server.post("r", "u", "while away").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The queue that held message 1 is gone: a poll without `after` starts afresh.
    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert!(ids.is_empty());
    assert_eq!(body["last_id"], 1);

    // A client polling within the idle time keeps its queue.
    server.post("r", "u", "soon").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![2]);
    server.stop().await;
}

#[test]
fn every_limit_is_a_flag() {
    let config = Config::try_parse_from([
        "lab",
        "--addr",
        "127.0.0.1:9999",
        "--max-message-bytes",
        "10",
        "--history",
        "11",
        "--queue-capacity",
        "12",
        "--client-idle-ms",
        "13",
        "--max-connections",
        "14",
        "--max-rooms",
        "15",
        "--max-clients-per-room",
        "16",
        "--sse-keepalive-ms",
        "17",
        "--ws-ping-ms",
        "18",
        "--write-timeout-ms",
        "19",
        "--read-timeout-ms",
        "20",
        "--idle-timeout-ms",
        "21",
        "--max-results-bytes",
        "22",
        "--max-history-bytes",
        "23",
        "--event-interval",
        "24",
    ])
    .unwrap();
    assert_eq!(config.addr.port(), 9999);
    assert_eq!(config.max_message_bytes, 10);
    assert_eq!(config.history, 11);
    assert_eq!(config.queue_capacity, 12);
    assert_eq!(config.client_idle_ms, 13);
    assert_eq!(config.max_connections, 14);
    assert_eq!(config.max_rooms, 15);
    assert_eq!(config.max_clients_per_room, 16);
    assert_eq!(config.sse_keepalive_ms, 17);
    assert_eq!(config.ws_ping_ms, 18);
    assert_eq!(config.write_timeout_ms, 19);
    assert_eq!(config.read_timeout_ms, 20);
    assert_eq!(config.idle_timeout_ms, 21);
    assert_eq!(config.max_results_bytes, 22);
    assert_eq!(config.max_history_bytes, 23);
    assert_eq!(config.event_interval, 24);
    // A zero would be a server that refuses everything, spins or panics, not "off".
    for flag in [
        "--max-message-bytes",
        "--history",
        "--queue-capacity",
        "--client-idle-ms",
        "--max-connections",
        "--max-rooms",
        "--max-clients-per-room",
        "--sse-keepalive-ms",
        "--ws-ping-ms",
        "--write-timeout-ms",
        "--read-timeout-ms",
        "--idle-timeout-ms",
        "--max-results-bytes",
        "--max-history-bytes",
        "--threads",
        "--event-interval",
    ] {
        let zero = Config::try_parse_from(["lab", flag, "0"]);
        assert!(zero.is_err(), "{flag} 0 was taken");
        assert!(
            Config::try_parse_from(["lab", flag, "1"]).is_ok(),
            "{flag} 1"
        );
    }
}

#[tokio::test]
async fn histories_stay_within_max_history_bytes_and_the_largest_room_pays() {
    let mut config = config();
    config.max_history_bytes = 64 * 1024;
    let server = TestServer::with(config).await;
    for _ in 0..3 {
        server.post("quiet", "u", "hello").await;
    }
    // About 8 KB each as held (the JSON and the SSE event): 800 KB in all.
    let big = "x".repeat(4000);
    for _ in 0..100 {
        server.post("loud", "u", &big).await;
    }
    let (ids, _) = server.poll("/rooms/quiet/messages?after=0").await;
    assert_eq!(ids, [1, 2, 3]);
    let (ids, body) = server.poll("/rooms/loud/messages?after=0&limit=1000").await;
    assert_eq!(body["gap"], true, "{body}");
    assert_eq!(ids.last(), Some(&100));
    assert!((1..8).contains(&ids.len()), "{ids:?}");
    // A stream resuming from the start is told of the gap first.
    let mut events = server.sse("/rooms/loud/events?after=0").await;
    assert_eq!(events.next().await.unwrap().event, "gap");
    server.stop().await;
}
