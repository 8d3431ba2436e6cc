//! Reading one request head: which requests the lean path serves, and the
//! `http::Request` parts built from the bytes.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use bytes::Bytes;

/// Most header lines in a request the lean path serves; more goes to hyper.
const MAX_HEADERS: usize = 48;
/// Largest request body the lean path reads into memory; larger goes to hyper, which
/// streams it to the handler (and its limit).
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request head the lean path serves.
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// Bytes of the head, request line to the blank line.
    pub len: usize,
    /// `Content-Length`, 0 when absent.
    pub body_len: usize,
    /// The client asked for the connection to close after this answer.
    pub close: bool,
}

impl Head {
    pub fn into_request(self, body: Bytes) -> Request<Body> {
        let body = if body.is_empty() {
            Body::empty()
        } else {
            Body::from(body)
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request
    }
}

/// A head the lean path does not serve.
#[derive(Debug, PartialEq, Eq)]
pub enum NotLean {
    /// Anything but a plain HTTP/1.1 GET or POST with at most [`MAX_BODY`] bytes of
    /// `Content-Length` body: upgrades, chunked or expected bodies, other methods and
    /// versions, more header lines. hyper serves these, with its full rules.
    Other,
    /// Not a request any HTTP/1.1 server could read (hyper, with the same parser,
    /// would refuse it too, with an empty 400): answered here with a JSON 400.
    Malformed(&'static str),
}

/// The head at the start of `bytes`; `None` while it is not all there yet.
pub fn parse(bytes: &[u8]) -> Result<Option<Head>, NotLean> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => build(&request, len).map(Some),
        Ok(httparse::Status::Partial) => Ok(None),
        // More lines than the lean path keeps: hyper takes more.
        Err(httparse::Error::TooManyHeaders) => Err(NotLean::Other),
        Err(_) => Err(NotLean::Malformed("malformed request head")),
    }
}

fn build(request: &httparse::Request<'_, '_>, len: usize) -> Result<Head, NotLean> {
    use NotLean::{Malformed, Other};
    if request.version != Some(1) {
        return Err(Other);
    }
    let method = match request.method.ok_or(Other)? {
        "GET" => Method::GET,
        "POST" => Method::POST,
        _ => return Err(Other),
    };
    let path = request.path.ok_or(Other)?;
    if !path.starts_with('/') {
        return Err(Other);
    }
    let uri = Uri::try_from(path).map_err(|_| Other)?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    let mut body_len = None;
    let mut close = false;
    // A head for hyper is still read to its end: a malformed one gets the lean path's
    // JSON 400 whatever the order of its lines (two Content-Lengths, the first over
    // MAX_BODY, were hyper's bare 400).
    let mut for_hyper = false;
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| Other)?;
        let value = HeaderValue::from_bytes(line.value).map_err(|_| Other)?;
        if name == axum::http::header::TRANSFER_ENCODING
            || name == axum::http::header::EXPECT
            || name == axum::http::header::UPGRADE
        {
            for_hyper = true;
        }
        if name == axum::http::header::CONTENT_LENGTH {
            // Digits only, as HTTP defines it (Rust's parser would also take "+5"):
            // the lean path and hyper must agree on where every request ends.
            let digits = value.as_bytes();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(Malformed("Content-Length is not a number"));
            }
            let n: usize = value
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(Malformed("Content-Length is not a number"))?;
            if body_len.is_some_and(|m| m != n) {
                return Err(Malformed("two different Content-Lengths"));
            }
            for_hyper |= n > MAX_BODY;
            body_len = Some(n);
        }
        if name == axum::http::header::CONNECTION {
            for token in value.to_str().map_err(|_| Other)?.split(',') {
                let token = token.trim();
                for_hyper |= token.eq_ignore_ascii_case("upgrade");
                close |= token.eq_ignore_ascii_case("close");
            }
        }
        headers.append(name, value);
    }
    if for_hyper {
        return Err(Other);
    }
    Ok(Head {
        method,
        uri,
        headers,
        len,
        body_len: body_len.unwrap_or(0),
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse(text.as_bytes()) {
            Ok(Some(head)) => head,
            Ok(None) => panic!("partial: {text:?}"),
            Err(e) => panic!("{e:?}: {text:?}"),
        }
    }

    fn is_other(text: &str) -> bool {
        parse(text.as_bytes()).err() == Some(NotLean::Other)
    }

    fn is_malformed(text: &str) -> bool {
        matches!(parse(text.as_bytes()), Err(NotLean::Malformed(_)))
    }

    #[test]
    fn a_plain_get_and_post_are_served() {
        let get =
            head("GET /rooms/a/events?after=3 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n");
        assert_eq!(get.method, Method::GET);
        assert_eq!(get.uri.path(), "/rooms/a/events");
        assert_eq!(get.uri.query(), Some("after=3"));
        assert_eq!(get.headers["last-event-id"], "7");
        assert_eq!(get.body_len, 0);
        assert!(!get.close);

        let text =
            "POST /rooms/a/messages HTTP/1.1\r\ncontent-length: 12\r\nConnection: close\r\n\r\n";
        let post = head(text);
        assert_eq!(post.method, Method::POST);
        assert_eq!(post.body_len, 12);
        assert_eq!(post.len, text.len());
        assert!(post.close);
    }

    #[test]
    fn an_unfinished_head_asks_for_more() {
        assert!(matches!(
            parse(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        ));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        assert!(is_other(
            "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(is_other(
            "POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(is_other(
            "POST /m HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(is_other(
            "POST /m HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"
        ));
        assert!(is_other("HEAD / HTTP/1.1\r\n\r\n"));
        assert!(is_other("DELETE /rooms/a/messages HTTP/1.1\r\n\r\n"));
        assert!(is_other("GET / HTTP/1.0\r\n\r\n"));
        assert!(is_other("GET http://x/ HTTP/1.1\r\n\r\n"));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: y\r\n"))
            .collect();
        assert!(is_other(&format!("GET / HTTP/1.1\r\n{many}\r\n")));
    }

    #[test]
    fn a_head_no_server_could_read_is_malformed() {
        for text in [
            "POST /m HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST /m HTTP/1.1\r\nContent-Length: 70000\r\nContent-Length: 24\r\n\r\n",
            "POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
            "POST /m HTTP/1.1\r\nContent-Length: five\r\n\r\n",
            "POST /m HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST /m HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            "GARBAGE\r\n\r\n",
            "GET / HTTP/9.9\r\n\r\n",
        ] {
            assert!(is_malformed(text), "{text:?}");
        }
    }
}
