//! A chat message as the room publishes it: encoded once, shared by every reader.
//!
//! A message is serialized to JSON exactly once, when it is accepted; the SSE event
//! text is built from that JSON at the same time. Every transport writes these bytes
//! as they are, so fan-out to ten thousand subscribers costs ten thousand cheap
//! `Bytes` clones, not ten thousand serializations.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// What a sender supplies.
#[derive(Debug, Clone)]
pub struct Draft {
    pub user: String,
    pub text: String,
    pub client_ts: Option<i64>,
}

/// An accepted message, ready to be written by any transport.
#[derive(Debug)]
pub struct Published {
    pub id: u64,
    /// `{"id":..,"room":..,"user":..,"text":..,"client_ts":..,"server_ts":..}`
    pub json: Bytes,
    /// `id: N\nevent: message\ndata: <json>\n\n`
    pub sse: Bytes,
}

#[derive(Serialize)]
struct Wire<'a> {
    id: u64,
    room: &'a str,
    user: &'a str,
    text: &'a str,
    client_ts: Option<i64>,
    server_ts: i64,
}

impl Published {
    pub fn new(id: u64, room: &str, draft: &Draft, server_ts: i64) -> Self {
        let wire = Wire {
            id,
            room,
            user: &draft.user,
            text: &draft.text,
            client_ts: draft.client_ts,
            server_ts,
        };
        // The keys and three numbers of at most 20 digits take 123 bytes: a message
        // whose text needs no escaping fits at once, with little to spare.
        let mut json = Vec::with_capacity(draft.text.len() + draft.user.len() + room.len() + 128);
        serde_json::to_writer(&mut json, &wire).expect("a message always serializes");
        // A text that escaping made longer grew the buffer by doubling; what the room
        // holds (and counts against `--max-history-bytes`) is what the message needs.
        if json.capacity() - json.len() > 64 {
            json.shrink_to_fit();
        }
        let sse = sse_event(Some(id), "message", &json);
        Published {
            id,
            json: Bytes::from(json),
            sse,
        }
    }

    /// What holding this message takes: both encodings, and a little for their
    /// headers and slack.
    pub fn stored_bytes(&self) -> usize {
        self.json.len() + self.sse.len() + 128
    }
}

/// One Server-Sent Event. `data` never contains a newline: it is compact JSON.
pub fn sse_event(id: Option<u64>, event: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The room told a reader that messages it asked for are no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The last id the reader had.
    pub after: u64,
    /// The id of the first message it gets next.
    pub next_id: u64,
}

impl Gap {
    /// `{"gap":true,"after":N,"next_id":M}`, as SSE and WebSocket carry it.
    pub fn json(&self) -> String {
        format!(
            "{{\"gap\":true,\"after\":{},\"next_id\":{}}}",
            self.after, self.next_id
        )
    }
}

/// The current time in microseconds since the Unix epoch, as the protocol counts it.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_field_and_escapes_text() {
        let draft = Draft {
            user: "alice".into(),
            text: "a \"quoted\"\nline".into(),
            client_ts: None,
        };
        let p = Published::new(17, "lobby", &draft, 5);
        let v: serde_json::Value = serde_json::from_slice(&p.json).unwrap();
        assert_eq!(v["id"], 17);
        assert_eq!(v["room"], "lobby");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["text"], "a \"quoted\"\nline");
        assert!(v["client_ts"].is_null());
        assert_eq!(v["server_ts"], 5);
        assert!(!p.json.contains(&b'\n'));
    }

    #[test]
    fn sse_event_is_one_event_with_id() {
        let draft = Draft {
            user: "u".into(),
            text: "t".into(),
            client_ts: Some(1),
        };
        let p = Published::new(3, "r", &draft, 2);
        let text = std::str::from_utf8(&p.sse).unwrap();
        assert!(text.starts_with("id: 3\nevent: message\ndata: {"));
        assert!(text.ends_with("}\n\n"));
    }

    #[test]
    fn gap_json_matches_protocol() {
        let g = Gap {
            after: 4,
            next_id: 9,
        };
        let v: serde_json::Value = serde_json::from_str(&g.json()).unwrap();
        assert_eq!(v, serde_json::json!({"gap":true,"after":4,"next_id":9}));
    }
}
