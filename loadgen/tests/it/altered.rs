//! A server that changes a message on its way: the `client_ts` a user would measure
//! latency from no longer matches the one sent. The message is delivered, but it is
//! an error and no latency is taken from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use loadgen::{Mix, Target};

use crate::common::{Server, proxy, short, transport};

/// Changes the last digit of the first `"client_ts":<digits>` in `chunk`; whether it did.
fn alter_client_ts(chunk: &mut [u8]) -> bool {
    let key = b"\"client_ts\":";
    let Some(at) = chunk.windows(key.len()).position(|w| w == key) else {
        return false;
    };
    let digits = &mut chunk[at + key.len()..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n == digits.len() {
        return false;
    }
    digits[n - 1] = if digits[n - 1] == b'9' {
        b'0'
    } else {
        digits[n - 1] + 1
    };
    true
}

#[test]
fn a_message_whose_client_ts_was_changed_is_an_error_not_a_latency() {
    let server = Server::start();
    let done = Arc::new(AtomicBool::new(false));
    let addr = proxy(
        server.addr,
        Arc::new(|_: &[u8]| false),
        Arc::new(move |chunk: &mut [u8]| {
            if !done.load(Ordering::Relaxed) && alter_client_ts(chunk) {
                done.store(true, Ordering::Relaxed);
            }
        }),
    );
    let target = Target::parse(&addr.to_string()).unwrap();
    let sc = short(Mix::Only(transport("ws")), 3, "altered");
    let rows = loadgen::run(&[target], &sc).unwrap();
    let row = &rows[0];
    assert_eq!(row.errors.get("altered"), Some(&1), "{:?}", row.errors);
    // Delivered all the same: nothing lost.
    assert_eq!(row.deliveries.lost, 0, "{:?}", row.deliveries);
    assert!(row.latency_us.count <= row.deliveries.received);
}
