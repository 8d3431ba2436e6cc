//! Long polling: `GET /rooms/{room}/long-poll?client=C&after=<cursor>&timeout_ms=T`,
//! again as soon as each answer has arrived. Passing `after` on every poll makes an
//! answer lost in transit cost nothing.
//!
//! The first poll is written by the user's task; its socket is then handed to the
//! worker's pump (`crate::pump`), which reads each answer, accounts it and writes the
//! next poll, waking the task only when the polls end (an error, a refusal) or the
//! user has every id it is owed. Without a pump the task polls itself.

use std::rc::Rc;

use super::{Received, Receiver, Sub};
use crate::error::ClientError;
use crate::h1::Conn;
use crate::pump::{Decoder, Feed, Polls, Pump, Pumped};

pub struct LongPoll {
    /// The user's connection, until its socket is handed to the worker's pump.
    http: Option<Conn>,
    path: String,
    /// The pump to hand it to, and how the user's answers are accounted there.
    pump: Option<(Rc<Pump>, Feed)>,
    pumped: Option<Pumped>,
}

impl Receiver for LongPoll {
    const NAME: &'static str = "long-poll";
    const STREAM: bool = false;
    const PUMPED: bool = true;

    async fn open(http: Conn, sub: &Sub<'_>, _after: u64) -> Result<Self, ClientError> {
        let path = format!(
            "/rooms/{}/long-poll?client={}&limit=1000&timeout_ms={}&after=",
            sub.room, sub.client, sub.long_poll_timeout_ms
        );
        Ok(LongPoll {
            http: Some(http),
            path,
            pump: sub.pump.clone(),
            pumped: None,
        })
    }

    async fn next(&mut self, _sub: &Sub<'_>, cursor: u64) -> Result<Received<'_>, ClientError> {
        if let Some(pumped) = self.pumped.as_mut() {
            return pumped.next().await;
        }
        let path = format!("{}{cursor}", self.path);
        let http = self.http.as_mut().ok_or(ClientError::Closed)?;
        http.send_get(&path).await?;
        if self.hand_over()? {
            return self.pumped.as_mut().expect("handed over").next().await;
        }
        let http = self.http.as_mut().expect("kept by the task");
        Ok(Received::Page(http.read_body(&path).await?))
    }
}

impl LongPoll {
    /// Hands the socket, its first poll written, to the pump; whether it was handed
    /// over. A connection holding bytes no poll asked for stays with the task.
    fn hand_over(&mut self) -> Result<bool, ClientError> {
        let (Some((pump, feed)), Some(conn)) = (self.pump.as_ref(), self.http.as_ref()) else {
            return Ok(false);
        };
        if !conn.unread().is_empty() {
            return Ok(false);
        }
        let fd = conn.raw_fd();
        let polls = Polls::new(&self.path, conn.host());
        let parts = || {
            let conn = self.http.take().expect("checked above");
            Ok((conn.into_parts()?, Decoder::Polls(polls)))
        };
        match pump.hand_over(fd, parts, feed.clone()) {
            Ok(Some(pumped)) => self.pumped = Some(pumped),
            // The socket stays with the user, polled by its task.
            Ok(None) => self.pump = None,
            Err(e) => return Err(ClientError::Io(e)),
        }
        Ok(self.pumped.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::LongPoll;
    use crate::error::ClientError;
    use crate::h1::Conn;
    use crate::pump::{Fed, Feed, Pump};
    use crate::transport::testing::{accept_request, sub};
    use crate::transport::{Received, Receiver};

    /// Reads one request head from `s`.
    async fn request(s: &mut tokio::net::TcpStream) -> String {
        let mut req = Vec::new();
        while !req.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            req.push(b[0]);
        }
        String::from_utf8(req).unwrap()
    }

    /// A server answering the polls on one connection with `answers` (whole answers,
    /// each written in two pieces), recording each request line; after the last it
    /// records whether another poll came within 200 ms.
    async fn serve(answers: Vec<Vec<u8>>) -> (std::net::SocketAddr, Rc<RefCell<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Rc::new(RefCell::new(Vec::new()));
        let seen = lines.clone();
        tokio::task::spawn_local(async move {
            let (mut s, first) = accept_request(listener).await;
            let mut req = first;
            for (i, a) in answers.iter().enumerate() {
                seen.borrow_mut().push(req.lines().next().unwrap().to_owned());
                let (one, two) = a.split_at(a.len() / 2);
                s.write_all(one).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(two).await.unwrap();
                if i + 1 < answers.len() {
                    req = request(&mut s).await;
                }
            }
            // Any byte within 200 ms is another poll; the end of the connection is not.
            let mut b = [0u8; 1];
            let more = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await;
            let another = matches!(more, Ok(Ok(n)) if n > 0);
            seen.borrow_mut().push(format!("another poll: {another}"));
        });
        (addr, lines)
    }

    fn page(last_id: u64) -> Vec<u8> {
        let body = format!("{{\"messages\":[],\"last_id\":{last_id}}}");
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    /// Polls with a pump whose accounting moves the cursor to each page's `last_id`
    /// and is owed nothing more after `pages` pages; the pages seen and how it ended.
    async fn poll(addr: std::net::SocketAddr, pages: usize) -> (Vec<String>, Result<(), ClientError>, bool) {
        let got = Rc::new(RefCell::new(Vec::new()));
        let feed: Feed = {
            let got = got.clone();
            Rc::new(move |r| {
                let Received::Page(body) = r else { unreachable!("a poll's answer") };
                let last = crate::wire::last_id(body).unwrap();
                got.borrow_mut().push(String::from_utf8(body.to_vec()).unwrap());
                Fed { owed_all: got.borrow().len() >= pages, cursor: last }
            })
        };
        let target = crate::target::Target::parse(&addr.to_string()).unwrap();
        let conn = Conn::open(&target, None, Default::default()).await.unwrap();
        let sub = sub(Some((Pump::start().unwrap(), feed)));
        let mut rx = LongPoll::open(conn, &sub, 0).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rx.next(&sub, 3).await {
                    Ok(Received::Nothing) if got.borrow().len() >= pages => return Ok(()),
                    Ok(Received::Nothing) => {}
                    Ok(_) => unreachable!("answers are accounted by the pump"),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("the pump said the polls ended or the user was owed nothing");
        let handed_over = rx.pumped.is_some();
        let got = got.borrow().clone();
        (got, end, handed_over)
    }

    /// The task writes the first poll and hands the socket over; the pump reads each
    /// answer whole (in two pieces), accounts it, and asks for the messages after the
    /// cursor that leaves, until the user is owed nothing more: then it asks no more.
    #[tokio::test]
    async fn the_pump_polls_again_from_the_cursor_until_the_user_is_owed_nothing() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (addr, lines) = serve(vec![page(5), page(9), page(12)]).await;
                let (got, end, handed_over) = poll(addr, 3).await;
                assert!(handed_over && end.is_ok(), "{end:?}");
                assert_eq!(got.len(), 3, "{got:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
                let lines = lines.borrow();
                let after: Vec<&str> = lines
                    .iter()
                    .filter_map(|l| l.split("after=").nth(1)?.split(' ').next())
                    .collect();
                assert_eq!(after, ["3", "5", "9"], "{lines:?}");
                assert_eq!(lines.last().unwrap(), "another poll: false");
            })
            .await;
    }

    /// An answer that is not `200` ends the polls with its status, after the pages
    /// before it were accounted.
    #[tokio::test]
    async fn a_refusal_ends_the_pumped_polls_with_its_status() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let refusal = b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}".to_vec();
                let (addr, _) = serve(vec![page(5), refusal]).await;
                let (got, end, handed_over) = poll(addr, 10).await;
                assert!(handed_over);
                assert_eq!(got.len(), 1, "{got:?}");
                assert!(
                    matches!(&end, Err(ClientError::Status { status: 409, path }) if path.ends_with("/long-poll")),
                    "{end:?}"
                );
            })
            .await;
    }
}
