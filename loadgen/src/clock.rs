//! One clock for the whole run: the wall-clock time at start plus a monotonic offset,
//! in microseconds since the Unix epoch. Senders (`client_ts`), schedules (due times)
//! and receivers all read it, so their differences never see a wall-clock step.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_us: u64,
}

impl Clock {
    pub fn new() -> Self {
        let base = Instant::now();
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock { base, base_us }
    }

    /// Now, in microseconds since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        self.at_us(Instant::now())
    }

    /// `instant` on the same scale as [`Clock::now_us`].
    pub fn at_us(&self, instant: Instant) -> u64 {
        match instant.checked_duration_since(self.base) {
            Some(d) => self.base_us + d.as_micros() as u64,
            None => self.base_us - self.base.duration_since(instant).as_micros() as u64,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
