//! Server-Sent Events: `GET /rooms/{room}/events?after=N`, parsed with
//! `eventsource-stream`. `message` and `gap` events are passed on; comments and the
//! `retry` line carry no message.

use eventsource_stream::{EventStream, Eventsource};
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use hyper::body::Incoming;

use super::{Received, Receiver, Sub};
use crate::conn::Http;
use crate::error::ClientError;

pub struct Sse {
    events: EventStream<BodyDataStream<Incoming>>,
    /// Kept so the connection lives as long as the stream.
    _http: Http,
}

impl Receiver for Sse {
    const NAME: &'static str = "sse";
    const OPEN_REQUESTS: bool = true;

    async fn open(mut http: Http, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError> {
        let path = format!("/rooms/{}/events?after={after}", sub.room);
        let resp = http.get(&path).await?;
        let is_sse = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(ClientError::Protocol(format!("{path} is not text/event-stream")));
        }
        let events = BodyDataStream::new(resp.into_body()).eventsource();
        Ok(Sse { events, _http: http })
    }

    async fn next(&mut self, _sub: &Sub<'_>, _cursor: u64) -> Result<Received, ClientError> {
        match self.events.next().await {
            Some(Ok(ev)) if !ev.data.is_empty() && (ev.event == "message" || ev.event == "gap") => {
                Ok(Received::Message(ev.data.into()))
            }
            Some(Ok(_)) => Ok(Received::Nothing),
            Some(Err(e)) => Err(ClientError::Sse(e.to_string())),
            None => Err(ClientError::Closed),
        }
    }
}
