//! The transports: each module adapts the room to one wire format.
//!
//! A transport module exports `NAME` (its label in metrics and the load generator)
//! and `routes()`. Adding a transport is one new file here and one line in the list
//! below; the load generator keeps a matching list, and a test fails if they differ.

use axum::Router;

use crate::http1::Direct;
use crate::state::AppState;

pub mod common;
pub mod fanout;
pub mod outbox;

macro_rules! transports {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every registered transport, in order.
        pub const NAMES: &[&str] = &[$($module::NAME),*];

        /// The routes of every registered transport.
        pub fn routes() -> Router<AppState> {
            Router::new()$(.merge($module::routes()))*
        }
    };
}

transports! {
    poll,
    long_poll,
    sse,
    ws,
}

/// The routes answered before the router ([`Direct`]): the long poll, which is most of
/// the requests at any load it is measured under.
pub fn direct_routes(state: &AppState) -> Vec<Direct> {
    vec![long_poll::direct(state.clone())]
}
