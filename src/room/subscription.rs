//! A live reader of one room: the bounded queue behind every SSE stream, WebSocket
//! and long-poll client.
//!
//! Each subscription is a position in the room's broadcast ring, which holds the last
//! `--queue-capacity` messages. A reader that falls further behind than that is not
//! skipped: it is refilled from the room's history, and told of a gap only for messages
//! the history no longer holds. Ids are checked on the way out, so a reader never sees
//! an id twice or out of order, whatever mix of queue and history served it.

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::TryRecvError};

use super::Room;
use super::message::{Gap, Published};

/// What a reader gets in one go: an optional gap notice, then messages in id order.
#[derive(Debug, Default)]
pub struct Batch {
    pub gap: Option<Gap>,
    pub messages: Vec<Arc<Published>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.gap.is_none() && self.messages.is_empty()
    }
}

pub struct Subscription {
    room: Arc<Room>,
    rx: broadcast::Receiver<Arc<Published>>,
    /// The id of the last message handed out (or skipped on purpose).
    cursor: u64,
    /// Messages after `cursor` must come from history before the queue is used again.
    refill: bool,
    /// A message taken from the queue by `next` but not yet handed out.
    pending: Option<Arc<Published>>,
}

impl Subscription {
    pub(super) fn new(
        room: Arc<Room>,
        rx: broadcast::Receiver<Arc<Published>>,
        newest: u64,
        after: Option<u64>,
    ) -> Self {
        // An `after` beyond the newest id (a client back from before a restart, whose
        // ids the room has not reached again) starts at the newest: taken as it is, it
        // would pass over every message up to it without a word.
        let cursor = after.map_or(newest, |after| after.min(newest));
        Subscription {
            room,
            rx,
            cursor,
            refill: cursor < newest,
            pending: None,
        }
    }

    /// The id of the last message this reader has been given.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Moves the cursor: nothing at or below `after` is handed out; anything above it
    /// that the queue has already passed is served from history.
    /// A client that passes the id it was last given (the usual long poll) changes nothing.
    pub fn seek(&mut self, after: u64) {
        if after != self.cursor {
            self.cursor = after;
            self.refill = true;
        }
    }

    /// Marks everything up to `through` as had (written to the reader by other means)
    /// and lets go of what the queue holds up to it, keeping the reader's place in
    /// the queue: what comes after it is still served from the queue while the queue
    /// holds it, not from history (which may hold less).
    pub fn skip_to(&mut self, through: u64) {
        if through <= self.cursor {
            return;
        }
        self.cursor = through;
        if self.pending.as_ref().is_some_and(|m| m.id <= through) {
            self.pending = None;
        }
        while self.pending.is_none() && !self.refill {
            match self.rx.try_recv() {
                Ok(message) if message.id <= through => {}
                Ok(message) => self.pending = Some(message),
                Err(TryRecvError::Lagged(_)) => self.refill = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    /// The cursor if nothing is ready now (a reader that has had everything so far),
    /// else what is ready, at most `max` messages: for a stream deciding, under its
    /// outbox's lock, whether its room's fan-out may take it over.
    pub fn caught_up(&mut self, max: usize) -> Result<u64, Batch> {
        let batch = self.try_next(max);
        if batch.is_empty() {
            Ok(self.cursor)
        } else {
            Err(batch)
        }
    }

    /// Whatever is ready now, at most `max` messages, without waiting.
    pub fn try_next(&mut self, max: usize) -> Batch {
        let max = max.max(1);
        loop {
            if self.refill {
                let batch = self.refill_from_history(max);
                if !batch.is_empty() {
                    return batch;
                }
            }
            let mut batch = Batch::default();
            let mut next = self.pending.take().map(Ok);
            while batch.messages.len() < max {
                let message = match next.take().unwrap_or_else(|| self.rx.try_recv()) {
                    Ok(message) => message,
                    Err(TryRecvError::Lagged(_)) => {
                        self.refill = true;
                        break;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                };
                if !self.accept(message, &mut batch) {
                    break;
                }
            }
            // Lagging with nothing to show yet: go straight to history.
            if batch.is_empty() && self.refill {
                continue;
            }
            return batch;
        }
    }

    fn refill_from_history(&mut self, max: usize) -> Batch {
        let slice = self.room.history_after(self.cursor, max);
        if let Some(gap) = slice.gap {
            self.cursor = gap.next_id - 1;
        }
        if let Some(last) = slice.messages.last() {
            self.cursor = last.id;
        }
        self.refill = self.cursor < slice.newest;
        Batch {
            gap: slice.gap,
            messages: slice.messages,
        }
    }

    /// Waits until there is at least one message or a gap to report, then returns all
    /// that is ready (at most `max` messages). Cancel-safe: nothing is lost if the
    /// future is dropped before it completes.
    pub async fn next(&mut self, max: usize) -> Batch {
        loop {
            let batch = self.try_next(max);
            if !batch.is_empty() {
                return batch;
            }
            match self.rx.recv().await {
                Ok(message) => self.pending = Some(message),
                Err(broadcast::error::RecvError::Lagged(_)) => self.refill = true,
                // The room outlives its subscribers; a closed channel means shutdown.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }

    /// Adds `message` if it is the next id. Returns false when the queue has skipped
    /// ahead of the cursor, which switches the reader to history.
    fn accept(&mut self, message: Arc<Published>, batch: &mut Batch) -> bool {
        if message.id <= self.cursor {
            return true;
        }
        if message.id == self.cursor + 1 {
            self.cursor = message.id;
            batch.messages.push(message);
            return true;
        }
        self.refill = true;
        false
    }
}
