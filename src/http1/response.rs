//! Writing an answer: the status line and headers, and the body framed by
//! `Content-Length` when its size is known or chunked when it is a stream.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::response::Parts;
use axum::http::{StatusCode, header};

/// How the body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    pub fn new(status: StatusCode, exact_len: Option<u64>) -> Framing {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::None
        } else {
            exact_len.map_or(Framing::Chunked, Framing::Length)
        }
    }
}

/// Appends the status line and headers. The handler's own framing headers are
/// replaced by the ones that match how the body is written.
pub fn encode_head(out: &mut Vec<u8>, parts: &Parts, framing: Framing, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one piece of the body as `framing` wants it.
pub fn encode_data(out: &mut Vec<u8>, framing: Framing, data: &[u8]) {
    match framing {
        Framing::None => {}
        Framing::Length(_) => out.extend_from_slice(data),
        Framing::Chunked if data.is_empty() => {}
        Framing::Chunked => {
            // One allocation for the size line, the data and the CRLF: a stream's
            // buffer starts empty for every chunk.
            out.reserve(data.len() + 20);
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends what ends the body.
pub fn encode_end(out: &mut Vec<u8>, framing: Framing) {
    if framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

thread_local! {
    /// The `Date` value, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = second;
            }
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Response};

    fn parts(status: StatusCode) -> Parts {
        let mut response = Response::new(());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        response.into_parts().0
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_known_length_body_gets_content_length_and_a_date() {
        let mut out = Vec::new();
        let framing = Framing::new(StatusCode::OK, Some(5));
        encode_head(&mut out, &parts(StatusCode::OK), framing, false);
        encode_data(&mut out, framing, b"hello");
        let text = text(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-type: text/plain\r\n"));
        assert!(text.contains("content-length: 5\r\n"));
        assert!(!text.contains("999"));
        let date = text
            .split("date: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert!(text.ends_with("\r\n\r\nhello"));
        assert!(!text.contains("connection"));
    }

    #[test]
    fn a_stream_is_chunked_and_ends_with_a_zero_chunk() {
        let mut out = Vec::new();
        let framing = Framing::new(StatusCode::OK, None);
        encode_head(&mut out, &parts(StatusCode::OK), framing, true);
        encode_data(&mut out, framing, b"retry: 1000\n\n");
        encode_data(&mut out, framing, b"");
        encode_end(&mut out, framing);
        let text = text(&out);
        assert!(text.contains("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        assert!(
            text.ends_with("\r\n\r\nd\r\nretry: 1000\n\n\r\n0\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn no_content_has_no_body_framing() {
        let mut out = Vec::new();
        let framing = Framing::new(StatusCode::NO_CONTENT, Some(0));
        assert_eq!(framing, Framing::None);
        encode_head(&mut out, &parts(StatusCode::NO_CONTENT), framing, false);
        let text = text(&out);
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!text.contains("content-length"));
        assert!(!text.contains("transfer-encoding"));
    }
}
