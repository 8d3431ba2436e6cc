//! One user per mode joins a third into the counted window and leaves at two thirds:
//! it is owed exactly the counted messages published while it was there, and gets
//! them all.

use std::time::Duration;

use loadgen::{Churn, Mix};

use crate::common::{Server, short, transport};

#[test]
fn a_user_added_and_removed_mid_run_is_accounted_for() {
    let server = Server::start();
    for name in ["poll", "long-poll", "sse", "ws"] {
        let t = transport(name);
        let mut sc = short(Mix::Only(t), 4, &format!("churn-{name}"));
        sc.churn = vec![Churn {
            transport: t,
            join_after: Duration::from_millis(400),
            leave_after: Duration::from_millis(1000),
        }];
        let r = server.run(&sc).remove(0);
        let d = r.deliveries;
        assert_eq!(r.users, 5, "{name}");
        assert_eq!(
            (d.lost, d.duplicated, d.out_of_order),
            (0, 0, 0),
            "{name}: {d:?}"
        );
        assert_eq!(d.received, d.expected, "{name}");
        // One latency per counted delivery: none for what the leaving user still
        // received beyond the last id it was owed.
        assert_eq!(r.latency_us.count, d.received, "{name}");
        // The four whole-run users are owed every counted message; the fifth about
        // 0.6 s of the 1.5 s at 40/s (24), never all of them nor none.
        let extra = d.expected - 4 * r.messages.sent;
        assert!(
            (10..=40).contains(&extra),
            "{name}: the churn user was owed {extra}"
        );
        assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
    }
}

/// WebSocket users are read by their worker's pump, not by their own tasks: each must
/// still stop as soon as it has every id it is owed (the run's last, or the last
/// before it left), not at the end of a drain that is given a minute here.
#[test]
fn pumped_users_stop_once_they_have_what_they_are_owed() {
    let server = Server::start();
    let t = transport("ws");
    let mut sc = short(Mix::Only(t), 4, "churn-prompt-ws");
    sc.drain_timeout = Duration::from_secs(60);
    sc.churn = vec![Churn {
        transport: t,
        join_after: Duration::from_millis(400),
        leave_after: Duration::from_millis(1000),
    }];
    let started = std::time::Instant::now();
    let r = server.run(&sc).remove(0);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "the run took {took:?}");
    let d = r.deliveries;
    assert_eq!((d.lost, d.duplicated), (0, 0), "{d:?}");
    assert_eq!(d.received, d.expected);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}
