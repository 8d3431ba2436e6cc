//! Integration tests: the real server on port 0, driven by real clients (reqwest,
//! tokio-tungstenite, an SSE parser). One module per feature.

mod common;

mod binary;

mod disconnect;
mod errors;
mod http1;
mod limits;
mod long_poll;
mod operations;
mod ordering;
mod poll;
mod results;
mod resume;
mod shutdown;
mod slow_subscriber;
mod sse;
mod sse_fanout;
mod ws;
