//! The server: the router, and [`run`], the one entry point that `main` and the tests
//! both drive.

use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
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
    let app = router(state.clone());
    // Latency is what the lab measures: every batch is one write, so Nagle only delays.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serve =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let served = tokio::spawn(async move { serve.await });
    shutdown.cancelled().await;
    // Connections that still hold an answer get the grace period, then are dropped.
    state.sessions.close();
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let result = served.await;
        state.sessions.wait().await;
        result
    })
    .await;
    expiry.abort();
    match finished {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!("connections still open after the grace period; closing them");
            Ok(())
        }
    }
}
