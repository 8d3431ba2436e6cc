//! One stream's write side (a WebSocket's or an SSE response's), shared by its
//! session and its room's fan-out.
//!
//! While a session has every message so far, the room's fan-out
//! ([`super::fanout`]) writes each new message's frame to the socket itself, with a
//! non-blocking write, and the session's task is not woken for it. What the kernel
//! does not take at once waits here, in order, for the session to write. Everything
//! the session writes (messages it catches up on, gap notices, keep-alives; for a
//! WebSocket, through tungstenite, pings, pongs and closes) comes here too, whole
//! frames at a time, so the two writers never interleave inside a frame.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};

use super::fanout::Frames;

/// What the kernel says of a socket's TCP connection, and how many bytes of it the
/// kernel filled in (an older kernel fills in fewer fields); `None` if it says nothing.
pub fn tcp_info(fd: std::os::fd::RawFd) -> Option<(libc::tcp_info, usize)> {
    // SAFETY: `tcp_info` is plain data; getsockopt writes at most `len` bytes of it and
    // says how many.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let info_ptr = (&raw mut info).cast::<libc::c_void>();
        let got = libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info_ptr, &mut len);
        (got == 0).then_some((info, len as usize))
    }
}

/// Most bytes held for the kernel. The fan-out hands a session that would go over it
/// back to its own task; a write by the session waits until the outbox is under it.
pub const LIMIT: usize = 64 * 1024;
/// Most bytes [`Outbox::peer_closed`] reads and drops: as much as the lean HTTP/1 path
/// keeps of what a client sends while its answer is pending.
const PEER_BYTES: usize = 16 * 1024;

pub struct Outbox {
    stream: TcpStream,
    state: Mutex<State>,
    /// Messages the fan-out writes between two wake-ups of the session, so that the
    /// session's queue, not read while the fan-out serves it, is read up to the
    /// cursor before the ring passes it: half the ring.
    wake_every: u64,
}

#[derive(Default)]
struct State {
    /// Whole frames accepted and not yet taken by the kernel, in order.
    pending: BytesMut,
    /// The fan-out writes to this socket: the session has had every message up to
    /// `cursor`, and nothing else is due to it.
    live: bool,
    cursor: u64,
    /// Set when the fan-out stops writing to a live session (it fell behind, or a
    /// write failed): the session goes on from `cursor` on its own.
    handed_back: bool,
    /// Set when the fan-out leaves bytes pending (the session writes them), and every
    /// `wake_every` messages it takes (the session reads its queue up to `cursor`).
    /// What the session's own writes leave pending is written by its next write or
    /// flush, as tungstenite's own buffer was: a peer that pings without reading is
    /// still read.
    wanted: bool,
    /// Messages taken since `wanted` was last set.
    taken_since: u64,
    /// The session's task, woken when the fan-out leaves it pending bytes or hands it
    /// back.
    waker: Option<Waker>,
    /// A close frame has been written: nothing may follow it (RFC 6455 5.5.1).
    closed: bool,
    /// When the fan-out last wrote (or held) anything here: the time its frames were
    /// made.
    offered_at: Option<Instant>,
}

/// What the fan-out did with its messages for one outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Written or queued: this many messages, carrying this many bytes (as the
    /// transport's metrics count them).
    Taken { messages: usize, carried: usize },
    /// Not for this outbox now (its session is catching up, or already has it).
    Passed,
    /// Handed back to the session, which will catch up on it itself.
    HandedBack,
}

impl Outbox {
    /// `ring`: how many messages the room's broadcast ring holds.
    pub fn new(stream: TcpStream, ring: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            stream,
            state: Mutex::new(State::default()),
            wake_every: (ring as u64 / 2).max(1),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The fan-out's side: the messages of `frames`, of which the session gets those
    /// it has not had.
    pub fn offer(&self, frames: &Frames) -> Offered {
        let mut s = self.state();
        if !s.live || s.cursor >= frames.last() {
            return Offered::Passed;
        }
        // A message missing before these (the fan-out lagged, or history let it go):
        // the session sorts it out.
        if s.cursor + 1 < frames.first() {
            return s.hand_back();
        }
        let (bytes, messages, carried) = frames.from(s.cursor + 1);
        // A reader that takes too little in is handed back too: it is written to by
        // its own task, which gives up on it after the write limit. An empty outbox
        // takes one run whatever its size (a single message over the limit).
        if !s.pending.is_empty() && s.pending.len() + bytes.len() > LIMIT {
            return s.hand_back();
        }
        let all_written = match self.write_or_hold(&mut s, bytes) {
            Ok(all_written) => all_written,
            // The session finds the error on its next write, and ends.
            Err(_) => return s.hand_back(),
        };
        s.cursor = frames.last();
        s.offered_at = Some(frames.made());
        s.taken_since += messages as u64;
        if !all_written || s.taken_since >= self.wake_every {
            s.taken_since = 0;
            s.wanted = true;
            s.wake();
        }
        Offered::Taken { messages, carried }
    }

    /// Writes what the kernel takes of `bytes` now, if nothing is held before them,
    /// and holds the rest; whether the kernel took them all.
    fn write_or_hold(&self, s: &mut State, bytes: &[u8]) -> io::Result<bool> {
        let written = if s.pending.is_empty() {
            match self.stream.try_write(bytes) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            }
        } else {
            0
        };
        s.pending.extend_from_slice(&bytes[written..]);
        Ok(written == bytes.len())
    }

    /// The last message id the outbox took.
    pub fn cursor(&self) -> u64 {
        self.state().cursor
    }

    /// Bytes held for the kernel.
    pub fn pending_len(&self) -> usize {
        self.state().pending.len()
    }

    /// Whether the fan-out writes to this socket.
    pub fn is_live(&self) -> bool {
        self.state().live
    }

    /// Makes the session live if `catch_up` says it has nothing left to write
    /// (`Ok`, with the id it has had everything up to). Called under the outbox's
    /// lock: a message the fan-out passed over while the session was not live is one
    /// `catch_up` sees. Returns what was left otherwise.
    pub fn go_live<T>(&self, catch_up: impl FnOnce() -> Result<u64, T>) -> Option<T> {
        let mut s = self.state();
        match catch_up() {
            Ok(_) if s.closed => None,
            Ok(cursor) => {
                s.live = true;
                s.cursor = cursor;
                None
            }
            Err(left) => Some(left),
        }
    }

    /// Waits until the session has something to do: bytes the fan-out left pending,
    /// or its queue to read up to the cursor (`None`), or its hand-back
    /// (`Some(cursor)`: the session goes on from there).
    pub async fn attention(&self) -> Option<u64> {
        std::future::poll_fn(|cx| {
            let mut s = self.state();
            if s.handed_back {
                s.handed_back = false;
                return Poll::Ready(Some(s.cursor));
            }
            if s.wanted {
                s.wanted = false;
                return Poll::Ready(None);
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// The session has ended: nothing more is written by the fan-out, and the outbox
    /// does not go live again.
    pub fn close(&self) {
        let mut s = self.state();
        s.live = false;
        s.closed = true;
        s.waker = None;
    }

    /// When the fan-out last wrote here, if it has.
    pub fn offered_at(&self) -> Option<Instant> {
        self.state().offered_at
    }

    /// The session's own write of whole frames (a transport without tungstenite), and
    /// of everything held: `false` if the socket took nothing for `stalled` while
    /// bytes waited (a reader that stopped reading), or failed. A reader that takes
    /// its bytes slowly but steadily is written to for as long as it takes.
    pub async fn write(&self, frames: &[u8], stalled: Duration) -> bool {
        if !self.drain_while_moving(LIMIT - 1, stalled).await {
            return false;
        }
        let held = {
            let mut s = self.state();
            self.write_or_hold(&mut s, frames)
        };
        held.is_ok() && self.drain_while_moving(0, stalled).await
    }

    /// Writes everything held, as [`Outbox::write`] does.
    pub async fn flush(&self, stalled: Duration) -> bool {
        self.drain_while_moving(0, stalled).await
    }

    /// Writes held bytes until at most `below` are left, each wait for the socket to
    /// take more bounded by `stalled`.
    async fn drain_while_moving(&self, below: usize, stalled: Duration) -> bool {
        loop {
            let held = self.pending_len();
            if held <= below {
                return true;
            }
            let moved = std::future::poll_fn(|cx| self.poll_drain(cx, held - 1));
            match crate::time_limit::within(stalled, moved).await {
                Some(Ok(())) => {}
                Some(Err(_)) | None => return false,
            }
        }
    }

    /// Resolves when the peer has closed its side (or reset the connection), for a
    /// transport whose peer sends nothing after its request. What it sends is read
    /// and dropped up to [`PEER_BYTES`]; after that the socket is no longer read, so
    /// that a peer cannot keep the server reading for ever (TCP holds it back), and
    /// its close is seen at the next write.
    pub async fn peer_closed(&self) {
        // Small: it is part of every waiting stream's state, and a peer sends nothing.
        let mut buf = [0u8; 64];
        let mut taken = 0;
        while taken < PEER_BYTES {
            if self.stream.readable().await.is_err() {
                return;
            }
            match self.stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        std::future::pending().await
    }

    /// Writes pending bytes until at most `below` are left, waiting for the socket.
    fn poll_drain(&self, cx: &mut Context<'_>, below: usize) -> Poll<io::Result<()>> {
        loop {
            {
                let mut s = self.state();
                while !s.pending.is_empty() {
                    match self.stream.try_write(&s.pending) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => s.pending.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                if s.pending.is_empty() && s.pending.capacity() > 0 {
                    // An idle socket keeps no buffer.
                    s.pending = BytesMut::new();
                }
                if s.pending.len() <= below {
                    return Poll::Ready(Ok(()));
                }
            }
            ready!(self.stream.poll_write_ready(cx))?;
        }
    }
}

impl State {
    fn hand_back(&mut self) -> Offered {
        self.live = false;
        self.handed_back = true;
        self.wake();
        Offered::HandedBack
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Whether `frames` (whole server frames) include a close frame.
fn has_close_frame(frames: &[u8]) -> bool {
    let mut cursor = io::Cursor::new(frames);
    while let Ok(Some((header, len))) = FrameHeader::parse(&mut cursor) {
        if header.opcode == OpCode::Control(Control::Close) {
            return true;
        }
        cursor.set_position(cursor.position().saturating_add(len));
    }
    false
}

/// The session's socket as tungstenite sees it: reads come from the connection (after
/// what hyper had read past the handshake), writes go through the outbox.
pub struct SessionIo {
    read: Bytes,
    outbox: Arc<Outbox>,
}

impl SessionIo {
    pub fn new(read: Bytes, outbox: Arc<Outbox>) -> SessionIo {
        SessionIo { read, outbox }
    }
}

impl AsRawFd for SessionIo {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.outbox.stream.as_raw_fd()
    }
}

impl AsyncRead for SessionIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if crate::http1::read_first(&mut self.read, buf) {
            return Poll::Ready(Ok(()));
        }
        let stream = &self.outbox.stream;
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SessionIo {
    /// Takes all of `buf` or none of it, so that frames stay whole in the outbox.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outbox = &self.outbox;
        ready!(outbox.poll_drain(cx, LIMIT - 1))?;
        let mut s = outbox.state();
        // Under the same lock as the bytes go in: the fan-out writes nothing after a
        // close frame, whichever path wrote it (a reply to the peer's close,
        // shutdown, an error) and whenever tungstenite wrote it.
        if has_close_frame(buf) {
            s.closed = true;
            s.live = false;
        }
        Poll::Ready(outbox.write_or_hold(&mut s, buf).map(|_| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_drain(cx, 0)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.outbox.poll_drain(cx, 0))?;
        // SAFETY: shutdown on a descriptor this stream owns and keeps open.
        let done = unsafe { libc::shutdown(self.outbox.stream.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::{LIMIT, Offered, Outbox};
    use crate::room::{Draft, Published};
    use crate::transport::fanout::Frames;

    /// An outbox on one end of a loopback connection, and the other end.
    async fn pair() -> (Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (Outbox::new(ours, 1024), peer)
    }

    /// A session's own write lasts as long as the peer keeps taking bytes, however
    /// long the whole takes; a stall as long as the limit ends it.
    #[tokio::test]
    async fn a_write_lasts_while_the_peer_takes_bytes_and_ends_when_it_stops() {
        use std::os::fd::AsRawFd;
        use std::time::{Duration, Instant};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut peer = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        // A small send buffer, so that the kernel holds little of what is written.
        let size: libc::c_int = 8192;
        // SAFETY: setsockopt on an open socket with a value of the size given.
        unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let outbox = Outbox::new(ours, 1024);
        const TOTAL: usize = 512 * 1024;
        let reader = tokio::spawn(async move {
            let (mut buf, mut read) = (vec![0u8; 4096], 0);
            while read < TOTAL {
                read += peer.read(&mut buf).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peer
        });
        let limit = Duration::from_millis(150);
        let started = Instant::now();
        assert!(
            outbox.write(&vec![b'x'; TOTAL], limit).await,
            "written while read"
        );
        assert!(started.elapsed() > 2 * limit, "{:?}", started.elapsed());
        // The peer is still there but reads no more.
        let _peer = reader.await.unwrap();
        let started = Instant::now();
        assert!(
            !outbox.write(&vec![b'x'; TOTAL], limit).await,
            "a stalled write ends"
        );
        assert!(started.elapsed() < 10 * limit, "{:?}", started.elapsed());
    }

    fn frames(ids: std::ops::RangeInclusive<u64>, text: &str) -> Frames {
        let draft = Draft {
            user: "u".into(),
            text: text.into(),
            client_ts: None,
        };
        let messages: Vec<_> = ids
            .map(|id| Arc::new(Published::new(id, "r", &draft, 1)))
            .collect();
        Frames::new(&messages)
    }

    #[tokio::test]
    async fn a_live_session_is_written_what_it_has_not_had_and_nothing_else() {
        let (outbox, mut peer) = pair().await;
        let first = frames(1..=2, "a");
        assert_eq!(outbox.offer(&first), Offered::Passed, "not live yet");
        assert_eq!(outbox.go_live(|| Ok::<_, ()>(1)), None);
        let Offered::Taken { messages: 1, .. } = outbox.offer(&first) else {
            panic!("message 2 only")
        };
        assert_eq!(outbox.offer(&first), Offered::Passed, "has them");
        let (wire, _, _) = first.from(2);
        let mut got = vec![0; wire.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, wire);
        // Message 3 went by while it was not looking: handed back, from 2.
        assert_eq!(outbox.offer(&frames(4..=4, "b")), Offered::HandedBack);
        assert!(!outbox.is_live());
        assert_eq!(outbox.attention().await, Some(2));
    }

    #[tokio::test]
    async fn nothing_is_written_after_the_sessions_close_frame() {
        use futures_util::SinkExt;
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let (outbox, mut peer) = pair().await;
        let io = super::SessionIo::new(bytes::Bytes::new(), outbox.clone());
        let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        outbox.go_live(|| Ok::<_, ()>(0));
        socket.send(Message::Close(None)).await.unwrap();
        assert_eq!(outbox.offer(&frames(1..=1, "late")), Offered::Passed);
        assert_eq!(outbox.go_live(|| Ok::<_, ()>(1)), None);
        assert!(!outbox.is_live(), "not live again after its close");
        drop(socket);
        outbox.close();
        drop(outbox);
        let mut wire = Vec::new();
        peer.read_to_end(&mut wire).await.unwrap();
        assert_eq!(wire, [0x88, 0], "the close frame alone");
    }

    #[tokio::test]
    async fn an_empty_outbox_takes_a_message_larger_than_the_limit() {
        let (outbox, mut peer) = pair().await;
        outbox.go_live(|| Ok::<_, ()>(0));
        let big = frames(1..=1, &"x".repeat(LIMIT + 1000));
        let Offered::Taken { messages: 1, .. } = outbox.offer(&big) else {
            panic!("handed back")
        };
        let (wire, _, _) = big.from(1);
        let mut got = vec![0; wire.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, wire);
    }

    #[tokio::test]
    async fn a_peer_that_takes_nothing_in_is_handed_back_with_at_most_the_limit_held() {
        let (outbox, _peer) = pair().await;
        outbox.go_live(|| Ok::<_, ()>(0));
        let text = "x".repeat(4000);
        let mut id = 0;
        let handed_back = loop {
            id += 1;
            match outbox.offer(&frames(id..=id, &text)) {
                Offered::Taken { .. } => assert!(outbox.pending_len() <= LIMIT),
                other => break other,
            }
            assert!(id < 100_000, "never handed back");
        };
        assert_eq!(handed_back, Offered::HandedBack);
        // It goes on from the last message the outbox took.
        assert_eq!(outbox.attention().await, Some(id - 1));
    }
}
