//! The accept loop: one task per TCP connection, served by [`crate::http1`] through one
//! shared router.
//!
//! axum's own `serve` clones the router's route table for every connection (about
//! 6 KiB each) and sniffs for HTTP/2 first; at ten thousand idle connections both show
//! in resident memory, so the lab accepts connections itself.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http1::Timeouts;

/// Accepts until `shutdown` is cancelled; each connection then finishes the answer it is
/// writing and closes. Returns when the listener is closed; connection tasks are in
/// `connections`.
///
/// Every connection shares the one `timeouts`: a copy in each would be 48 bytes of
/// every idle connection's state.
pub async fn accept(
    listener: TcpListener,
    app: Router,
    direct: Vec<crate::http1::Direct>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    timeouts: Timeouts,
) {
    let timeouts = Arc::new(timeouts);
    let service = crate::http1::Service::new(app, direct);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors (or a connection reset before accept):
                    // back off briefly rather than spin; nothing already open suffers.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Latency is what the lab measures, and every batch is already one write.
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let shutdown = shutdown.clone();
        connections.spawn(crate::http1::serve(
            stream,
            service,
            shutdown,
            timeouts.clone(),
        ));
    }
}
