//! Every mode, a short run: every counted message reaches every user exactly once, in
//! order, and the figures that go with deliveries are there.

use loadgen::{Mix, RunResult};

use crate::common::{Server, short, transport};

fn assert_exact(r: &RunResult, users: usize) {
    let d = &r.deliveries;
    assert!(loadgen::account::nothing_delivered(std::slice::from_ref(r)).is_ok());
    assert!(
        r.messages.sent >= 50,
        "{}: sent {}",
        r.mode,
        r.messages.sent
    );
    assert_eq!(r.messages.failed, 0, "{}", r.mode);
    assert_eq!(
        d.expected,
        users as u64 * r.messages.sent,
        "{}: {d:?}",
        r.mode
    );
    assert_eq!(d.received, d.expected, "{}: {d:?}", r.mode);
    assert_eq!(
        (d.lost, d.duplicated, d.out_of_order),
        (0, 0, 0),
        "{}: {d:?}",
        r.mode
    );
    assert!(r.errors.is_empty(), "{}: {:?}", r.mode, r.errors);
    // One latency sample per counted delivery, none blended in.
    assert_eq!(r.latency_us.count, d.received, "{}", r.mode);
    assert_eq!(r.latency_from_due_us.count, d.received, "{}", r.mode);
    assert!(r.latency_us.p50 > 0 && r.latency_us.p50 <= r.latency_us.max);
    assert!(r.latency_from_due_us.p50 >= r.latency_us.p50, "{}", r.mode);
    assert!(
        r.bytes_received > d.received * 64,
        "{}: {} bytes",
        r.mode,
        r.bytes_received
    );
    assert_eq!(r.connect_us.count, users as u64, "{}", r.mode);
    assert_eq!(r.connections.reconnects, 0, "{}", r.mode);
    assert!(
        r.server.cpu_seconds.is_some() && r.server.bytes_sent.unwrap() > 0.0,
        "{}",
        r.mode
    );
    assert!(r.loadgen.cpu_seconds > 0.0);
}

fn one(name: &str, users: usize) -> RunResult {
    let server = Server::start();
    let sc = short(Mix::Only(transport(name)), users, &format!("modes-{name}"));
    let mut rows = server.run(&sc);
    assert_eq!(rows.len(), 1);
    let r = rows.remove(0);
    assert_eq!((r.mode.as_str(), r.users), (name, users));
    assert_exact(&r, users);
    r
}

#[test]
fn poll_delivers_every_counted_message_once() {
    let r = one("poll", 10);
    // 200 ms polls over ~2 s: several requests per user, some of them empty.
    assert!(r.requests.total >= 10 * 5, "{:?}", r.requests);
    // The rate is taken over the period the requests were counted in (the window and
    // the drain, which a short-poll user ends within about one interval): users /
    // interval, 50 a second, not the count over the window alone.
    assert!(
        r.counted_s > r.duration_s - 0.5 && r.counted_s < r.duration_s + 3.0,
        "counted {} s",
        r.counted_s
    );
    let per_s = r.requests.per_s.unwrap();
    assert!((per_s - 50.0).abs() < 12.5, "{per_s} requests/s against 50");
}

#[test]
fn long_poll_delivers_every_counted_message_once() {
    let r = one("long-poll", 10);
    assert!(r.requests.total >= r.messages.sent, "{:?}", r.requests);
}

#[test]
fn sse_delivers_every_counted_message_once() {
    let r = one("sse", 10);
    // Subscribed before the window, and never again.
    assert_eq!(r.requests.total, 0);
}

#[test]
fn a_run_says_how_busy_the_loadgen_was_and_warns_when_it_queued() {
    let mut r = one("ws", 10);
    let share = r.loadgen.busy_share.expect("measured");
    let want = r.loadgen.cpu_seconds / (r.counted_s * r.loadgen.threads as f64);
    assert!((share - want).abs() < 1e-9, "{share} against {want}");
    assert!(share > 0.0 && share < 1.5, "{share}");
    let note = "note    ws: the loadgen was busy 95% of its";
    r.loadgen.busy_share = Some(0.95);
    let table = loadgen::report::table(std::slice::from_ref(&r));
    assert!(table.contains(note), "{table}");
    r.loadgen.busy_share = Some(0.5);
    let table = loadgen::report::table(std::slice::from_ref(&r));
    assert!(!table.contains("note"), "{table}");
}

#[test]
fn ws_delivers_every_counted_message_once() {
    let r = one("ws", 10);
    assert_eq!(r.requests.total, 0);
}

#[test]
fn mixed_puts_all_transports_in_one_room() {
    let server = Server::start();
    let sc = short(Mix::Mixed, 12, "modes-mixed");
    let rows = server.run(&sc);
    let modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
    assert_eq!(
        modes,
        [
            "mixed",
            "mixed/poll",
            "mixed/long-poll",
            "mixed/sse",
            "mixed/ws"
        ]
    );
    assert_exact(&rows[0], 12);
    for r in &rows[1..] {
        assert_eq!(r.part_of.as_deref(), Some("mixed"));
        assert_exact(r, 3);
    }
    let parts: u64 = rows[1..].iter().map(|r| r.deliveries.received).sum();
    assert_eq!(parts, rows[0].deliveries.received);
}

#[test]
fn two_targets_are_driven_round_robin_and_accounted_apart() {
    // Two independent servers: two rooms with their own id sequences.
    let (a, b) = (Server::start(), Server::start());
    let sc = short(Mix::Only(transport("sse")), 6, "modes-two-targets");
    let r = loadgen::run(&[a.target.clone(), b.target.clone()], &sc)
        .unwrap()
        .remove(0);
    let d = r.deliveries;
    assert_eq!((d.lost, d.duplicated, d.out_of_order), (0, 0, 0), "{d:?}");
    // Each user is owed what its own target published: about half of all messages.
    assert_eq!(d.expected, d.received);
    assert!(
        d.expected < 6 * r.messages.sent && d.expected > 2 * r.messages.sent,
        "{d:?}"
    );
}

#[test]
fn sends_survive_a_server_that_closes_idle_connections() {
    // The server closes a keep-alive connection after 150 ms without a request; one
    // sender at 4 msg/s leaves its pooled connection idle for 250 ms between sends.
    let server = Server::with(lab::Config {
        idle_timeout_ms: 150,
        ..lab::Config::default()
    });
    let mut sc = short(Mix::Only(transport("ws")), 2, "modes-idle");
    sc.rate = 4.0;
    sc.senders = 1;
    sc.threads = 1;
    let r = server.run(&sc).remove(0);
    assert!(r.messages.sent >= 5, "sent {}", r.messages.sent);
    assert_eq!(r.messages.failed, 0, "{:?}", r.errors);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let d = &r.deliveries;
    assert_eq!((d.received, d.lost), (d.expected, 0), "{d:?}");
}
