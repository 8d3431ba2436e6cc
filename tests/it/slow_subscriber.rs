//! A subscriber that stops reading is refilled from history or told of a gap, and
//! never silently skipped; a second subscriber reading at full speed is unaffected.

use serde_json::Value;

use crate::common::*;

const MESSAGES: u64 = 4000;
const ROUND: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socket_gets_gaps_only_for_what_history_lost() {
    let mut config = config();
    config.queue_capacity = 8;
    config.history = 50;
    let server = TestServer::with(config).await;
    // 16 MB in all: more than the kernel's socket buffers hold for one reader.
    let text = "x".repeat(4000);

    let mut slow = server.ws("/rooms/r/ws").await;
    let mut fast = server.sse("/rooms/r/events").await;

    // Posted in rounds smaller than the history, each read by the fast reader before
    // the next: however busy the machine, the fast reader never falls behind the
    // history on its own, so anything it misses would be the slow one's doing.
    let mut fast_ids = Vec::new();
    for _ in 0..MESSAGES / ROUND {
        for _ in 0..ROUND {
            server.post("r", "u", &text).await;
        }
        fast_ids.extend(sse_ids(&mut fast, ROUND as usize).await);
    }
    assert_eq!(fast_ids, (1..=MESSAGES).collect::<Vec<_>>());

    // Now the slow reader catches up.
    let mut last = 0;
    let mut gaps = 0;
    let mut received = 0;
    while last < MESSAGES {
        let frame: Value = ws_next(&mut slow).await;
        if frame["gap"] == true {
            assert_eq!(frame["after"], last, "a gap starts where the reader was");
            let next = frame["next_id"].as_u64().unwrap();
            assert!(next > last + 1);
            // The messages it skips are really gone from history.
            assert!(next > MESSAGES - 50);
            last = next - 1;
            gaps += 1;
            continue;
        }
        let id = frame["id"].as_u64().unwrap();
        assert_eq!(id, last + 1, "no id skipped without a gap, none repeated");
        last = id;
        received += 1;
    }
    assert!(gaps >= 1, "the stalled reader fell behind the history");
    assert!(received >= 50, "it got at least what history held");
    server.stop().await;
}
