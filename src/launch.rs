//! Running the lab as a process: the open-file limit, the runtime, and the signals that
//! stop it. Shared by the `lab` binary and the load generator's self-served fallback.

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Serves `config` until SIGINT or SIGTERM, on the runtime `--threads` asks for.
pub fn serve_until_signal(config: Config) -> std::io::Result<()> {
    // Each connection is a file descriptor; take all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
    runtime(config.threads, config.event_interval)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.addr))
            })?;
        let addr = listener.local_addr()?;
        tracing::info!("the transport lab is running: open http://{addr}/");
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        crate::run(listener, config, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// `threads <= 1` is a current-thread runtime: on a small machine shared with a load
/// generator it spends no CPU on cross-thread wake-ups. `event_interval`: see
/// [`crate::Config::event_interval`].
pub fn runtime(threads: usize, event_interval: u32) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
    .event_interval(event_interval)
    .enable_all()
    .build()
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
