//! A server that refuses: a user it keeps refusing asks again after a pause, not in a
//! tight loop, and a run in which it accepted no message is an error, not a table of
//! zeros.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use loadgen::{Mix, Target};

use crate::common::{Server, has, proxy, short, transport};

#[test]
fn a_user_the_server_keeps_refusing_asks_again_after_a_pause() {
    let server = Server::with(lab::Config {
        max_clients_per_room: 1,
        ..lab::Config::default()
    });
    let sc = short(Mix::Only(transport("long-poll")), 3, "refused-users");
    let rows = server.run(&sc);
    let row = &rows[0];
    // Two of the three users are refused (429) from their start to the end of the
    // drain, about 5 s: with a 100 ms pause some 100 refusals, without one tens of
    // thousands.
    let refused = row.errors.get("status").copied().unwrap_or(0);
    assert!((4..=400).contains(&refused), "{:?}", row.errors);
    // A refusal is an answered request: counted in the requests per delivery.
    assert!(row.requests.total >= refused, "{:?}", row.requests);
    // The user that got in was served.
    assert!(row.deliveries.received > 0, "{:?}", row.deliveries);
}

#[test]
fn a_run_in_which_every_message_is_refused_is_an_error() {
    let server = Server::with(lab::Config {
        max_message_bytes: 16,
        ..lab::Config::default()
    });
    let mut sc = short(Mix::Only(transport("sse")), 2, "refused-sends");
    sc.message_bytes = 64;
    let err = server.run_err(&sc);
    assert!(err.contains("accepted none of the"), "{err}");
    assert!(err.contains("413"), "{err}");
}

#[test]
fn a_server_at_its_room_limit_is_told_before_the_run() {
    let server = Server::with(lab::Config {
        max_rooms: 1,
        ..lab::Config::default()
    });
    // Another room takes the only one.
    let first = short(Mix::Only(transport("sse")), 1, "refused-first-room");
    assert_eq!(server.run(&first)[0].deliveries.lost, 0);
    let sc = short(Mix::Only(transport("ws")), 2, "refused-second-room");
    let started = std::time::Instant::now();
    let err = server.run_err(&sc);
    assert!(err.contains("refuses the run"), "{err}");
    assert!(err.contains("503") && err.contains("rooms"), "{err}");
    // Before the users connected, not after the counted window and the drain.
    assert!(started.elapsed() < sc.duration, "{:?}", started.elapsed());
}

#[test]
fn users_the_server_refuses_are_owed_every_message_from_their_first_try() {
    let server = Server::with(lab::Config {
        max_connections: 2,
        ..lab::Config::default()
    });
    // Four SSE users, room for two streams: two are refused (503) until the others
    // leave at the end of the run, then resume from where they first asked.
    let mut sc = short(Mix::Only(transport("sse")), 4, "refused-streams");
    sc.senders = 2;
    let rows = server.run(&sc);
    let row = &rows[0];
    assert!(
        row.errors.get("status").copied().unwrap_or(0) > 0,
        "{:?}",
        row.errors
    );
    let sent = row.messages.sent;
    assert!(sent > 0);
    let d = &row.deliveries;
    // Owed from their first try, not from their last: every counted message.
    assert_eq!(d.expected, 4 * sent, "{d:?}");
    assert_eq!(d.received + d.lost, d.expected, "{d:?}");
    assert_eq!(d.duplicated, 0, "{d:?}");
}

#[test]
fn a_short_poll_run_needs_no_connection_slot() {
    // Polls are not held: a server with no slot for a stream still serves them all.
    let server = Server::with(lab::Config {
        max_connections: 0,
        ..lab::Config::default()
    });
    let sc = short(Mix::Only(transport("poll")), 3, "refused-no-slots");
    let rows = server.run(&sc);
    let d = &rows[0].deliveries;
    assert!(d.expected > 0 && d.lost == 0, "{d:?}");
}

/// A target behind a proxy that turns the server's answers into `status`: those that
/// `matches` picks, by their order among them (from 0).
fn refusing(
    server: &Server,
    matches: fn(&[u8]) -> bool,
    picks: fn(usize) -> bool,
    status: &'static [u8; 3],
) -> Target {
    let answers = Arc::new(AtomicUsize::new(0));
    let addr = proxy(
        server.addr,
        Arc::new(|_: &[u8]| false),
        Arc::new(move |chunk: &mut [u8]| {
            if matches(chunk) && picks(answers.fetch_add(1, Ordering::Relaxed)) {
                chunk[9..12].copy_from_slice(status);
            }
        }),
    );
    Target::parse(&addr.to_string()).unwrap()
}

#[test]
fn a_refused_send_is_in_the_send_lag_as_well() {
    let server = Server::start();
    // Every third POST's answer is turned into a 500.
    let target = refusing(
        &server,
        |chunk| chunk.starts_with(b"HTTP/1.1 201"),
        |n| n % 3 == 2,
        b"500",
    );
    let sc = short(Mix::Only(transport("sse")), 2, "refused-some-sends");
    let row = &loadgen::run(&[target], &sc).unwrap()[0];
    let m = &row.messages;
    assert!(m.failed > 0 && m.sent > 0, "{m:?}");
    // Every message due in the window has a lag, whether it was accepted or not.
    assert_eq!(row.send_lag_us.count, m.sent + m.failed, "{m:?}");
}

#[test]
fn a_refused_where_is_now_query_is_not_a_receivers_request() {
    let server = Server::start();
    // Every "where is now" answer after the loadgen's own check before the run is
    // turned into a 503: no user gets as far as asking for its stream. (On an SSE
    // run the only JSON pages are those answers.)
    let target = refusing(
        &server,
        |chunk| chunk.starts_with(b"HTTP/1.1 200") && has(chunk, "\"last_id\""),
        |n| n > 0,
        b"503",
    );
    let sc = short(Mix::Only(transport("sse")), 2, "refused-where-is-now");
    let row = &loadgen::run(&[target], &sc).unwrap()[0];
    assert!(
        row.errors.get("status").copied().unwrap_or(0) > 0,
        "{:?}",
        row.errors
    );
    // Refused all run long, asking again every pause, yet no receiver's request.
    assert_eq!(row.requests.total, 0, "{:?}", row.requests);
}
