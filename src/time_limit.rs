//! Work that must finish within a time limit, without a timer for work that finishes
//! at once: a write to a socket with room in its buffer, the usual case, arms nothing.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::FutureExt;

/// `work`'s output, or `None` if it did not finish within `limit`. The timer is armed
/// only if the first poll leaves the work pending.
pub async fn within<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    let mut work = pin!(work);
    if let Some(done) = (&mut work).now_or_never() {
        return Some(done);
    }
    tokio::time::timeout(limit, work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_work_is_returned_and_stalled_work_is_given_up() {
        assert_eq!(within(Duration::from_secs(1), async { 7 }).await, Some(7));
        let late = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(within(Duration::from_secs(1), late).await, None);
        let in_time = tokio::time::sleep(Duration::from_millis(500));
        assert_eq!(within(Duration::from_secs(1), in_time).await, Some(()));
    }
}
