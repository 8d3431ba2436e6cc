//! Measures the wire sizes the model needs on a real server: one message posted, then
//! a short poll and a long poll that return it and a short poll that returns nothing,
//! each on a fresh connection whose bytes are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::conn::{Http, NOW};
use crate::error::{ClientError, LoadgenError};
use crate::runner::block_on;
use crate::target::Target;
use crate::wire;

use super::model::Probe;

/// A `GET path` on its own connection: (all bytes read, body bytes).
async fn sizes(target: &Target, path: &str) -> Result<(f64, f64), ClientError> {
    let bytes = Arc::new(AtomicU64::new(0));
    let mut http = Http::open(target, None, bytes.clone()).await?;
    let body = http.get_body(path).await?;
    Ok((bytes.load(Ordering::Relaxed) as f64, body.len() as f64))
}

/// Probes `target` in `room` with one message of `message_bytes` text bytes from a
/// user named like the loadgen's senders.
pub fn probe(target: &Target, room: &str, message_bytes: usize) -> Result<Probe, LoadgenError> {
    let fail = |e: ClientError| LoadgenError::NotLab {
        target: target.url.clone(),
        reason: format!("probe: {e}"),
    };
    block_on(async {
        let mut http = Http::open(target, None, Default::default()).await?;
        let now = crate::clock::Clock::new().now_us();
        let text = wire::text_with_stamp(1000, now, message_bytes);
        let body = wire::post_body("u0", &text, now);
        http.post_json(&format!("/rooms/{room}/messages"), body)
            .await?;
        let (one_all, one_body) = sizes(target, &format!("/rooms/{room}/messages?after=0")).await?;
        let (_, empty_body) = sizes(target, &format!("/rooms/{room}/messages?after={NOW}")).await?;
        let (lp_all, lp_body) = sizes(
            target,
            &format!("/rooms/{room}/long-poll?client=probe&after=0&timeout_ms=0"),
        )
        .await?;
        let message_json = one_body - empty_body;
        Ok(Probe {
            message_json,
            poll_head: one_all - one_body,
            poll_empty_body: empty_body,
            long_poll_head: lp_all - lp_body,
            long_poll_empty_body: lp_body - message_json,
            room_len: room.len() as f64,
            user_len: 2.0,
        })
    })
    .map_err(fail)
}
