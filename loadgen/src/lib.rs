//! The transport lab's load generator: N simulated users against each transport,
//! and what they got.
//!
//! # Layout
//! - [`cli`]: flags and their defaults, turned into [`scenario::Scenario`]s.
//! - [`runner`]: one run, start to end (targets checked, workers started, metrics
//!   read, last id announced, results accounted).
//! - [`worker`]: a thread with a single-threaded runtime running its share of users
//!   and senders; it records locally and hands over once.
//! - [`user`]: one user's loop, generic over its transport's receiver.
//! - [`transport`]: one file per transport behind the `Receiver` trait, and the list.
//! - [`sender`]: the open-model send schedule and its connection pool.
//! - [`h1`]: a user's own HTTP/1.1 connection (polls, SSE stream, WebSocket upgrade).
//! - [`pump`]: one read loop per worker over its users' subscribed WebSockets.
//! - [`conn`]: hyper HTTP/1.1 connections for senders and checks, bytes counted.
//! - [`wire`]: the protocol shapes, parsed for what is needed only.
//! - [`tracker`]: per-user id accounting (lost, duplicated, out of order).
//! - [`stats`]: histograms and counters; [`account`]: from records to result rows.
//! - [`metrics`]: the server's `/metrics`; [`machine`]: machine facts and own CPU.
//! - [`report`]: JSON, CSV and the table; [`progress`]: the progress bar.
//! - [`server`]: the child `lab` server used when no target is given.
//! - [`sweep`]: `loadgen sweep`, the repeated comparison and its report;
//!   [`stepup`]: `loadgen step-up`, clients added until latency passes a limit.
//! - [`clock`], [`target`], [`error`]: small shared pieces.
//!
//! The policy these implement is written down in docs/measurement.md; the JSON schema
//! in docs/results.md.

pub mod account;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod cpus;
pub mod error;
pub mod h1;
pub mod machine;
pub mod metrics;
pub mod progress;
pub mod pump;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod sender;
pub mod server;
pub mod stats;
pub mod stepup;
pub mod sweep;
pub mod target;
pub mod tracker;
pub mod transport;
pub mod user;
pub mod wire;
pub mod worker;

pub use error::{ClientError, LoadgenError};
pub use report::RunResult;
pub use runner::run;
pub use scenario::{Churn, Mix, Scenario};
pub use target::Target;
