//! Per-user delivery accounting: which ids one user saw, in what order, and how they
//! compare with the ids the room published in the counted window.
//!
//! The tracker is streaming and small: received ids are kept as sorted ranges (one
//! range when delivery is in order), and ids that jumped ahead are remembered as
//! missing so that a late one is told apart from a duplicate.

use std::ops::RangeInclusive;

#[derive(Debug, Default, Clone)]
pub struct Tracker {
    /// The user's start: ids at or below it are not owed to it (`L`).
    after: u64,
    /// The highest id seen (or `after` before the first).
    last: u64,
    /// The first id of the run of consecutive ids that ends at `last`, once any id
    /// was seen. Kept here, not in `ranges`, so that an in-order delivery (nearly
    /// every one) touches no heap memory.
    run_start: Option<u64>,
    /// Earlier runs of ids received in order or ahead, sorted and disjoint.
    ranges: Vec<RangeInclusive<u64>>,
    /// Ids skipped over that have not arrived (yet). The id that skipped over a range
    /// is the one just above it.
    missing: Vec<RangeInclusive<u64>>,
    /// Ids that arrived after a higher one (they count as received too), each with
    /// the id that had skipped over it.
    out_of_order: Vec<(u64, u64)>,
    /// Ids seen more than once (or at or below `after`).
    duplicated: Vec<u64>,
}

/// What one user got of the counted ids it was owed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
    }
}

impl Tracker {
    /// A tracker owed every id above `after`.
    pub fn starting_after(after: u64) -> Self {
        Tracker {
            after,
            last: after,
            ..Tracker::default()
        }
    }

    pub fn after(&self) -> u64 {
        self.after
    }

    /// The highest id seen, or the start when none was.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The highest id up to which every id above the start was seen.
    pub fn complete_through(&self) -> u64 {
        match self.missing.iter().map(|r| *r.start()).min() {
            Some(first_missing) => first_missing - 1,
            None => self.last,
        }
    }

    /// Records one delivery of `id`; whether it was the first delivery of that id.
    pub fn see(&mut self, id: u64) -> bool {
        if id == self.last + 1 {
            self.run_start.get_or_insert(id);
            self.last = id;
        } else if id > self.last {
            self.missing.push(self.last + 1..=id - 1);
            if let Some(start) = self.run_start.replace(id) {
                self.ranges.push(start..=self.last);
            }
            self.last = id;
        } else if let Some(i) = self.missing.iter().position(|r| r.contains(&id)) {
            let r = self.missing.remove(i);
            // The ids below it are now skipped over by this one, as `missing` says.
            if *r.start() < id {
                self.missing.push(*r.start()..=id - 1);
            }
            if id < *r.end() {
                self.missing.push(id + 1..=*r.end());
            }
            self.out_of_order.push((id, *r.end() + 1));
        } else {
            self.duplicated.push(id);
            return false;
        }
        true
    }

    /// Every run of ids received in order or ahead, in order.
    fn runs(&self) -> impl Iterator<Item = RangeInclusive<u64>> + '_ {
        let current = self.run_start.map(|start| start..=self.last);
        self.ranges.iter().cloned().chain(current)
    }

    /// Compares what was seen with `counted` (sorted ids published in the counted
    /// window): the user is owed those in `(after, end]`. `published`: the last id
    /// the run published (`end` too, unless the user left early).
    pub fn tally(&self, counted: &[u64], end: u64, published: u64) -> Tally {
        let owed = |id: u64| id > self.after && id <= end && counted.binary_search(&id).is_ok();
        let expected = count_in(counted, self.after, end);
        let in_ranges: u64 = self
            .runs()
            .map(|r| {
                count_in(
                    counted,
                    (*r.start() - 1).max(self.after),
                    (*r.end()).min(end),
                )
            })
            .sum();
        // Out of order: overtaken by an id the run published. One that came after an
        // id beyond `published` only was not overtaken by any message.
        let out_of_order = self
            .out_of_order
            .iter()
            .filter(|&&(id, by)| owed(id) && by <= published)
            .count() as u64;
        let late = self
            .out_of_order
            .iter()
            .filter(|&&(id, _)| owed(id))
            .count() as u64;
        let received = in_ranges + late;
        Tally {
            expected,
            received,
            lost: expected - received,
            duplicated: self.duplicated.iter().filter(|&&id| owed(id)).count() as u64,
            out_of_order,
        }
    }

    /// How many distinct ids above `end` were seen: for a user that stayed to the end
    /// of the run, ids no sender of the run had published.
    pub fn beyond(&self, end: u64) -> u64 {
        let in_runs: u64 = self
            .runs()
            .map(|r| (*r.end()).saturating_sub((*r.start() - 1).max(end)))
            .sum();
        in_runs
            + self
                .out_of_order
                .iter()
                .filter(|&&(id, _)| id > end)
                .count() as u64
    }
}

/// How many of the sorted `ids` lie in `(low, high]`.
pub fn count_in(ids: &[u64], low: u64, high: u64) -> u64 {
    if high <= low {
        return 0;
    }
    (ids.partition_point(|&i| i <= high) - ids.partition_point(|&i| i <= low)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(after: u64, ids: &[u64]) -> Tracker {
        let mut t = Tracker::starting_after(after);
        for &i in ids {
            t.see(i);
        }
        t
    }

    #[test]
    fn see_tells_a_first_delivery_from_a_repeat() {
        let mut t = Tracker::starting_after(5);
        assert!(!t.see(5), "at or below the start is not owed");
        assert!(t.see(6));
        assert!(t.see(9), "ahead");
        assert!(t.see(7), "late, not a repeat");
        assert!(!t.see(7));
        assert!(!t.see(9));
    }

    #[test]
    fn in_order_delivery_is_complete() {
        let counted: Vec<u64> = (1..=10).collect();
        let t = seen(0, &(1..=10).collect::<Vec<_>>());
        let tally = t.tally(&counted, 10, 10);
        assert_eq!(
            tally,
            Tally {
                expected: 10,
                received: 10,
                ..Tally::default()
            }
        );
        assert_eq!(t.runs().collect::<Vec<_>>(), [1..=10]);
        assert!(
            t.ranges.is_empty(),
            "in order, nothing is stored on the heap"
        );
        let gaps = seen(0, &[1, 2, 5, 6, 9]);
        assert_eq!(gaps.runs().collect::<Vec<_>>(), [1..=2, 5..=6, 9..=9]);
        assert_eq!(gaps.missing, [3..=4, 7..=8]);
    }

    #[test]
    fn complete_through_stops_at_the_first_missing_id() {
        assert_eq!(seen(5, &[]).complete_through(), 5);
        assert_eq!(seen(0, &[1, 2, 3]).complete_through(), 3);
        let mut t = seen(0, &[1, 2, 5, 9]);
        assert_eq!(t.complete_through(), 2);
        t.see(3);
        t.see(4);
        assert_eq!(t.complete_through(), 5);
        for id in 6..=8 {
            t.see(id);
        }
        assert_eq!(t.complete_through(), 9);
    }

    #[test]
    fn skips_late_arrivals_and_repeats_are_told_apart() {
        let counted: Vec<u64> = (1..=8).collect();
        let t = seen(0, &[1, 2, 5, 3, 3, 6, 2, 8]);
        let tally = t.tally(&counted, 8, 8);
        assert_eq!(tally.expected, 8);
        assert_eq!(tally.received, 6); // 1 2 3 5 6 8
        assert_eq!(tally.lost, 2); // 4 7
        assert_eq!(tally.out_of_order, 1); // 3
        assert_eq!(tally.duplicated, 2); // 3 again, 2 again
    }

    #[test]
    fn an_id_no_sender_published_is_beyond_the_end_and_overtakes_nothing() {
        let counted: Vec<u64> = (1..=10).collect();
        // 1000 came between 4 and 5; 5..=10 then arrived in order after it.
        let t = seen(0, &[1, 2, 3, 4, 1000, 5, 6, 7, 8, 9, 10]);
        let tally = t.tally(&counted, 10, 10);
        assert_eq!(tally.received, 10);
        assert_eq!(tally.lost, 0);
        assert_eq!(
            tally.out_of_order, 0,
            "overtaken only by an id beyond the end"
        );
        assert_eq!(t.beyond(10), 1);
        assert_eq!(t.complete_through(), 10);
        // A real swap after it is still out of order.
        let t = seen(0, &[1, 2, 1000, 3, 5, 4, 6]);
        assert_eq!(t.tally(&counted, 6, 6).out_of_order, 1);
        assert_eq!(t.beyond(6), 1);
        assert_eq!(seen(0, &[1, 2, 3]).beyond(3), 0);
        assert_eq!(seen(0, &[1, 5, 9, 7]).beyond(4), 3);
    }

    #[test]
    fn only_counted_ids_in_the_users_window_are_owed() {
        // Warm-up ids 1..=4 are not counted; the user started after 5 and left at 9.
        let counted: Vec<u64> = (5..=12).collect();
        let t = seen(5, &[6, 7, 8, 9]);
        assert_eq!(
            t.tally(&counted, 9, 9),
            Tally {
                expected: 4,
                received: 4,
                ..Tally::default()
            }
        );
        // Same user, but the run went on to 12 and it saw nothing more: 3 lost.
        assert_eq!(t.tally(&counted, 12, 12).lost, 3);
        // Counted ids need not be contiguous (concurrent senders at the window's edge).
        let counted = [6, 8, 9];
        assert_eq!(t.tally(&counted, 9, 9).received, 3);
        assert_eq!(count_in(&counted, 6, 9), 2);
        assert_eq!(count_in(&counted, 9, 6), 0);
    }

    #[test]
    fn an_id_at_or_below_the_start_is_a_duplicate_but_not_owed() {
        let t = seen(5, &[5, 6]);
        assert_eq!(t.duplicated, vec![5]);
        assert_eq!(t.tally(&[5, 6], 6, 6).duplicated, 0);
    }
}
