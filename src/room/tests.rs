//! The room's rules, one test each. Timing rules run on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn never() -> &'static CancellationToken {
    static TOKEN: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    TOKEN.get_or_init(CancellationToken::new)
}

use super::*;

fn limits(history: usize, queue_capacity: usize) -> RoomLimits {
    RoomLimits {
        history,
        queue_capacity,
        ..RoomLimits::default()
    }
}

fn room(history: usize, queue_capacity: usize) -> Arc<Room> {
    Rooms::new(limits(history, queue_capacity))
        .get_or_create("r")
        .unwrap()
}

fn post(room: &Room, n: usize) {
    for _ in 0..n {
        room.publish(&Draft {
            user: "u".into(),
            text: "t".into(),
            client_ts: None,
        });
    }
}

fn ids(batch: &Batch) -> Vec<u64> {
    batch.messages.iter().map(|m| m.id).collect()
}

#[test]
fn ids_start_at_one_and_increase_by_one() {
    let room = room(10, 10);
    let a = room.publish(&Draft {
        user: "a".into(),
        text: "x".into(),
        client_ts: Some(7),
    });
    let b = room.publish(&Draft {
        user: "b".into(),
        text: "y".into(),
        client_ts: None,
    });
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(room.newest(), 2);
}

#[test]
fn rooms_have_their_own_id_sequences() {
    let rooms = Rooms::new(RoomLimits::default());
    post(&rooms.get_or_create("a").unwrap(), 3);
    post(&rooms.get_or_create("b").unwrap(), 1);
    assert_eq!(rooms.get_or_create("a").unwrap().newest(), 3);
    assert_eq!(rooms.get_or_create("b").unwrap().newest(), 1);
}

#[test]
fn history_is_bounded() {
    let room = room(5, 10);
    post(&room, 8);
    let slice = room.history_after(0, 100);
    assert_eq!(slice.messages.len(), 5);
    assert_eq!(slice.messages[0].id, 4);
    assert_eq!(slice.gap.map(|g| g.next_id), Some(4));
}

#[test]
fn a_new_subscription_gets_new_messages_only() {
    let room = room(10, 10);
    post(&room, 3);
    let mut sub = room.subscribe(None);
    assert!(sub.try_next(100).is_empty());
    post(&room, 2);
    assert_eq!(ids(&sub.try_next(100)), vec![4, 5]);
}

#[test]
fn a_subscription_after_an_id_resumes_from_history() {
    let room = room(10, 10);
    post(&room, 5);
    let mut sub = room.subscribe(Some(2));
    post(&room, 1);
    assert_eq!(ids(&sub.try_next(100)), vec![3, 4, 5, 6]);
    assert!(sub.try_next(100).is_empty());
    post(&room, 1);
    assert_eq!(ids(&sub.try_next(100)), vec![7]);
}

#[test]
fn a_lagging_subscriber_is_refilled_from_history_without_a_gap() {
    let room = room(100, 4);
    let mut sub = room.subscribe(None);
    post(&room, 20);
    let mut seen = Vec::new();
    loop {
        let batch = sub.try_next(100);
        if batch.is_empty() {
            break;
        }
        assert_eq!(batch.gap, None);
        seen.extend(ids(&batch));
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
}

#[test]
fn a_gap_is_reported_only_for_what_history_no_longer_holds() {
    let room = room(5, 2);
    let mut sub = room.subscribe(None);
    post(&room, 12);
    let batch = sub.try_next(100);
    assert_eq!(
        batch.gap,
        Some(Gap {
            after: 0,
            next_id: 8
        })
    );
    assert_eq!(ids(&batch), vec![8, 9, 10, 11, 12]);
    assert!(sub.try_next(100).is_empty());
}

#[test]
fn a_second_subscriber_is_unaffected_by_a_slow_one() {
    let room = room(3, 2);
    let mut slow = room.subscribe(None);
    let mut fast = room.subscribe(None);
    let mut fast_seen = Vec::new();
    for _ in 0..10 {
        post(&room, 1);
        fast_seen.extend(ids(&fast.try_next(100)));
    }
    assert_eq!(fast_seen, (1..=10).collect::<Vec<_>>());
    assert!(slow.try_next(100).gap.is_some());
}

#[test]
fn batches_respect_the_maximum() {
    let room = room(100, 100);
    let mut sub = room.subscribe(Some(0));
    post(&room, 10);
    assert_eq!(ids(&sub.try_next(4)), vec![1, 2, 3, 4]);
    assert_eq!(ids(&sub.try_next(4)), vec![5, 6, 7, 8]);
    assert_eq!(ids(&sub.try_next(4)), vec![9, 10]);
}

#[test]
fn seek_moves_the_cursor_both_ways() {
    let room = room(100, 100);
    let mut sub = room.subscribe(None);
    post(&room, 6);
    sub.seek(4);
    assert_eq!(ids(&sub.try_next(100)), vec![5, 6]);
    sub.seek(2);
    assert_eq!(ids(&sub.try_next(100)), vec![3, 4, 5, 6]);
    sub.seek(50);
    post(&room, 1);
    assert!(sub.try_next(100).is_empty());
}

#[test]
fn the_room_limit_refuses_new_rooms_only() {
    let rooms = Rooms::new(RoomLimits {
        max_rooms: 2,
        ..RoomLimits::default()
    });
    // One room with a reader, one with a message.
    let _reader = rooms.get_or_create("a").unwrap().subscribe(None);
    post(&rooms.get_or_create("b").unwrap(), 1);
    assert_eq!(
        rooms.get_or_create("c").err(),
        Some(RoomError::TooManyRooms(2))
    );
    assert!(rooms.get_or_create("a").is_ok());
    assert_eq!(rooms.get_or_create("b").unwrap().newest(), 1);
}

#[test]
fn at_the_room_limit_empty_rooms_nobody_holds_are_let_go() {
    let rooms = Rooms::new(RoomLimits {
        max_rooms: 2,
        ..RoomLimits::default()
    });
    // Read, then left: a stream that ended, a mistyped name.
    drop(
        rooms
            .get_or_create("read-and-left")
            .unwrap()
            .subscribe(None),
    );
    let reader = rooms.get_or_create("still-read").unwrap().subscribe(None);
    let room = rooms.get_or_create("new").unwrap();
    post(&room, 1);
    assert_eq!(
        rooms.get_or_create("another").err(),
        Some(RoomError::TooManyRooms(2)),
        "a room with a reader or a message is kept"
    );
    drop(reader);
    assert!(rooms.get_or_create("another").is_ok());
    assert_eq!(rooms.get_or_create("new").unwrap().newest(), 1);
}

#[test]
fn the_client_limit_refuses_new_clients_only() {
    let rooms = Rooms::new(RoomLimits {
        max_clients_per_room: 1,
        ..RoomLimits::default()
    });
    let room = rooms.get_or_create("a").unwrap();
    room.client("one").unwrap();
    assert_eq!(room.client("two").err(), Some(RoomError::TooManyClients(1)));
    assert!(room.client("one").is_ok());
}

#[tokio::test(start_paused = true)]
async fn subscription_next_waits_for_a_message() {
    let room = room(10, 10);
    let mut sub = room.subscribe(None);
    let publisher = {
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            post(&room, 1);
        })
    };
    let batch = sub.next(10).await;
    assert_eq!(ids(&batch), vec![1]);
    publisher.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_times_out_empty() {
    let room = room(10, 10);
    post(&room, 2);
    let client = room.client("c").unwrap();
    let started = Instant::now();
    let (batch, cursor) = client
        .poll(
            None,
            100,
            started + Duration::from_millis(500),
            never(),
            std::future::pending(),
        )
        .await
        .unwrap();
    assert!(batch.is_empty());
    assert_eq!(cursor, 2);
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_keeps_messages_posted_between_polls() {
    let room = room(10, 10);
    let client = room.client("c").unwrap();
    let soon = || Instant::now() + Duration::from_millis(10);
    assert!(
        client
            .poll(None, 100, soon(), never(), std::future::pending())
            .await
            .unwrap()
            .0
            .is_empty()
    );
    post(&room, 3);
    let (batch, cursor) = client
        .poll(None, 100, soon(), never(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(ids(&batch), vec![1, 2, 3]);
    assert_eq!(cursor, 3);
    // `after` re-asks for what an answer lost in transit carried.
    let (batch, _) = client
        .poll(Some(1), 100, soon(), never(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(ids(&batch), vec![2, 3]);
}

/// A long poll of `client` held until `deadline`, in a task of its own.
fn spawn_poll(
    client: &Arc<ClientQueue>,
    deadline: Instant,
) -> tokio::task::JoinHandle<Result<(Batch, u64), Superseded>> {
    let client = client.clone();
    tokio::spawn(async move {
        client
            .poll(None, 100, deadline, never(), std::future::pending())
            .await
    })
}

#[tokio::test(start_paused = true)]
async fn a_newer_poll_releases_an_older_one() {
    let room = room(10, 10);
    let client = room.client("c").unwrap();
    let far = Instant::now() + Duration::from_secs(30);
    let older = spawn_poll(&client, far);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newer = spawn_poll(&client, far);
    let started = Instant::now();
    // Told it was superseded, not handed an ordinary empty answer to poll again on.
    assert!(matches!(older.await.unwrap(), Err(Superseded)));
    assert!(started.elapsed() < Duration::from_secs(1));
    post(&room, 1);
    assert_eq!(ids(&newer.await.unwrap().unwrap().0), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn a_superseded_poll_leaves_queued_messages_to_the_poll_that_took_its_place() {
    let room = room(10, 10);
    let client = room.client("c").unwrap();
    let far = Instant::now() + Duration::from_secs(30);
    let older = spawn_poll(&client, far);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The message and the newer poll come before the older poll runs again.
    post(&room, 1);
    let mut newer = Box::pin(client.poll(None, 100, far, never(), std::future::pending()));
    assert!((&mut newer).now_or_never().is_none(), "waits for the queue");
    assert!(matches!(older.await.unwrap(), Err(Superseded)));
    assert_eq!(ids(&newer.await.unwrap().0), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn idle_client_queues_expire() {
    let rooms = Rooms::new(RoomLimits {
        client_idle: Duration::from_secs(60),
        ..RoomLimits::default()
    });
    let room = rooms.get_or_create("a").unwrap();
    drop(room.client("c").unwrap());
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(rooms.expire_idle_clients(), 0);
    assert_eq!(room.client_count(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(rooms.expire_idle_clients(), 1);
    assert_eq!(room.client_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_held_poll_keeps_its_queue_alive() {
    let rooms = Rooms::new(RoomLimits {
        client_idle: Duration::from_secs(1),
        ..RoomLimits::default()
    });
    let room = rooms.get_or_create("a").unwrap();
    let client = room.client("c").unwrap();
    let held = tokio::spawn(async move {
        client
            .poll(
                None,
                10,
                Instant::now() + Duration::from_secs(30),
                never(),
                std::future::pending(),
            )
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rooms.expire_idle_clients(), 0);
    post(&room, 1);
    assert_eq!(ids(&held.await.unwrap().0), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_client_starts_over_with_new_messages_only() {
    let rooms = Rooms::new(RoomLimits {
        client_idle: Duration::from_secs(1),
        ..RoomLimits::default()
    });
    let room = rooms.get_or_create("a").unwrap();
    let soon = || Instant::now() + Duration::from_millis(10);
    room.client("c")
        .unwrap()
        .poll(None, 10, soon(), never(), std::future::pending())
        .await
        .unwrap();
    post(&room, 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    rooms.expire_idle_clients();
    let (batch, cursor) = room
        .client("c")
        .unwrap()
        .poll(None, 10, soon(), never(), std::future::pending())
        .await
        .unwrap();
    assert!(batch.is_empty());
    assert_eq!(cursor, 2);
    // Passing `after` gets the missed messages from history.
    let (batch, _) = room
        .client("c")
        .unwrap()
        .poll(Some(0), 10, soon(), never(), std::future::pending())
        .await
        .unwrap();
    assert_eq!(ids(&batch), vec![1, 2]);
}

#[test]
fn histories_are_kept_within_the_byte_budget_at_the_largest_rooms_cost() {
    let sizer = Rooms::new(RoomLimits::default());
    post(&sizer.get_or_create("big").unwrap(), 1);
    let one = sizer.history_bytes();
    let rooms = Rooms::new(RoomLimits {
        max_history_bytes: 20 * one,
        ..RoomLimits::default()
    });
    let quiet = rooms.get_or_create("sml").unwrap();
    let loud = rooms.get_or_create("big").unwrap();
    post(&quiet, 3);
    for _ in 0..40 {
        post(&loud, 1);
        assert!(rooms.history_bytes() <= 20 * one + one);
    }
    // The quiet room keeps everything; the loud one its newest, with a gap before.
    assert_eq!(quiet.history_after(0, 100).messages.len(), 3);
    let slice = loud.history_after(0, 100);
    assert_eq!(slice.messages.last().unwrap().id, 40);
    assert_eq!(slice.gap.unwrap().next_id, slice.messages[0].id);
    assert!(slice.messages.len() >= 10, "{}", slice.messages.len());
    assert_eq!(
        rooms.history_bytes(),
        quiet.history_bytes() + loud.history_bytes()
    );
}

#[test]
fn at_the_budget_one_message_costs_no_room_its_history() {
    let sizer = Rooms::new(RoomLimits::default());
    post(&sizer.get_or_create("r00").unwrap(), 1);
    let one = sizer.history_bytes();
    let budget = 25 * 15 * one;
    let rooms = Rooms::new(RoomLimits {
        max_history_bytes: budget,
        ..RoomLimits::default()
    });
    let all: Vec<_> = (0..25)
        .map(|r| rooms.get_or_create(&format!("r{r:02}")).unwrap())
        .collect();
    for room in &all {
        post(room, 15);
    }
    post(&all[24], 1);
    assert!(rooms.history_bytes() <= budget);
    for room in &all {
        let held = room.history_after(0, 100).messages.len();
        assert!(held >= 13, "{}: {held} of {}", room.name(), room.newest());
    }
}
