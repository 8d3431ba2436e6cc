//! Per-client queues for long polling.
//!
//! A long-poll client is between two requests most of the time; its queue is what
//! keeps the messages published in between. Each queue is a [`Subscription`] kept in a
//! map by client name, dropped after `--client-idle-ms` without a poll.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Batch, Room, RoomError, Subscription};

pub struct ClientQueue {
    // A tokio Mutex: a poll holds it for as long as the request is held.
    subscription: tokio::sync::Mutex<Subscription>,
    last_used: Mutex<Instant>,
    /// Bumped by every poll, so that a newer poll from the same client releases an
    /// older one still held or waiting for the queue (a browser that gave up on a
    /// request and sent another; two pollers sharing a name, who are told so).
    generation: AtomicU64,
    superseded: Notify,
}

/// A poll another poll of the same client took the place of. It is answered as a
/// conflict, not as an empty list: two pollers sharing one client name would otherwise
/// release each other's polls, each answer empty and normal, as fast as they can ask.
#[derive(Debug, PartialEq, Eq)]
pub struct Superseded;

impl ClientQueue {
    fn new(subscription: Subscription) -> Self {
        ClientQueue {
            subscription: tokio::sync::Mutex::new(subscription),
            last_used: Mutex::new(Instant::now()),
            generation: AtomicU64::new(0),
            superseded: Notify::new(),
        }
    }

    /// One long poll: moves the cursor to `after` when given, then waits until the queue
    /// has something or `deadline` passes, and returns what is queued (at most `limit`).
    /// Also returns the `last_id` of an empty answer: the cursor, so that a message
    /// published while the answer is written is not skipped; but for an `after` beyond
    /// the room's newest id (a client back from before a restart) the newest id, at
    /// once, as a short poll answers it: held, such a poll would pass over every message
    /// up to `after`. Answers empty at once when `stop` is cancelled or `released`
    /// completes (a zero-sized future is best: it is kept in every held poll's state).
    /// A newer poll of the same client ends this one with [`Superseded`], whether this
    /// one is held or still waiting for the queue.
    pub async fn poll(
        &self,
        after: Option<u64>,
        limit: usize,
        deadline: Instant,
        stop: &CancellationToken,
        released: impl Future<Output = ()>,
    ) -> Result<(Batch, u64), Superseded> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.superseded.notify_waiters();
        // On several threads a newer poll can take the queue before an older one that
        // took its generation first: the older must not wait out the newer's timeout.
        let mut subscription = tokio::select! {
            biased;
            _ = self.superseded_since(generation) => return Err(Superseded),
            subscription = self.subscription.lock() => subscription,
        };
        self.touch();
        if let Some(after) = after {
            // The newest id is read only when the cursor moves, not on the usual poll
            // that passes the id it was last given.
            if after != subscription.cursor() {
                let newest = subscription.room().newest();
                if after > newest {
                    // The queue goes on from the newest id too: a next poll without
                    // `after` must not pass over the ids up to this one.
                    subscription.seek(newest);
                    return Ok((Batch::default(), newest));
                }
            }
            subscription.seek(after);
        }
        // Biased: a superseded poll leaves what is queued to the poll that took its
        // place; then messages, so that a poll whose deadline has passed (timeout_ms=0)
        // still takes what is already queued rather than a random pick of the branches.
        let batch = tokio::select! {
            biased;
            _ = self.superseded_since(generation) => return Err(Superseded),
            batch = subscription.next(limit) => batch,
            _ = tokio::time::sleep_until(deadline) => Batch::default(),
            _ = stop.cancelled() => Batch::default(),
            () = released => Batch::default(),
        };
        self.touch();
        let cursor = subscription.cursor();
        Ok((batch, cursor))
    }

    async fn superseded_since(&self, generation: u64) {
        loop {
            let mut notified = pin!(self.superseded.notified());
            notified.as_mut().enable();
            if self.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            notified.await;
        }
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap() = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap().elapsed()
    }
}

/// The long-poll queues of one room.
pub struct ClientQueues {
    queues: Mutex<HashMap<String, Arc<ClientQueue>>>,
    max: usize,
    idle: Duration,
}

impl ClientQueues {
    pub(super) fn new(max: usize, idle: Duration) -> Self {
        ClientQueues {
            queues: Mutex::new(HashMap::new()),
            max,
            idle,
        }
    }

    pub(super) fn get_or_create(
        &self,
        room: &Arc<Room>,
        client: &str,
    ) -> Result<Arc<ClientQueue>, RoomError> {
        let mut queues = self.queues.lock().unwrap();
        if let Some(queue) = queues.get(client) {
            queue.touch();
            return Ok(queue.clone());
        }
        if queues.len() >= self.max {
            return Err(RoomError::TooManyClients(self.max));
        }
        let queue = Arc::new(ClientQueue::new(room.subscribe(None)));
        queues.insert(client.to_owned(), queue.clone());
        Ok(queue)
    }

    pub(super) fn len(&self) -> usize {
        self.queues.lock().unwrap().len()
    }

    /// Drops queues that no poll holds and that have been idle too long.
    pub(super) fn expire_idle(&self) -> usize {
        let mut queues = self.queues.lock().unwrap();
        let before = queues.len();
        // A strong count above one means a poll is holding the queue right now.
        queues.retain(|_, q| Arc::strong_count(q) > 1 || q.idle_for() < self.idle);
        before - queues.len()
    }
}
