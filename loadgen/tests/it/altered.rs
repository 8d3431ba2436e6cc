//! A server that changes a message on its way: the `client_ts` a user would measure
//! latency from no longer matches the one sent. The message is delivered, but it is
//! an error and no latency is taken from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use loadgen::{Mix, Target};

use crate::common::{Server, proxy, short, transport};

/// Changes the last digit of the `n`th `"client_ts":<digits>` (counted from 1 over all
/// the chunks `seen` counts) in `chunk`.
fn alter_nth_client_ts(chunk: &mut [u8], seen: &AtomicUsize, n: usize) {
    let key = b"\"client_ts\":";
    let mut from = 0;
    while let Some(at) = chunk[from..].windows(key.len()).position(|w| w == key) {
        let digits = from + at + key.len();
        from = digits;
        if seen.fetch_add(1, Ordering::Relaxed) + 1 != n {
            continue;
        }
        let len = chunk[digits..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if len > 0 {
            let last = &mut chunk[digits + len - 1];
            *last = if *last == b'9' { b'0' } else { *last + 1 };
        }
    }
}

#[test]
fn a_message_whose_client_ts_was_changed_is_an_error_not_a_latency() {
    let server = Server::start();
    let seen = Arc::new(AtomicUsize::new(0));
    // Three users get each message: the 60th is message 20 or so, due 0.5 s into a
    // run whose counted window starts at 0.3 s.
    let addr = proxy(
        server.addr,
        Arc::new(|_: &[u8]| false),
        Arc::new(move |chunk: &mut [u8]| alter_nth_client_ts(chunk, &seen, 60)),
    );
    let target = Target::parse(&addr.to_string()).unwrap();
    let sc = short(Mix::Only(transport("ws")), 3, "altered");
    let rows = loadgen::run(&[target], &sc).unwrap();
    let row = &rows[0];
    assert_eq!(row.errors.get("altered"), Some(&1), "{:?}", row.errors);
    // Delivered all the same: nothing lost.
    assert_eq!(row.deliveries.lost, 0, "{:?}", row.deliveries);
    // Every counted delivery gives a latency but the altered one.
    assert_eq!(row.latency_us.count, row.deliveries.received - 1);
}
