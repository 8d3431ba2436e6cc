//! What is counted in the window: bytes of messages due before it are not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::{Mix, Target};

use crate::common::{Server, proxy, short, transport};

/// Bytes per delivery of a short run of `mode` through a proxy that, if `stall`, holds
/// every byte either way from 0.12 s to 0.7 s after the start: the warm-up's last
/// messages (the counted window starts at about 0.32 s) reach the users in the window.
fn bytes_per_delivery(server: &Server, mode: &str, stall: bool) -> f64 {
    let start = Instant::now();
    let (from, until) = (
        start + Duration::from_millis(120),
        start + Duration::from_millis(700),
    );
    let addr = proxy(
        server.addr,
        Arc::new(|_: &[u8]| false),
        Arc::new(move |_: &mut [u8]| {
            let now = Instant::now();
            if stall && now >= from && now < until {
                // The proxy's one thread: every connection waits.
                std::thread::sleep(until - now);
            }
        }),
    );
    let target = Target::parse(&addr.to_string()).unwrap();
    let sc = short(Mix::Only(transport(mode)), 3, &format!("window-{mode}"));
    let row = &loadgen::run(&[target], &sc).unwrap()[0];
    assert_eq!(row.deliveries.lost, 0, "{mode}: {:?}", row.deliveries);
    row.bytes_per_delivery.unwrap()
}

#[test]
fn a_stream_behind_at_the_windows_start_is_charged_only_for_counted_deliveries() {
    let server = Server::start();
    for mode in ["ws", "sse"] {
        let plain = bytes_per_delivery(&server, mode, false);
        let behind = bytes_per_delivery(&server, mode, true);
        // About a tenth of the deliveries in the window were due before it: counted,
        // their bytes would raise the figure by that much.
        assert!(
            (behind - plain).abs() / plain < 0.03,
            "{mode}: {behind:.1} B per delivery when behind, {plain:.1} when not"
        );
    }
}
