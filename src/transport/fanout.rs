//! A room's fan-out for one streaming transport (WebSocket, SSE): one task per room
//! and transport that writes each new message to every live session's socket itself.
//!
//! A task per socket, woken for every message, cost about a fifth of the server's CPU
//! per delivery at 10,000 WebSockets (the wake-up, the broadcast receive, the
//! session's `select!`, tungstenite's framing of the same text once per socket). Here
//! the frame is made once per message and written by one loop; a session's own task
//! runs only for what the loop hands back to it (see [`super::outbox`]). How a
//! message is framed is the transport's [`Encoding`].

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::outbox::{Offered, Outbox};
use crate::metrics::TransportMetrics;
use crate::room::{Batch, Published, Room, Subscription};
use crate::state::AppState;

/// Messages taken from the room per turn.
const BATCH: usize = 256;
/// Sockets written between two yields to the runtime, so that other connections are
/// served during a long fan-out.
const TURN: usize = 256;
/// Most JSON bytes of messages written to a socket at once (one message at least): a
/// reader that keeps up takes that in whole, and one that has not taken the last two
/// in is handed back to its own task (the outbox holds at most 64 KiB).
const RUN_BYTES: usize = 32 * 1024;

/// How a transport frames one message for the wire, the same bytes for every socket.
pub trait Encoding: Send + Sync + 'static {
    /// Appends `message`'s frame to `out`; the bytes it carries, as the transport's
    /// metrics count them.
    fn push(out: &mut Vec<u8>, message: &Published) -> usize;

    /// At least the length of `message`'s frame.
    fn len(message: &Published) -> usize;
}

/// A WebSocket text frame of the message's JSON.
pub struct WsText;

impl Encoding for WsText {
    fn push(out: &mut Vec<u8>, message: &Published) -> usize {
        push_text_frame(out, &message.json);
        message.json.len()
    }

    fn len(message: &Published) -> usize {
        message.json.len() + 10
    }
}

/// The live sessions of one room, and whether its task runs.
pub struct FanOut<E> {
    inner: Mutex<Inner>,
    /// Told when the last session leaves, so that an idle task ends.
    emptied: Notify,
    encoding: PhantomData<fn() -> E>,
}

impl<E> Default for FanOut<E> {
    fn default() -> Self {
        FanOut {
            inner: Mutex::default(),
            emptied: Notify::new(),
            encoding: PhantomData,
        }
    }
}

#[derive(Default)]
struct Inner {
    outboxes: Vec<Arc<Outbox>>,
    running: bool,
    /// Joins and leaves so far: a pass knows whether its copy of `outboxes` is
    /// still the room's sessions.
    changes: u64,
}

impl<E: Encoding> FanOut<E> {
    /// Adds a session's outbox; starts the room's task if it is not running.
    pub fn join(
        self: &Arc<Self>,
        room: &Arc<Room>,
        outbox: Arc<Outbox>,
        state: &AppState,
        metrics: &TransportMetrics,
    ) {
        let mut inner = self.inner.lock().unwrap();
        inner.outboxes.push(outbox);
        inner.changes += 1;
        if !inner.running {
            inner.running = true;
            let subscription = room.subscribe(None);
            let run = run(self.clone(), subscription, state.clone(), metrics.clone());
            state.sessions.spawn(run);
        }
    }

    /// [`FanOut::join`], given up when the returned place is dropped, however the
    /// session ends.
    pub fn enter(
        self: &Arc<Self>,
        room: &Arc<Room>,
        outbox: &Arc<Outbox>,
        state: &AppState,
        metrics: &TransportMetrics,
    ) -> Joined<E> {
        self.join(room, outbox.clone(), state, metrics);
        Joined {
            fanout: self.clone(),
            outbox: outbox.clone(),
        }
    }

    /// Removes a session's outbox (closed by then).
    pub fn leave(&self, outbox: &Arc<Outbox>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(i) = inner.outboxes.iter().position(|o| Arc::ptr_eq(o, outbox)) {
            inner.outboxes.swap_remove(i);
            inner.changes += 1;
        }
        if inner.outboxes.is_empty() {
            self.emptied.notify_one();
        }
    }
}

/// A session's place in its room's fan-out, given up when dropped.
pub struct Joined<E: Encoding> {
    fanout: Arc<FanOut<E>>,
    outbox: Arc<Outbox>,
}

impl<E: Encoding> Drop for Joined<E> {
    fn drop(&mut self) {
        self.outbox.close();
        self.fanout.leave(&self.outbox);
    }
}

/// The frames of a run of consecutive messages, as one buffer: a session that has
/// had everything before `first` is written the whole of it in one write, one that
/// has had some of them the rest. Under load the fan-out falls behind, takes several
/// messages at once, and a socket gets them all in one write rather than one each.
pub struct Frames {
    first: u64,
    made: Instant,
    bytes: Vec<u8>,
    /// Where each message's frame starts in `bytes`, and how many bytes (as the
    /// metrics count them) the messages before it carry, one more entry at the end.
    starts: Vec<(usize, usize)>,
}

impl Frames {
    /// WebSocket text frames of `messages`: at least one, consecutive ids, in order.
    pub fn new(messages: &[Arc<Published>]) -> Frames {
        Frames::of::<WsText>(messages)
    }

    /// `messages` framed by `E`: at least one, consecutive ids, in order.
    pub fn of<E: Encoding>(messages: &[Arc<Published>]) -> Frames {
        assert!(!messages.is_empty(), "frames of no message");
        let size: usize = messages.iter().map(|m| E::len(m)).sum();
        let mut frames = Frames {
            first: messages.first().map_or(0, |m| m.id),
            made: Instant::now(),
            bytes: Vec::with_capacity(size),
            starts: Vec::with_capacity(messages.len() + 1),
        };
        let mut carried = 0;
        for message in messages {
            frames.starts.push((frames.bytes.len(), carried));
            carried += E::push(&mut frames.bytes, message);
        }
        frames.starts.push((frames.bytes.len(), carried));
        frames
    }

    /// The id of the last message.
    pub fn last(&self) -> u64 {
        self.first + self.starts.len() as u64 - 2
    }

    pub fn first(&self) -> u64 {
        self.first
    }

    /// When these frames were made: about when they are written.
    pub fn made(&self) -> Instant {
        self.made
    }

    /// The frames of the messages from id `next` on: the bytes, how many messages and
    /// how many bytes they carry.
    pub fn from(&self, next: u64) -> (&[u8], usize, usize) {
        let i = (next - self.first) as usize;
        let (start, json_before) = self.starts[i];
        let (_, json_all) = self.starts[self.starts.len() - 1];
        (
            &self.bytes[start..],
            self.starts.len() - 1 - i,
            json_all - json_before,
        )
    }
}

/// `messages` cut into runs of at most `bytes` of JSON each (or one message).
fn runs_of_at_most(
    messages: &[Arc<Published>],
    bytes: usize,
) -> impl Iterator<Item = &[Arc<Published>]> {
    let mut rest = messages;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut total = rest[0].json.len();
        let mut n = 1;
        while n < rest.len() && total + rest[n].json.len() <= bytes {
            total += rest[n].json.len();
            n += 1;
        }
        let (run, after) = rest.split_at(n);
        rest = after;
        Some(run)
    })
}

/// Appends a text frame as a server sends it: final, unmasked.
fn push_text_frame(frame: &mut Vec<u8>, payload: &[u8]) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    header
        .format(payload.len() as u64, frame)
        .expect("a Vec takes every byte");
    frame.extend_from_slice(payload);
}

async fn run<E: Encoding>(
    fanout: Arc<FanOut<E>>,
    mut subscription: Subscription,
    state: AppState,
    metrics: TransportMetrics,
) {
    let mut outboxes = Vec::new();
    // Messages taken from the room during a pass that could not join it: the next
    // pass's, before anything newer.
    let mut taken: Option<Batch> = None;
    loop {
        let batch = match taken.take() {
            Some(batch) => batch,
            None => tokio::select! {
                batch = subscription.next(BATCH) => batch,
                () = fanout.emptied.notified() => Default::default(),
                () = state.shutdown.cancelled() => return,
            },
        };
        let changes = {
            let mut inner = fanout.inner.lock().unwrap();
            if inner.outboxes.is_empty() {
                // Let go of the room: an empty room nobody holds can be reclaimed.
                inner.running = false;
                return;
            }
            // A copy: sessions come and go during a long fan-out.
            outboxes.clone_from(&inner.outboxes);
            inner.changes
        };
        // A gap is not written here: the sessions, finding a message missing before
        // the next one, are handed back and tell their readers themselves.
        let mut runs = runs_of_at_most(&batch.messages, RUN_BYTES).peekable();
        let mut pass = Pass {
            fanout: &fanout,
            outboxes: &outboxes,
            changes,
            metrics: &metrics,
            turn: 0,
        };
        while let Some(run) = runs.next() {
            // Only the last run can take in what comes during it: ids follow on.
            let last = runs.peek().is_none();
            pass.write(run, last.then_some((&mut subscription, &mut taken)))
                .await;
        }
        outboxes.clear();
    }
}

/// One round of the room's fan-out over its sessions' outboxes.
struct Pass<'a, E> {
    fanout: &'a FanOut<E>,
    /// The room's sessions when the pass began: [`Inner::outboxes`] then.
    outboxes: &'a [Arc<Outbox>],
    /// [`Inner::changes`] then.
    changes: u64,
    metrics: &'a TransportMetrics,
    /// Outboxes offered since the runtime was last yielded to.
    turn: usize,
}

impl<E: Encoding> Pass<'_, E> {
    /// Offers `run` (consecutive messages) to every outbox. Messages published while
    /// the pass yields join it when `more` is given and they follow on and fit: a
    /// socket not yet written gets them in the same write as the rest, and the pass
    /// goes round again from there, the sockets written already getting only the new
    /// ones. At one message per pass each socket would get a write per message; a
    /// pass over ten thousand sockets lasts long enough for the next to arrive. Only
    /// while the room's sessions are those the pass began with: a session that joined
    /// during it is not among those it writes, and a message taken now would pass it
    /// by for good (it went live having had every message before this one); one that
    /// left keeps its socket open while the pass holds its outbox, and a pass that
    /// goes on taking messages in would hold it for as long as they come. What does
    /// not join is left in `more`'s `taken`, for the next pass.
    async fn write(
        &mut self,
        run: &[Arc<Published>],
        mut more: Option<(&mut Subscription, &mut Option<Batch>)>,
    ) {
        let n = self.outboxes.len();
        // Copied only if messages join it.
        let mut run = std::borrow::Cow::Borrowed(run);
        let mut frames = Frames::of::<E>(&run);
        let (mut messages, mut bytes) = (0, 0);
        // The next outbox, and how many are left to offer `frames` to.
        let (mut at, mut left) = (0, n);
        while left > 0 {
            if let Offered::Taken {
                messages: m,
                carried,
            } = self.outboxes[at].offer(&frames)
            {
                messages += m;
                bytes += carried;
            }
            at = if at + 1 == n { 0 } else { at + 1 };
            left -= 1;
            self.turn += 1;
            if self.turn % TURN != 0 {
                continue;
            }
            tokio::task::yield_now().await;
            if left == 0 {
                break;
            }
            let Some((subscription, taken)) = more.as_mut() else {
                continue;
            };
            let next = subscription.try_next(BATCH);
            if next.is_empty() {
                continue;
            }
            let unchanged = self.fanout.inner.lock().unwrap().changes == self.changes;
            if unchanged && joins(&run, &next) {
                // Counted as they go: a pass that keeps taking messages in can last.
                self.metrics.delivered(messages, bytes);
                (messages, bytes) = (0, 0);
                run.to_mut().extend(next.messages);
                frames = Frames::of::<E>(&run);
                left = n;
            } else {
                **taken = Some(next);
                more = None;
            }
        }
        self.metrics.delivered(messages, bytes);
    }
}

/// Whether `next` can join a pass over `run`: no gap, the ids following on, and the
/// whole within a run's bytes.
fn joins(run: &[Arc<Published>], next: &Batch) -> bool {
    let (Some(last), Some(first)) = (run.last(), next.messages.first()) else {
        return false;
    };
    let size = |ms: &[Arc<Published>]| ms.iter().map(|m| m.json.len()).sum::<usize>();
    next.gap.is_none() && first.id == last.id + 1 && size(run) + size(&next.messages) <= RUN_BYTES
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Frames;
    use crate::room::{Draft, Published};

    fn message(id: u64, text: &str) -> Arc<Published> {
        let draft = Draft {
            user: "u".into(),
            text: text.into(),
            client_ts: None,
        };
        Arc::new(Published::new(id, "r", &draft, 1))
    }

    #[test]
    fn frames_of_a_run_of_messages_and_their_tails() {
        let messages = [
            message(7, "a"),
            message(8, &"x".repeat(300)),
            message(9, "b"),
        ];
        let frames = Frames::new(&messages);
        assert_eq!((frames.first(), frames.last()), (7, 9));
        let json: Vec<usize> = messages.iter().map(|m| m.json.len()).collect();
        let (all, count, bytes) = frames.from(7);
        assert_eq!((count, bytes), (3, json.iter().sum()));
        // Short, 16-bit and short lengths, each header then its JSON.
        assert_eq!(all[..2], [0x81, json[0] as u8]);
        assert_eq!(&all[2..2 + json[0]], &messages[0].json[..]);
        let second = &all[2 + json[0]..];
        assert_eq!(
            second[..4],
            [0x81, 126, (json[1] >> 8) as u8, json[1] as u8]
        );
        let (tail, count, bytes) = frames.from(9);
        assert_eq!((count, bytes), (1, json[2]));
        assert_eq!(tail[..2], [0x81, json[2] as u8]);
        assert_eq!(&tail[2..], &messages[2].json[..]);
    }

    #[test]
    fn messages_are_cut_into_runs_of_at_most_so_many_bytes() {
        let messages: Vec<_> = (1..=5).map(|id| message(id, &"z".repeat(100))).collect();
        let one = messages[0].json.len();
        let runs: Vec<Vec<u64>> = super::runs_of_at_most(&messages, 2 * one)
            .map(|run| run.iter().map(|m| m.id).collect())
            .collect();
        assert_eq!(runs, [vec![1, 2], vec![3, 4], vec![5]]);
        // A message larger than a run is a run of its own.
        assert_eq!(super::runs_of_at_most(&messages, 10).count(), 5);
        assert_eq!(super::runs_of_at_most(&[], 10).count(), 0);
    }

    #[test]
    fn only_the_next_ids_without_a_gap_and_within_a_run_join_a_pass() {
        use super::{RUN_BYTES, joins};
        use crate::room::{Batch, Gap};

        let run = [message(1, "a"), message(2, "b")];
        let batch = |messages: Vec<Arc<Published>>, gap: Option<Gap>| Batch { gap, messages };
        assert!(joins(
            &run,
            &batch(vec![message(3, "c"), message(4, "d")], None)
        ));
        assert!(
            !joins(&run, &batch(vec![message(4, "d")], None)),
            "an id missing"
        );
        let gap = Gap {
            after: 2,
            next_id: 3,
        };
        assert!(
            !joins(&run, &batch(vec![message(3, "c")], Some(gap))),
            "a gap"
        );
        let big = "x".repeat(RUN_BYTES);
        assert!(
            !joins(&run, &batch(vec![message(3, &big)], None)),
            "too many bytes"
        );
        assert!(!joins(&run, &batch(vec![], None)), "nothing");
    }

    /// Data segments the peer has sent this socket: one per write of a few hundred
    /// bytes on loopback.
    fn data_segments_in(stream: &tokio::net::TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        let (info, _) = crate::transport::outbox::tcp_info(stream.as_raw_fd()).expect("TCP_INFO");
        info.tcpi_data_segs_in
    }

    /// A room with its WebSocket fan-out and a listener for sessions' sockets.
    struct Bench {
        state: crate::state::AppState,
        room: Arc<crate::room::Room>,
        fanout: Arc<super::FanOut<super::WsText>>,
        listener: tokio::net::TcpListener,
    }

    impl Bench {
        async fn new() -> Bench {
            let config = <crate::config::Config as clap::Parser>::parse_from(["lab"]);
            let state = crate::state::Shared::new(config, Default::default());
            let room = state.rooms.get_or_create("r").unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            Bench {
                state,
                room,
                fanout: Default::default(),
                listener,
            }
        }

        /// A live session that has had every message so far: its client's socket, and
        /// its place in the fan-out (dropped, the session leaves).
        async fn join(&self) -> (tokio::net::TcpStream, super::Joined<super::WsText>) {
            use crate::transport::outbox::Outbox;
            let addr = self.listener.local_addr().unwrap();
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = self.listener.accept().await.unwrap();
            let outbox = Outbox::new(server, 1024);
            outbox.go_live(|| Ok::<u64, ()>(self.room.newest()));
            let metrics = self.state.metrics.transport("ws");
            let joined = self.fanout.enter(&self.room, &outbox, &self.state, metrics);
            (client, joined)
        }

        /// `n` sessions joined one after the other: their clients' sockets, in the
        /// fan-out's order, and their places.
        async fn sessions(
            &self,
            n: usize,
        ) -> (
            Vec<tokio::net::TcpStream>,
            Vec<super::Joined<super::WsText>>,
        ) {
            let mut sessions = Vec::new();
            for _ in 0..n {
                sessions.push(self.join().await);
            }
            sessions.into_iter().unzip()
        }

        /// Publishes a message and waits until `first`, the first socket of the pass
        /// that writes it, has it: the pass is under way, yielding before the rest.
        async fn pass_under_way(&self, first: &tokio::net::TcpStream) -> Arc<Published> {
            let one = self.publish("one");
            first.readable().await.unwrap();
            one
        }

        fn publish(&self, text: &str) -> Arc<Published> {
            self.room.publish(&Draft {
                user: "u".into(),
                text: text.into(),
                client_ts: None,
            })
        }
    }

    /// Reads exactly `want` from `client`, within ten seconds.
    async fn expect(client: &mut tokio::net::TcpStream, want: &[u8], what: &str) {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0; want.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_exact(&mut got),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 10 s"))
        .unwrap();
        assert_eq!(got, want, "{what}");
    }

    /// Reads exactly `want` from every one of `clients`.
    async fn expect_all(clients: &mut [tokio::net::TcpStream], want: &[u8]) {
        for (i, client) in clients.iter_mut().enumerate() {
            let what = format!("socket {i}: each message once, in order");
            expect(client, want, &what).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_message_published_during_a_pass_joins_it_for_the_sockets_not_yet_written() {
        let bench = Bench::new().await;
        // Three turns: the pass yields twice before its last socket.
        let (mut clients, _sessions) = bench.sessions(3 * super::TURN).await;
        // The second message is published as soon as the first socket has the first:
        // while the pass that writes it yields.
        let one = bench.pass_under_way(&clients[0]).await;
        let two = bench.publish("two");
        let frames = Frames::new(&[one.clone(), two]);
        let (both, _, _) = frames.from(one.id);
        expect_all(&mut clients, both).await;
        assert_eq!(
            data_segments_in(&clients[0]),
            2,
            "the first socket: two writes"
        );
        assert_eq!(
            data_segments_in(&clients[3 * super::TURN - 1]),
            1,
            "the last socket: both messages in one write"
        );
        bench.state.shutdown.cancel();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_session_that_joins_during_a_pass_gets_what_is_published_after_it() {
        let bench = Bench::new().await;
        let (mut clients, _sessions) = bench.sessions(3 * super::TURN).await;
        // While the pass of the first message yields: a session joins, live with the
        // first message already had (as one that caught up on it itself), and a
        // second message is published. The pass must not take it in, or it would
        // pass the newcomer by: no third message comes to show the newcomer its gap.
        let one = bench.pass_under_way(&clients[0]).await;
        let (mut newcomer, _joined) = bench.join().await;
        let two = bench.publish("two");
        let frames = Frames::new(&[one.clone(), two.clone()]);
        let (second, _, _) = frames.from(two.id);
        expect(
            &mut newcomer,
            second,
            "the newcomer gets the second message",
        )
        .await;
        let (both, _, _) = frames.from(one.id);
        expect(&mut clients[0], both, "the others get both").await;
        bench.state.shutdown.cancel();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pass_takes_nothing_in_once_a_session_has_left() {
        let bench = Bench::new().await;
        let (mut clients, mut sessions) = bench.sessions(3 * super::TURN).await;
        // While the pass of the first message yields: a session leaves and a second
        // message is published. The pass holds the leaver's outbox, and so its socket,
        // until it ends: it must not go on taking messages in.
        let one = bench.pass_under_way(&clients[0]).await;
        drop(sessions.remove(1));
        let left = clients.remove(1);
        let two = bench.publish("two");
        let frames = Frames::new(&[one.clone(), two]);
        let (both, _, _) = frames.from(one.id);
        expect_all(&mut clients, both).await;
        let last = clients.last().unwrap();
        assert_eq!(data_segments_in(last), 2, "the last socket: two writes");
        drop(left);
        bench.state.shutdown.cancel();
    }

    #[test]
    fn a_long_frame_has_a_64_bit_length() {
        let mut frame = Vec::new();
        super::push_text_frame(&mut frame, &vec![b'x'; 70_000]);
        assert_eq!(frame[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(frame.len(), 70_010);
    }
}
