//! Short polling: `GET /rooms/{room}/messages?after=<cursor>` every poll interval,
//! each user at its own phase of the interval so polls do not arrive in bursts.

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{Received, Receiver, Sub};
use crate::h1::Conn;
use crate::error::ClientError;

pub struct Poll {
    http: Conn,
    tick: Interval,
    path: String,
}

impl Receiver for Poll {
    const NAME: &'static str = "poll";
    const STREAM: bool = false;

    async fn open(http: Conn, sub: &Sub<'_>, _after: u64) -> Result<Self, ClientError> {
        let first = Instant::now() + sub.poll_interval.mul_f64(sub.phase);
        let mut tick = tokio::time::interval_at(first, sub.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Poll {
            http,
            tick,
            path: format!("/rooms/{}/messages?limit=1000&after=", sub.room),
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, cursor: u64) -> Result<Received<'_>, ClientError> {
        self.tick.tick().await;
        let body = self.http.get_body(&format!("{}{cursor}", self.path)).await?;
        Ok(Received::Page(body))
    }
}
