//! WebSocket: `GET /rooms/{room}/ws?after=N` upgraded on the user's connection, with a
//! 4 KiB read buffer (tungstenite's 128 KiB default, zero-filled, would make 10,000
//! idle sockets cost over a gigabyte). Text frames are messages; pings are answered
//! by tungstenite while reading.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::{Received, Receiver, Sub};
use crate::h1::Conn;
use crate::error::ClientError;

pub struct Ws {
    socket: WebSocketStream<Conn>,
    /// The last text frame.
    text: Bytes,
}

impl Receiver for Ws {
    const NAME: &'static str = "ws";
    const OPEN_REQUESTS: bool = true;

    async fn open(http: Conn, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError> {
        let io = http
            .upgrade(&format!("/rooms/{}/ws?after={after}", sub.room))
            .await?;
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let socket = WebSocketStream::from_raw_socket(io, Role::Client, Some(config)).await;
        Ok(Ws {
            socket,
            text: Bytes::new(),
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, _cursor: u64) -> Result<Received<'_>, ClientError> {
        match self.socket.next().await {
            Some(Ok(Message::Text(text))) => {
                self.text = text.into();
                Ok(Received::Message(&self.text))
            }
            Some(Ok(Message::Close(_))) | None => Err(ClientError::Closed),
            Some(Ok(_)) => Ok(Received::Nothing),
            Some(Err(e)) => Err(e.into()),
        }
    }
}
