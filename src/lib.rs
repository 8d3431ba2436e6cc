//! The transport lab: one chat room, served four ways, so that short polling, long
//! polling, Server-Sent Events and WebSocket can be compared on equal terms.
//!
//! # Layout
//! - [`room`]: the room model (ids, history, fan-out, per-client queues). No HTTP.
//! - [`transport`]: one module per way of receiving, each adapting the room to its
//!   wire format, and the list that registers them.
//! - [`routes`]: the routes every transport shares: sending, health, metrics, the page.
//! - [`error`]: the JSON error answers.
//! - [`metrics`]: Prometheus counters, labelled by transport.
//! - [`process_stats`]: process CPU, memory and file descriptors from /proc.
//! - [`limits`]: the connection limit.
//! - [`time_limit`]: work given up when it does not finish in time (write timeouts).
//! - [`listener`]: the accept loop, one task per connection.
//! - [`http1`]: HTTP/1.1 connections: a lean loop for plain requests, hyper for the rest.
//! - [`config`]: command-line flags and `LAB_*` environment variables.
//! - [`server`]: [`run`], the one entry point that `main` and the tests drive.
//! - [`launch`]: running as a process: file limit, runtime, signals.
//! - [`web`]: the browser page, embedded in the binary.

pub mod config;
pub mod error;
pub mod http1;
pub mod launch;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod process_stats;
pub mod room;
pub mod routes;
pub mod server;
pub mod state;
pub mod time_limit;
pub mod transport;
pub mod web;

pub use config::Config;
pub use server::{router, run};
