//! What the receivers' tests share: a subscription and a run of a receiver whose
//! socket is read by a worker's pump.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Received, Receiver, Sub};
use crate::error::ClientError;
use crate::h1::Conn;
use crate::pump::{Fed, Feed, Pump};

/// A subscription to room `r`, its socket handed to `pump` if there is one.
pub fn sub(pump: Option<(Rc<Pump>, Feed)>) -> Sub<'static> {
    Sub {
        room: "r",
        client: "c",
        poll_interval: std::time::Duration::from_secs(1),
        long_poll_timeout_ms: 0,
        phase: 0.0,
        pump,
    }
}

/// What [`pumped_run`] saw.
pub struct PumpedRun {
    /// The messages, `"<text> <wire bytes>"`, read in the task or by the pump.
    pub got: Vec<String>,
    /// How it ended: `Ok` once the user was owed nothing more.
    pub end: Result<(), ClientError>,
    /// How many times `next` answered `Nothing` before that.
    pub nothings: usize,
    /// Messages `next` handed over itself, read in the task before the hand-over.
    pub in_task: usize,
    pub handed_over: bool,
}

/// Subscribes with `R` to the server at `addr` and reads with a pump (on a
/// `LocalSet` of its own, as a worker's) until the stream ends or the user is owed
/// nothing more (a message `owed_after` makes the feed answer that the user has all
/// it is owed). `handed_over`: whether the receiver gave its socket to the pump.
pub async fn pumped_run<R: Receiver>(
    addr: std::net::SocketAddr,
    owed_after: &'static str,
    handed_over: fn(&R) -> bool,
) -> PumpedRun {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(read_pumped(addr, owed_after, handed_over))
        .await
}

async fn read_pumped<R: Receiver>(
    addr: std::net::SocketAddr,
    owed_after: &'static str,
    handed_over: fn(&R) -> bool,
) -> PumpedRun {
    let target = crate::target::Target::parse(&addr.to_string()).unwrap();
    let conn = Conn::open(&target, None, Default::default()).await.unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let see = {
        let got = got.clone();
        move |json: &[u8], wire: usize| {
            let text = String::from_utf8(json.to_vec()).unwrap();
            let owed_all = text == owed_after;
            got.borrow_mut().push(format!("{text} {wire}"));
            owed_all
        }
    };
    let feed: Feed = {
        let see = see.clone();
        Rc::new(move |r| Fed {
            owed_all: match r {
                Received::Message { json, wire } => see(json, wire),
                _ => false,
            },
            cursor: 0,
        })
    };
    let sub = sub(Some((Pump::start().unwrap(), feed)));
    let mut receiver = R::open(conn, &sub, 0).await.unwrap();
    let (mut nothings, mut in_task) = (0, 0);
    let next = async {
        loop {
            match receiver.next(&sub, 0).await {
                Ok(Received::Nothing) if got.borrow().iter().any(|m| m.starts_with(owed_after)) => {
                    return Ok(());
                }
                Ok(Received::Nothing) => nothings += 1,
                Ok(Received::Message { json, wire }) => {
                    in_task += 1;
                    see(json, wire);
                }
                Ok(Received::Page(_)) => unreachable!(),
                Err(e) => return Err(e),
            }
        }
    };
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), next)
        .await
        .expect("the pump reported the stream's end or the user's");
    let got = got.borrow().clone();
    PumpedRun {
        got,
        end,
        nothings,
        in_task,
        handed_over: handed_over(&receiver),
    }
}

/// Accepts one connection on `listener` and reads its request head.
pub async fn accept_request(listener: tokio::net::TcpListener) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncReadExt;

    let (mut s, _) = listener.accept().await.unwrap();
    let mut req = Vec::new();
    while !req.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        req.push(b[0]);
    }
    (s, String::from_utf8(req).unwrap())
}
