//! Live counters for the progress bar: one set per worker, bumped with relaxed atomics
//! (once per batch, not per message where it can be helped), summed by the runner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Default)]
pub struct Progress {
    /// Users subscribed now.
    pub users: AtomicU64,
    pub sent: AtomicU64,
    pub deliveries: AtomicU64,
    pub errors: AtomicU64,
}

/// A bar over the run's planned length, or a hidden one.
pub fn bar(mode: &str, total: Duration, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len}s {wide_msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(mode.to_owned());
    bar
}

/// Shows the sums of `workers`' counters on `bar`.
pub fn show(bar: &ProgressBar, workers: &[std::sync::Arc<Progress>], users: usize, phase: &str) {
    let sum = |f: fn(&Progress) -> &AtomicU64| -> u64 {
        workers.iter().map(|p| f(p).load(Ordering::Relaxed)).sum()
    };
    bar.set_message(format!(
        "{phase:<7} users {}/{users}  sent {}  deliveries {}  errors {}",
        sum(|p| &p.users),
        sum(|p| &p.sent),
        sum(|p| &p.deliveries),
        sum(|p| &p.errors),
    ));
}
