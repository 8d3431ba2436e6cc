//! Long polling: `GET /rooms/{room}/long-poll?client=C&after=<cursor>&timeout_ms=T`,
//! again as soon as each answer has arrived. Passing `after` on every poll makes an
//! answer lost in transit cost nothing.

use bytes::Bytes;

use super::{Received, Receiver, Sub};
use crate::conn::Http;
use crate::error::ClientError;

pub struct LongPoll {
    http: Http,
    path: String,
    /// The last answer.
    body: Bytes,
}

impl Receiver for LongPoll {
    const NAME: &'static str = "long-poll";
    const OPEN_REQUESTS: bool = false;

    async fn open(http: Http, sub: &Sub<'_>, _after: u64) -> Result<Self, ClientError> {
        let path = format!(
            "/rooms/{}/long-poll?client={}&limit=1000&timeout_ms={}&after=",
            sub.room, sub.client, sub.long_poll_timeout_ms
        );
        Ok(LongPoll {
            http,
            path,
            body: Bytes::new(),
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, cursor: u64) -> Result<Received<'_>, ClientError> {
        self.body = self.http.get_body(&format!("{}{cursor}", self.path)).await?;
        Ok(Received::Page(&self.body))
    }
}
