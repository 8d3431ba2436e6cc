//! The last `--history` messages of one room, addressable by id.
//!
//! Ids in a room are contiguous, so the message with id `n` sits at index
//! `n - oldest_id`: a lookup is arithmetic, not a search.

use std::collections::VecDeque;
use std::sync::Arc;

use super::message::{Gap, Published};

/// What a reader gets when it asks for the messages after an id.
#[derive(Debug, Default)]
pub struct Slice {
    pub gap: Option<Gap>,
    pub messages: Vec<Arc<Published>>,
    /// The room's newest id when the slice was taken.
    pub newest: u64,
}

#[derive(Debug)]
pub struct History {
    held: VecDeque<Arc<Published>>,
    capacity: usize,
    newest: u64,
    /// What the held messages take ([`Published::stored_bytes`]).
    bytes: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History {
            held: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            newest: 0,
            bytes: 0,
        }
    }

    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// What the held messages take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the next message; its id must be `newest + 1`. Returns the bytes of
    /// what that let go (the oldest message, when history was full).
    pub fn push(&mut self, message: Arc<Published>) -> usize {
        debug_assert_eq!(message.id, self.newest + 1);
        self.newest = message.id;
        if self.capacity == 0 {
            return 0;
        }
        let freed = if self.held.len() == self.capacity {
            self.drop_oldest()
        } else {
            0
        };
        self.bytes += message.stored_bytes();
        self.held.push_back(message);
        freed
    }

    /// Lets go of the oldest messages until at least `bytes` are freed or none is
    /// left; the bytes freed. Readers asking for them are told of a gap.
    pub fn evict(&mut self, bytes: usize) -> usize {
        let mut freed = 0;
        while freed < bytes && !self.held.is_empty() {
            freed += self.drop_oldest();
        }
        freed
    }

    fn drop_oldest(&mut self) -> usize {
        let freed = self.held.pop_front().map_or(0, |m| m.stored_bytes());
        self.bytes -= freed;
        freed
    }

    /// Up to `limit` messages with ids greater than `after`, oldest first, and a gap
    /// when some of the messages after `after` are no longer held.
    pub fn after(&self, after: u64, limit: usize) -> Slice {
        let mut slice = Slice {
            newest: self.newest,
            ..Slice::default()
        };
        if after >= self.newest {
            return slice;
        }
        let oldest = self.newest + 1 - self.held.len() as u64;
        let first = after + 1;
        if first < oldest {
            slice.gap = Some(Gap {
                after,
                next_id: oldest,
            });
        }
        let start = first.max(oldest);
        let skip = (start - oldest) as usize;
        slice
            .messages
            .extend(self.held.iter().skip(skip).take(limit).cloned());
        slice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::message::Draft;

    fn history_with(capacity: usize, count: u64) -> History {
        let mut h = History::new(capacity);
        let draft = Draft {
            user: "u".into(),
            text: "t".into(),
            client_ts: None,
        };
        for id in 1..=count {
            h.push(Arc::new(Published::new(id, "r", &draft, 0)));
        }
        h
    }

    fn ids(slice: &Slice) -> Vec<u64> {
        slice.messages.iter().map(|m| m.id).collect()
    }

    #[test]
    fn after_returns_newer_messages_oldest_first() {
        let h = history_with(10, 5);
        let s = h.after(2, 100);
        assert_eq!(ids(&s), vec![3, 4, 5]);
        assert_eq!(s.gap, None);
        assert_eq!(s.newest, 5);
    }

    #[test]
    fn limit_caps_the_slice() {
        let h = history_with(10, 5);
        assert_eq!(ids(&h.after(0, 2)), vec![1, 2]);
    }

    #[test]
    fn after_beyond_newest_is_empty() {
        let h = history_with(10, 5);
        let s = h.after(99, 10);
        assert!(s.messages.is_empty());
        assert_eq!(s.gap, None);
        assert_eq!(s.newest, 5);
    }

    #[test]
    fn evicted_messages_are_reported_as_a_gap() {
        let h = history_with(3, 10);
        let s = h.after(2, 100);
        assert_eq!(ids(&s), vec![8, 9, 10]);
        assert_eq!(
            s.gap,
            Some(Gap {
                after: 2,
                next_id: 8
            })
        );
        // Asking from just before the oldest held message is not a gap.
        assert_eq!(h.after(7, 100).gap, None);
    }

    #[test]
    fn eviction_frees_the_oldest_and_leaves_a_gap() {
        let mut h = history_with(10, 5);
        let each = h.bytes() / 5;
        assert_eq!(h.evict(each + 1), 2 * each);
        assert_eq!(h.bytes(), 3 * each);
        let s = h.after(0, 100);
        assert_eq!(ids(&s), vec![3, 4, 5]);
        assert_eq!(
            s.gap,
            Some(Gap {
                after: 0,
                next_id: 3
            })
        );
        assert_eq!(h.evict(usize::MAX), 3 * each);
        assert_eq!((h.bytes(), h.after(0, 100).messages.len()), (0, 0));
    }

    #[test]
    fn zero_capacity_holds_nothing_but_counts_ids() {
        let h = history_with(0, 4);
        let s = h.after(1, 10);
        assert!(s.messages.is_empty());
        assert_eq!(s.newest, 4);
    }
}
