//! `lab`: the transport lab server.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Cheaper than glibc's malloc for the allocations each request makes (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = lab::Config::parse();
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    lab::launch::serve_until_signal(config)?;
    Ok(())
}
