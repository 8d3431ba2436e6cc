//! The connection limit: SSE streams, WebSockets and held long polls, all together.
//!
//! A slot is taken before a long-lived answer starts and given back when its guard
//! drops, which is also when the transport's open-connections gauge goes down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGauge;

use crate::error::ApiError;

#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a slot, or answers 503 when all are taken.
    pub fn acquire(self: &Arc<Self>, gauge: &IntGauge) -> Result<ConnectionGuard, ApiError> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Unavailable(format!(
                "too many connections: the limit is {}",
                self.max
            )));
        }
        gauge.inc();
        Ok(ConnectionGuard {
            limit: self.clone(),
            gauge: gauge.clone(),
        })
    }
}

/// Holds one connection slot until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    limit: Arc<ConnectionLimit>,
    gauge: IntGauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_returned_on_drop() {
        let limit = Arc::new(ConnectionLimit::new(2));
        let gauge = IntGauge::new("g", "g").unwrap();
        let a = limit.acquire(&gauge).unwrap();
        let _b = limit.acquire(&gauge).unwrap();
        assert!(limit.acquire(&gauge).is_err());
        assert_eq!(gauge.get(), 2);
        drop(a);
        assert_eq!(limit.open(), 1);
        assert_eq!(gauge.get(), 1);
        assert!(limit.acquire(&gauge).is_ok());
    }
}
