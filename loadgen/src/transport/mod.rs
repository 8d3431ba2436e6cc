//! The receiving side of each transport, behind one trait.
//!
//! A transport module implements [`Receiver`]: how to subscribe on a user's connection
//! and how to wait for what the server sends next. The user loop (`crate::user`) does
//! everything else: the "where is now" query, reconnects, parsing, accounting.
//! Adding a transport is one new file here and one line in the `transports!` list
//! below; a test checks that the list names the server's transports
//! (`lab::transport::NAMES`), in the same order.

use std::rc::Rc;

use futures_util::future::LocalBoxFuture;

use crate::error::ClientError;
use crate::h1::Conn;
use crate::user::{UserPlan, UserRecord};
use crate::worker::WorkerCtx;

/// What a receiver got from the server, borrowed from the receiver until its next
/// call: handing it on costs no copy and no reference count.
pub enum Received<'a> {
    /// A poll answer: `{"messages":[...],"last_id":N}`; one HTTP request.
    Page(&'a [u8]),
    /// One message (or gap / error) JSON object from a stream, and the bytes it
    /// took there with its framing (SSE: the event's lines; WebSocket: its frames).
    Message { json: &'a [u8], wire: usize },
    /// Something that carries no message (an SSE comment, a ping).
    Nothing,
}

/// One user's view of its subscription, for a receiver.
pub struct Sub<'a> {
    pub room: &'a str,
    /// Unique per user and run: the long-poll `client`.
    pub client: &'a str,
    pub poll_interval: std::time::Duration,
    pub long_poll_timeout_ms: u64,
    /// Where in the poll interval this user polls, in `[0, 1)`.
    pub phase: f64,
    /// The worker's pump and the user's accounting, for a receiver that hands its
    /// socket over ([`Receiver::PUMPED`]); `None`: read in the user's task.
    pub pump: Option<(Rc<crate::pump::Pump>, crate::pump::Feed)>,
}

/// The receiving side of one transport. Futures run on a worker's `LocalSet`, so
/// they need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Receiver: Sized + 'static {
    /// The mode's name on the command line (the server's label with `-` for `_`).
    const NAME: &'static str;
    /// Whether the subscription is one request whose answer brings every message (SSE,
    /// WebSocket): [`Receiver::open`] makes that request, and an id below the highest
    /// seen may still come on it. A poll makes a request per answer, each asking only
    /// for ids above the highest it has seen.
    const STREAM: bool;
    /// Whether, once subscribed, its socket is read by the worker's pump
    /// (`crate::pump`), which accounts each message in place: [`Receiver::next`] then
    /// hands over only whole messages that came with the subscription's answer, and
    /// otherwise answers only when the stream ends (`Err`) or the user may have every
    /// id it is owed ([`Received::Nothing`]).
    const PUMPED: bool = false;

    /// Subscribes on `http` to the messages after `after`.
    async fn open(http: Conn, sub: &Sub<'_>, after: u64) -> Result<Self, ClientError>;

    /// Waits for what the server sends next. `cursor` is the `after` a poll passes.
    async fn next(&mut self, sub: &Sub<'_>, cursor: u64) -> Result<Received<'_>, ClientError>;
}

/// A registered transport.
pub struct Transport {
    /// The mode's name on the command line.
    pub name: &'static str,
    /// Runs one user of this transport to its end.
    pub run: fn(Rc<WorkerCtx>, UserPlan) -> LocalBoxFuture<'static, UserRecord>,
}

impl Transport {
    /// The server's label for this transport (`long_poll` for `long-poll`).
    pub fn label(&self) -> String {
        self.name.replace('-', "_")
    }

    /// The index of the transport named `name` (either spelling).
    pub fn index(name: &str) -> Option<usize> {
        TRANSPORTS
            .iter()
            .position(|t| t.name == name || t.label() == name)
    }
}

fn run_user<R: Receiver>(
    ctx: Rc<WorkerCtx>,
    plan: UserPlan,
) -> LocalBoxFuture<'static, UserRecord> {
    Box::pin(crate::user::run::<R>(ctx, plan))
}

const fn entry<R: Receiver>() -> Transport {
    Transport {
        name: R::NAME,
        run: run_user::<R>,
    }
}

macro_rules! transports {
    ($($module:ident :: $receiver:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every transport, in the server's order.
        pub static TRANSPORTS: &[Transport] = &[$(entry::<$module::$receiver>()),*];
    };
}

#[cfg(test)]
pub(crate) mod testing;

transports! {
    poll::Poll,
    long_poll::LongPoll,
    sse::Sse,
    ws::Ws,
}
