//! A server that takes requests and never answers them: the run still ends by itself
//! after its drain, with the users that never got in counted lost and the missing
//! answers counted as timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loadgen::{Mix, Target};

use crate::common::{Server, Swallow, has, proxy, short, transport};

#[test]
fn a_server_that_never_answers_does_not_hold_the_run() {
    let server = Server::start();
    // The preflight's stream is the first: it is answered; every user's is not, and
    // neither is /metrics.
    let streams = Arc::new(AtomicUsize::new(0));
    let swallow: Swallow = Arc::new(move |chunk: &[u8]| {
        has(chunk, "GET /metrics")
            || (has(chunk, "/events") && streams.fetch_add(1, Ordering::Relaxed) > 0)
    });
    let addr = proxy(server.addr, swallow, Arc::new(|_: &mut [u8]| {}));
    let target = Target::parse(&addr.to_string()).unwrap();
    let sc = short(Mix::Only(transport("sse")), 3, "unanswered");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(loadgen::run(&[target], &sc));
    });
    // Two /metrics readings of 10 s each at most, the window and the drain.
    let rows = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run ended by itself")
        .unwrap();
    let row = &rows[0];
    assert!(row.deliveries.expected > 0, "{:?}", row.deliveries);
    assert_eq!(row.deliveries.received, 0, "{:?}", row.deliveries);
    assert_eq!(row.deliveries.lost, row.deliveries.expected);
    // Each user's unanswered subscription, at the end if not before.
    let timeouts = row.errors.get("timeout").copied().unwrap_or(0);
    assert!(timeouts >= 3, "{:?}", row.errors);
    // No latency was measured: the table says so rather than 0.00 ms, and the run
    // is an error once its table and JSON are out.
    let table = loadgen::report::table(&rows);
    let cells: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("sse"))
        .unwrap()
        .split_whitespace()
        .collect();
    // p50, p90, p99, p999, max and the p99 from the due time.
    assert_eq!(cells[7..13], ["-"; 6], "{table}");
    let err = loadgen::account::nothing_delivered(&rows)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none of the") && err.contains("timeout"),
        "{err}"
    );
    // Without its /metrics, nothing is said of the server.
    assert_eq!(row.server.cpu_seconds, None);
    assert_eq!(row.server.bytes_sent, None);
}
