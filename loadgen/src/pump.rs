//! One read loop per worker over all of its users' streams (WebSocket and SSE) and
//! long polls.
//!
//! With a task per user, each message a user receives costs a wake-up: tokio's
//! readiness for the socket, the `LocalSet` scheduling the user's task, the task's
//! `select!` over what else may end its wait, a read future. At one message per socket
//! every 10 ms nothing is batched, and that machinery was about half of the loadgen's
//! own CPU per delivery. Here a stream, once subscribed, is read by the worker's
//! pump: one `epoll` set (itself watched by tokio) whose ready sockets are read, their
//! frames or events checked by the same readers the user's task has ([`Decoder`]) and
//! their messages accounted in place, through the user's own accounting ([`Feed`]).
//! Both streams are read the same way, so that the instrument favours neither when
//! they are compared. The user's task is woken only when its stream ends or when
//! it has every id it is owed, and keeps everything else: subscribing, reconnecting,
//! leaving, the drain, and when to stop. A long poll paid that machinery on every
//! answer too: here its task writes the first poll and hands the socket over, and the
//! pump reads each answer, accounts it and writes the next poll ([`Polls`]).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::error::ClientError;
use crate::h1::{Framing, Parts};
use crate::transport::Received;
use crate::transport::sse::Parser;
use crate::transport::ws::{Frames, Step, pong_frame, violation};

/// The read buffer's size per socket, as a user's own connection has.
const BUF: usize = 4096;
/// Ready sockets taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Accounts for what a pumped socket received, as the user's task would.
pub type Feed = Rc<dyn Fn(Received<'_>) -> Fed>;

/// What accounting a pumped socket's message tells the pump.
pub struct Fed {
    /// The user now has every id it is owed: its task is woken to stop.
    pub owed_all: bool,
    /// The `after` of the user's next poll.
    pub cursor: u64,
}

/// How a pumped socket's bytes become messages: the reader of its transport, with
/// the state the user's task left it in.
pub(crate) enum Decoder {
    /// WebSocket frames.
    Ws(Frames),
    /// An SSE response's body (its HTTP framing, then its events).
    Sse { framing: Framing, parser: Parser },
    /// Long polls: each answer read whole, accounted, and the next poll written.
    Polls(Polls),
}

/// A long-polling socket in the pump: its polls' path up to the `after` value, and
/// where the answer being read is.
pub(crate) struct Polls {
    /// Up to `after=`: each poll adds its cursor.
    path: String,
    host: String,
    /// `None`: an answer's head is next; else how the rest of its body ends.
    framing: Option<Framing>,
    /// Whether the server lets another request follow the answer being read.
    reusable: bool,
    body: Vec<u8>,
}

impl Polls {
    /// Polls of `GET {path}{after}` to `host`, one of which has been written and not yet
    /// answered.
    pub(crate) fn new(path: &str, host: &str) -> Polls {
        Polls {
            path: path.to_owned(),
            host: host.to_owned(),
            framing: None,
            reusable: true,
            body: Vec::new(),
        }
    }

    /// Appends the poll for the messages after `cursor` to `out`.
    fn request(&self, cursor: u64, out: &mut Vec<u8>) {
        crate::h1::write_get(out, &self.host, "", |out| {
            out.extend_from_slice(self.path.as_bytes());
            let _ = write!(out, "{cursor}");
        });
    }
}

impl Decoder {
    /// The error a failed read is.
    fn io(&self, e: io::Error) -> ClientError {
        match self {
            Decoder::Ws(_) => ClientError::Ws(e.to_string()),
            Decoder::Sse { .. } => ClientError::Sse(e.to_string()),
            Decoder::Polls(_) => ClientError::Io(e),
        }
    }

    /// The error the end of the connection is.
    fn eof(&self) -> ClientError {
        match self {
            Decoder::Ws(_) => violation("connection reset without closing handshake"),
            Decoder::Sse { .. } | Decoder::Polls(_) => ClientError::Closed,
        }
    }
}

/// What a pumped socket's user holds: how it learns that its stream ended or that it
/// has what it is owed.
#[derive(Default)]
pub struct Link {
    /// Why the stream ended; taken by the user.
    ended: RefCell<Option<ClientError>>,
    /// The pump has accounted a message from this socket, not yet told
    /// ([`Link::fed`], asked once the stream has ended).
    fed: Cell<bool>,
    /// The socket is closed and out of the pump (or on its way out).
    closed: Cell<bool>,
    notify: Notify,
}

impl Link {
    /// Waits for the pump's word: `Err` if the stream ended, `Ok` if the user may have
    /// what it is owed.
    pub async fn wait(&self) -> Result<(), ClientError> {
        self.notify.notified().await;
        match self.ended.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether the pump accounted a message from this socket (since the last call):
    /// a stream that delivered before it broke is resumed at once, as one read in the
    /// task is.
    pub fn fed(&self) -> bool {
        self.fed.replace(false)
    }
}

/// One pumped socket.
struct Slot {
    stream: TcpStream,
    /// `buf[start..filled]` is read and not yet used.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    decoder: Decoder,
    /// Pong bytes the socket would not take yet.
    unsent: Vec<u8>,
    /// The user has every id it is owed: nothing more is read or accounted (its task
    /// closes the socket when it runs).
    done: bool,
    bytes: Arc<AtomicU64>,
    feed: Feed,
    link: Rc<Link>,
}

/// A worker's pump.
pub struct Pump {
    epoll: AsyncFd<OwnedFd>,
    /// Boxed: a slot is taken out of the set while it is served.
    slots: RefCell<Vec<Option<Box<Slot>>>>,
    free: RefCell<Vec<usize>>,
}

/// A socket handed to the pump ([`Pump::hand_over`]), as its user's receiver holds it;
/// dropping this closes it.
pub struct Pumped {
    pump: Rc<Pump>,
    key: usize,
    link: Rc<Link>,
    /// The pump's word that the stream ended, kept for the next call when messages
    /// came first.
    ended: Option<ClientError>,
}

impl Pumped {
    /// What a receiver's `next` answers once its socket is pumped: `Nothing` when
    /// the user may have every id it is owed, or before an end that came after
    /// messages (so that the user resumes at once, as it does after a message read
    /// in its own task); the end itself as an error.
    pub async fn next(&mut self) -> Result<Received<'static>, ClientError> {
        if let Some(e) = self.ended.take() {
            return Err(e);
        }
        match self.link.wait().await {
            Ok(()) => Ok(Received::Nothing),
            Err(e) if self.link.fed() => {
                self.ended = Some(e);
                Ok(Received::Nothing)
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Pumped {
    fn drop(&mut self) {
        if !self.link.closed.replace(true) {
            self.pump.remove(self.key);
        }
    }
}

impl Pump {
    /// A pump with its loop spawned on the current `LocalSet`.
    pub fn start() -> io::Result<Rc<Pump>> {
        // SAFETY: epoll_create1 has no preconditions; the descriptor is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it; the `OwnedFd` keeps
        // it open, and refers to it alone, for as long as the `AsyncFd` lives.
        let epoll = unsafe {
            AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd), Interest::READABLE)
        }?;
        let pump = Rc::new(Pump {
            epoll,
            slots: RefCell::default(),
            free: RefCell::default(),
        });
        tokio::task::spawn_local(pump.clone().run());
        Ok(pump)
    }

    /// Adds the socket `fd` to the set under a new key, before it is handed over: a
    /// failure here leaves the socket with its user.
    fn watch(&self, fd: RawFd) -> io::Result<usize> {
        let key = match self.free.borrow_mut().pop() {
            Some(k) => k,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(None);
                slots.len() - 1
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key as u64,
        };
        // SAFETY: both descriptors are open; the event is read during the call only.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut ev,
            )
        };
        if added < 0 {
            self.free.borrow_mut().push(key);
            return Err(io::Error::last_os_error());
        }
        Ok(key)
    }

    /// Takes `fd` out of the set and frees its key (from [`Pump::watch`]).
    fn unwatch(&self, key: usize, fd: RawFd) {
        // SAFETY: both descriptors are open; a removal passes no event.
        unsafe {
            libc::epoll_ctl(
                self.epoll.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
        self.free.borrow_mut().push(key);
    }

    /// Takes over the socket `fd` of a subscribed stream: `parts` gives it up with the
    /// bytes already read from it (at most the start of a frame or an event's
    /// framing: the task has taken every whole one) and `decoder` the state its reader
    /// left. `Ok(None)`: the set would not take the socket, which stays with its user
    /// (`parts` is not called).
    pub(crate) fn hand_over(
        self: &Rc<Self>,
        fd: RawFd,
        parts: impl FnOnce() -> io::Result<(Parts, Decoder)>,
        feed: Feed,
    ) -> io::Result<Option<Pumped>> {
        let Ok(key) = self.watch(fd) else {
            return Ok(None);
        };
        let ((stream, mut unread, bytes), decoder) =
            parts().inspect_err(|_| self.unwatch(key, fd))?;
        let filled = unread.len();
        unread.resize(BUF.max(filled + BUF / 4), 0);
        let link = Rc::new(Link::default());
        self.slots.borrow_mut()[key] = Some(Box::new(Slot {
            stream,
            buf: unread,
            start: 0,
            filled,
            decoder,
            unsent: Vec::new(),
            done: false,
            bytes,
            feed,
            link: link.clone(),
        }));
        Ok(Some(Pumped {
            pump: self.clone(),
            key,
            link,
            ended: None,
        }))
    }

    /// Takes the slot out of the set and closes its socket.
    fn remove(&self, key: usize) {
        let slot = self.slots.borrow_mut().get_mut(key).and_then(Option::take);
        if let Some(slot) = slot {
            self.close(key, &slot);
        }
    }

    /// Takes the socket out of the set and frees its key; the caller drops the slot.
    fn close(&self, key: usize, slot: &Slot) {
        self.unwatch(key, slot.stream.as_raw_fd());
        slot.link.closed.set(true);
    }

    async fn run(self: Rc<Self>) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            let Ok(mut ready) = self.epoll.readable().await else {
                return;
            };
            // SAFETY: the buffer holds `EVENTS` events; a zero timeout never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.get_ref().as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    0,
                )
            };
            // Fewer events than asked for: none was left. One that comes after the
            // `epoll_wait` makes the set readable to tokio again, and the
            // readiness cleared here is set again at tokio's next look.
            if (n as usize) < EVENTS {
                ready.clear_ready();
            } else {
                drop(ready);
            }
            for e in &events[..n.max(0) as usize] {
                let hup = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                let read = if e.events & hup != 0 {
                    Reading::ToEnd
                } else {
                    Reading::Drained
                };
                self.service(e.u64 as usize, read);
            }
        }
    }

    /// Reads what the socket has and takes every whole message out of its buffer;
    /// ends the slot on an error. The slot is out of the set meanwhile, so that what
    /// its user's accounting does cannot reach the set while it is borrowed.
    fn service(&self, key: usize, read: Reading) {
        let Some(mut slot) = self.slots.borrow_mut().get_mut(key).and_then(Option::take) else {
            return;
        };
        let outcome = slot.take(read);
        let link = &slot.link;
        match outcome {
            Ok(false) => {}
            Ok(true) => link.notify.notify_one(),
            Err(e) => {
                *link.ended.borrow_mut() = Some(e);
                link.notify.notify_one();
                return self.close(key, &slot);
            }
        }
        // Closed by its user while it was served: dropped there, it could not be.
        if link.closed.get() {
            self.close(key, &slot);
        } else {
            self.slots.borrow_mut()[key] = Some(slot);
        }
    }
}

/// How far a slot reads its socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Until a read comes back short: the socket was emptied, and anything that comes
    /// after it is a new edge in the (edge-triggered) set.
    Drained,
    /// Until the end of the stream or `WouldBlock`: the peer has closed (or the
    /// socket failed), and no new edge will come for what is left.
    ToEnd,
}

impl Slot {
    /// Reads as `read` says, accounting each message; whether the user now has every
    /// id it is owed. Between calls the buffer holds no whole frame.
    fn take(&mut self, read: Reading) -> Result<bool, ClientError> {
        if self.done {
            return Ok(true);
        }
        self.flush()?;
        loop {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.filled, 0);
                self.filled -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.filled < BUF / 4 {
                let grown = self.buf.len() + BUF;
                self.buf.resize(grown, 0);
            }
            let room = self.buf.len() - self.filled;
            let n = match (&self.stream).read(&mut self.buf[self.filled..]) {
                Ok(0) => return self.end_of_stream(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.decoder.io(e)),
            };
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.filled += n;
            if self.messages()? {
                return Ok(true);
            }
            if n < room && read == Reading::Drained {
                return Ok(false);
            }
        }
    }

    /// The connection has ended: an answer whose body runs to the end of the
    /// connection is whole now and accounted; the end is then an error as any other,
    /// unless the user has every id it is owed.
    fn end_of_stream(&mut self) -> Result<bool, ClientError> {
        if let Decoder::Polls(p) = &mut self.decoder
            && p.framing == Some(Framing::Close)
        {
            p.framing = Some(Framing::Done);
            if self.polls()? {
                return Ok(true);
            }
        }
        Err(self.decoder.eof())
    }

    /// Takes whole messages out of the buffer until none is left or the user has
    /// every id it is owed (`true`: nothing after that is accounted).
    fn messages(&mut self) -> Result<bool, ClientError> {
        match self.decoder {
            Decoder::Ws(_) => self.frames(),
            Decoder::Sse { .. } => self.events(),
            Decoder::Polls(_) => self.polls(),
        }
    }

    /// [`Slot::messages`] for long polls: each whole answer is accounted as the user's
    /// task accounts one, and the next poll, for the messages after the cursor that
    /// leaves, is written at once. An answer that is not `200` ends the socket, as
    /// one read in the task does.
    fn polls(&mut self) -> Result<bool, ClientError> {
        loop {
            let Decoder::Polls(p) = &mut self.decoder else {
                unreachable!("a long-polling slot");
            };
            let buf = &self.buf[..self.filled];
            let framing = match p.framing {
                Some(f) => f,
                None => {
                    let Some((head, len)) = crate::h1::parse_head(&buf[self.start..])? else {
                        if self.filled - self.start >= 64 * 1024 {
                            return Err(ClientError::Protocol("answer head too long".into()));
                        }
                        return Ok(false);
                    };
                    self.start += len;
                    if head.status != 200 {
                        return Err(ClientError::status(head.status, &p.path));
                    }
                    p.reusable = head.reusable;
                    p.body.clear();
                    head.framing
                }
            };
            let body = &mut p.body;
            let framing = crate::h1::decode(buf, &mut self.start, framing, &mut |b| {
                body.extend_from_slice(b)
            })?;
            if framing != Framing::Done {
                p.framing = Some(framing);
                return Ok(false);
            }
            p.framing = None;
            self.link.fed.set(true);
            let fed = (self.feed)(Received::Page(&p.body));
            if fed.owed_all {
                self.done = true;
                return Ok(true);
            }
            if !p.reusable {
                return Err(ClientError::Closed);
            }
            p.request(fed.cursor, &mut self.unsent);
            self.flush()?;
        }
    }

    /// [`Slot::messages`] for an SSE body. Its bytes are moved into the event parser
    /// as they are taken, as in the user's task.
    fn events(&mut self) -> Result<bool, ClientError> {
        let Decoder::Sse { framing, parser } = &mut self.decoder else {
            unreachable!("an SSE slot");
        };
        let buf = &self.buf[..self.filled];
        *framing = crate::h1::decode(buf, &mut self.start, *framing, &mut |b| parser.push(b))
            .map_err(|e| match e {
                ClientError::Protocol(_) => ClientError::Sse(e.to_string()),
                e => e,
            })?;
        while parser.next_event() {
            self.link.fed.set(true);
            let json = parser.data();
            let wire = parser.event_bytes();
            if (self.feed)(Received::Message { json, wire }).owed_all {
                self.done = true;
                return Ok(true);
            }
        }
        if *framing == Framing::Done {
            return Err(ClientError::Closed);
        }
        Ok(false)
    }

    /// [`Slot::messages`] for a WebSocket.
    fn frames(&mut self) -> Result<bool, ClientError> {
        loop {
            let Decoder::Ws(frames) = &mut self.decoder else {
                unreachable!("a WebSocket slot");
            };
            let unread = &self.buf[self.start..self.filled];
            let (step, end) = match frames.step(unread)? {
                (Step::More(want), _) => {
                    if want > self.buf.len() - self.start {
                        let grown = self.start + want + BUF / 4;
                        self.buf.resize(grown, 0);
                    }
                    return Ok(false);
                }
                s => s,
            };
            let owed_all = match step {
                Step::Text { start, wire } => {
                    self.link.fed.set(true);
                    let json = &unread[start..end];
                    (self.feed)(Received::Message { json, wire }).owed_all
                }
                Step::Assembled { wire } => {
                    self.link.fed.set(true);
                    let json = &frames.message[..];
                    (self.feed)(Received::Message { json, wire }).owed_all
                }
                Step::Ping { start } => {
                    let frame = pong_frame(&unread[start..end]);
                    self.unsent.extend_from_slice(&frame);
                    self.start += end;
                    self.flush()?;
                    continue;
                }
                Step::Binary | Step::Skip => false,
                Step::More(_) => unreachable!("handled above"),
            };
            self.start += end;
            if owed_all {
                self.done = true;
                return Ok(true);
            }
        }
    }

    /// Writes what bytes of pongs or polls the socket takes; the rest waits for the
    /// next call.
    fn flush(&mut self) -> Result<(), ClientError> {
        while !self.unsent.is_empty() {
            match (&self.stream).write(&self.unsent) {
                Ok(0) => return Err(self.decoder.io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.decoder.io(e)),
            }
        }
        Ok(())
    }
}
