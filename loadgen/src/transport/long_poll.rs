//! Long polling: `GET /rooms/{room}/long-poll?client=C&after=<cursor>&timeout_ms=T`,
//! again as soon as each answer has arrived. Passing `after` on every poll makes an
//! answer lost in transit cost nothing.

use super::{Received, Receiver, Sub};
use crate::h1::Conn;
use crate::error::ClientError;

pub struct LongPoll {
    http: Conn,
    path: String,
}

impl Receiver for LongPoll {
    const NAME: &'static str = "long-poll";
    const STREAM: bool = false;

    async fn open(http: Conn, sub: &Sub<'_>, _after: u64) -> Result<Self, ClientError> {
        let path = format!(
            "/rooms/{}/long-poll?client={}&limit=1000&timeout_ms={}&after=",
            sub.room, sub.client, sub.long_poll_timeout_ms
        );
        Ok(LongPoll { http, path })
    }

    async fn next(&mut self, _sub: &Sub<'_>, cursor: u64) -> Result<Received<'_>, ClientError> {
        let body = self.http.get_body(&format!("{}{cursor}", self.path)).await?;
        Ok(Received::Page(body))
    }
}
