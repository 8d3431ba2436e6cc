//! The server: the router, and [`run`], the one entry point that `main` and the tests
//! both drive.

use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::routes;
use crate::state::{AppState, Shared};

/// How long shutdown waits for open answers and sockets to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Every route: the transports' and the shared ones.
pub fn router(state: AppState) -> Router {
    crate::transport::routes()
        .merge(routes::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Serves the lab on `listener` until `shutdown` is cancelled, then stops accepting,
/// answers held long polls, ends SSE streams, closes WebSockets with 1001, and returns
/// within [`SHUTDOWN_GRACE`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Shared::new(config, shutdown.clone());
    let expiry = {
        let state = state.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { state.rooms.expire_idle_clients_until(token).await })
    };
    let connections = tokio_util::task::TaskTracker::new();
    crate::listener::accept(
        listener,
        router(state.clone()),
        crate::transport::direct_routes(&state),
        shutdown.clone(),
        connections.clone(),
        state.config.timeouts(),
    )
    .await;
    // Connections that still hold an answer get the grace period, then are dropped.
    connections.close();
    state.sessions.close();
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        connections.wait().await;
        state.sessions.wait().await;
    })
    .await;
    expiry.abort();
    if finished.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    Ok(())
}
