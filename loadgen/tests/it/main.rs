//! The load generator against an in-process lab server (`lab::run` on port 0 on its
//! own thread and runtime). One module per feature; each run lasts 1 to 3 seconds.

mod common;

mod altered;
mod churn;
mod cli;
mod modes;
mod observer;
mod refused;
mod schema;
mod sweep;
mod transports;
mod unanswered;
mod window;
