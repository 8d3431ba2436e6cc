//! The state every handler shares, behind one `Arc`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::limits::ConnectionLimit;
use crate::metrics::Metrics;
use crate::room::Rooms;

pub type AppState = Arc<Shared>;

pub struct Shared {
    pub config: Config,
    pub rooms: Rooms,
    pub metrics: Metrics,
    pub connections: Arc<ConnectionLimit>,
    /// Cancelled when the server shuts down: long-lived answers end on it.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket sessions, which outlive the HTTP exchange that started them.
    pub sessions: TaskTracker,
}

impl Shared {
    pub fn new(config: Config, shutdown: CancellationToken) -> AppState {
        Arc::new(Shared {
            rooms: crate::room::Rooms::new(config.room_limits()),
            metrics: Metrics::new(crate::transport::NAMES, config.threads),
            connections: Arc::new(ConnectionLimit::new(config.max_connections)),
            config,
            shutdown,
            sessions: TaskTracker::new(),
        })
    }
}
