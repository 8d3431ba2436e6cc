//! One simulated user, generic over its transport's [`Receiver`]: connect, learn
//! where "now" is, subscribe after it, receive and account until told to stop,
//! reconnecting from the highest id seen whenever the connection breaks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};

use crate::conn::answered;
use crate::error::ClientError;
use crate::h1::Conn;
use crate::pump::{Fed, Feed};
use crate::tracker::Tracker;
use crate::transport::{Received, Receiver, Sub};
use crate::wire::{self, Msg};
use crate::worker::WorkerCtx;

/// How long a user waits before asking a server that refused it again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How late tokio's timer may wake a sleep by itself: it rounds up to milliseconds.
const TIMER_GRAIN: Duration = Duration::from_millis(1);

/// Who a user is and when it runs.
#[derive(Debug, Clone)]
pub struct UserPlan {
    pub index: usize,
    pub transport: usize,
    pub target: usize,
    pub start_at: Instant,
    /// When a churn user leaves; `None`: at the end of the run.
    pub leave_at: Option<Instant>,
    pub source: Option<IpAddr>,
}

/// What a user saw, for the accounting at the end.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub transport: usize,
    pub target: usize,
    /// Whether it ever subscribed; a user that never did is owed every counted id.
    pub subscribed: bool,
    /// The last id it was owed, when it left before the end of the run.
    pub end: Option<u64>,
    pub tracker: Tracker,
}

/// When a user stops: once it has seen `end`, or at `deadline`. `end` is shared with
/// the worker's pump when the user's socket is pumped: it wakes the user once it has
/// accounted everything through it.
struct Stop {
    end: Rc<Cell<Option<u64>>>,
    deadline: Option<Instant>,
    drain: Duration,
}

impl Stop {
    fn set(&mut self, end: u64) {
        self.end.set(Some(end));
        self.deadline = Some(Instant::now() + self.drain);
    }

    fn end(&self) -> Option<u64> {
        self.end.get()
    }

    /// `through`: see [`User::through`]. A stream user that has the last id but not
    /// one before it reads on until the drain ends: the missing one may be behind it.
    /// Read only once the end is known: not on every delivery of the run.
    fn reached(&self, through: impl FnOnce() -> u64) -> bool {
        self.end().is_some_and(|e| through() >= e)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// What ended a wait on a user's request ([`Ends::wait`]).
enum Wake<T> {
    /// The request finished.
    Done(T),
    /// The user's time to leave came.
    Leave,
    /// The drain's deadline passed.
    Over,
    /// The user has every id it is owed, or the runner went away.
    Finished,
}

/// What can end a wait besides the request itself: the run's final ids, the user's
/// time to leave, the drain's deadline. These live as long as the user, so that each
/// message costs one poll of each, not a timer and a waiter set up and torn down again.
struct Ends<'p, 'n> {
    finals: Pin<&'p mut Notified<'n>>,
    leave: Pin<&'p mut Sleep>,
    leaves: bool,
    deadline: Pin<&'p mut Sleep>,
    /// The deadline `deadline` is set to; `far` until the drain starts.
    armed: Option<Instant>,
    far: Instant,
}

impl Ends<'_, '_> {
    /// Waits for `work`, or for what else ends the wait. `through`: see
    /// [`User::through`], read when the final ids arrive. `work` is not dropped here,
    /// so a caller may wait on it again (a poll's request is not cancel-safe).
    async fn wait<T>(
        &mut self,
        work: Pin<&mut impl Future<Output = T>>,
        stop: &mut Stop,
        ctx: &WorkerCtx,
        target: usize,
        through: impl Fn() -> u64,
    ) -> Wake<T> {
        let mut work = work;
        loop {
            if stop.deadline != self.armed {
                self.armed = stop.deadline;
                self.deadline.as_mut().reset(self.armed.unwrap_or(self.far));
            }
            tokio::select! {
                biased;
                r = &mut work => return Wake::Done(r),
                _ = self.finals.as_mut(), if stop.end().is_none() => {
                    match ctx.finals.get() {
                        Some(Some(f)) => stop.set(f[target]),
                        _ => return Wake::Finished,
                    }
                    if stop.reached(&through) {
                        return Wake::Finished;
                    }
                }
                _ = self.leave.as_mut(), if self.leaves && stop.end().is_none() => return Wake::Leave,
                _ = self.deadline.as_mut(), if stop.deadline.is_some() => return Wake::Over,
            }
        }
    }
}

/// A number in `[0, 1)` from `seed` and `index` (splitmix64).
pub fn phase(seed: u64, index: usize) -> f64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

pub async fn run<R: Receiver>(ctx: Rc<WorkerCtx>, plan: UserPlan) -> UserRecord {
    tokio::time::sleep_until(plan.start_at).await;
    // Connect time counts from when the user was due to start: a worker busy with
    // others when it was due would otherwise hide its wait. Not the timer's own
    // lateness, though: tokio rounds a sleep up to its next millisecond.
    let started = Instant::now().min(plan.start_at + TIMER_GRAIN);
    let sc = &ctx.shared.scenario;
    let client = format!("lg{}-{}", sc.seed, plan.index);
    let acct = Rc::new(RefCell::new(Account {
        rec: UserRecord {
            transport: plan.transport,
            target: plan.target,
            subscribed: false,
            end: None,
            tracker: Tracker::default(),
        },
        cursor: 0,
    }));
    let mut stop = Stop {
        end: Rc::default(),
        deadline: None,
        drain: ctx.shared.drain,
    };
    let sub = Sub {
        room: &sc.room,
        client: &client,
        poll_interval: sc.poll_interval,
        long_poll_timeout_ms: sc.long_poll_timeout.as_millis() as u64,
        phase: phase(sc.seed, plan.index),
        pump: if R::PUMPED {
            ctx.pump()
                .map(|pump| (pump, pumped_feed(&ctx, &acct, &stop.end, R::STREAM)))
        } else {
            None
        },
    };
    let mut user = User {
        ctx: &ctx,
        transport: plan.transport,
        acct,
        located: false,
    };
    let mut receiver: Option<R> = None;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let finals = ctx.finals.changed();
    tokio::pin!(finals);
    finals.as_mut().enable();
    let leave = tokio::time::sleep_until(plan.leave_at.unwrap_or(far));
    tokio::pin!(leave);
    let deadline = tokio::time::sleep_until(far);
    tokio::pin!(deadline);
    let mut ends = Ends {
        finals,
        leave,
        leaves: plan.leave_at.is_some(),
        deadline,
        armed: None,
        far,
    };
    // Receives that failed in a row.
    let mut failures = 0u32;

    'run: loop {
        if stop.end().is_none() {
            match ctx.finals.get() {
                Some(Some(f)) => stop.set(f[plan.target]),
                Some(None) => break,
                None if plan.leave_at.is_some_and(|t| Instant::now() >= t) => {
                    user.leave(&plan, &mut stop).await;
                }
                None => {}
            }
        }
        if stop.reached(|| user.through::<R>()) {
            break;
        }
        let Some(rx) = receiver.as_mut() else {
            // Raced with the end of the run like a receive: a server that takes the
            // request and never answers must not hold the user (and the run) past
            // the drain. The user's start is set by its first subscription, so what
            // it has is checked at the top of the loop, not while subscribing.
            let attempt = {
                let subscribe = user.subscribe::<R>(&plan, &sub, started);
                tokio::pin!(subscribe);
                ends.wait(subscribe, &mut stop, &ctx, plan.target, || 0)
                    .await
            };
            match attempt {
                Wake::Done(Ok(rx)) => receiver = Some(rx),
                Wake::Done(Err(e)) => {
                    user.error(&e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Wake::Leave => user.leave(&plan, &mut stop).await,
                // The drain ended with the request unanswered.
                Wake::Over => {
                    user.error(&ClientError::Timeout);
                    break;
                }
                Wake::Finished => break,
            }
            continue;
        };
        let got = {
            let next = rx.next(&sub, user.cursor());
            tokio::pin!(next);
            loop {
                let through = || user.through::<R>();
                match ends
                    .wait(next.as_mut(), &mut stop, &ctx, plan.target, through)
                    .await
                {
                    Wake::Done(r) => break r,
                    Wake::Leave => {
                        user.leave(&plan, &mut stop).await;
                        if stop.reached(|| user.through::<R>()) {
                            break 'run;
                        }
                    }
                    Wake::Over | Wake::Finished => break 'run,
                }
            }
        };
        match got {
            Ok(received) => {
                failures = 0;
                user.feed(received);
            }
            Err(e) => {
                user.error(&e);
                receiver = None;
                // A broken stream is resumed at once; a server that keeps refusing
                // (an error status, a connection closed before anything came) is
                // asked again only after a pause, not thousands of times a second.
                failures += 1;
                if failures > 1 || matches!(e, ClientError::Status { .. }) {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
    // The receiver (and with it any pumped socket) and the pump's hold on the user's
    // accounting go first.
    drop(receiver);
    drop(sub);
    let User { acct, .. } = user;
    let rec = match Rc::try_unwrap(acct) {
        Ok(acct) => acct.into_inner().rec,
        Err(shared) => shared.borrow().rec.clone(),
    };
    if rec.subscribed {
        ctx.progress.users.fetch_sub(1, Ordering::Relaxed);
    }
    rec
}

/// How the worker's pump accounts a user's messages: as the user's task would, then
/// whether the user has every id through the end its task has set (`Stop::end`), so
/// that the task is woken to stop, and the `after` of its next poll. `stream`: see
/// [`User::through`].
fn pumped_feed(
    ctx: &Rc<WorkerCtx>,
    acct: &Rc<RefCell<Account>>,
    end: &Rc<Cell<Option<u64>>>,
    stream: bool,
) -> Feed {
    let (ctx, acct, end) = (ctx.clone(), acct.clone(), end.clone());
    Rc::new(move |received| {
        let mut a = acct.borrow_mut();
        a.feed(&ctx, received);
        Fed {
            owed_all: end.get().is_some_and(|end| a.through(stream) >= end),
            cursor: a.cursor,
        }
    })
}

/// What a user has received, shared with the worker's pump when its socket is
/// pumped: the pump accounts messages into it, the user's task reads it.
struct Account {
    rec: UserRecord,
    /// The `after` of the next poll or reconnect.
    cursor: u64,
}

struct User<'a> {
    ctx: &'a WorkerCtx,
    transport: usize,
    /// Borrowed only between awaits: the pump may account into it whenever the task
    /// waits.
    acct: Rc<RefCell<Account>>,
    /// Whether the user has learnt where "now" was when it first connected.
    located: bool,
}

impl User<'_> {
    fn cursor(&self) -> u64 {
        self.acct.borrow().cursor
    }

    /// The highest id up to which the user has what it can still get: on a stream
    /// every id (a missing one may yet come, out of order); on a poll, which asks only
    /// for ids above the highest it has seen, that highest id.
    fn through<R: Receiver>(&self) -> u64 {
        self.acct.borrow().through(R::STREAM)
    }

    /// Counts an error of the user's receiving side. A refusal is an answered request
    /// like any other, but for the "where is now" query, which is not a receiver's
    /// request: a refusal before the user has located itself answered that query (a
    /// subscription is asked for only after it).
    fn error(&self, e: &ClientError) {
        self.count_error(e, self.located);
    }

    fn count_error(&self, e: &ClientError, receivers_request: bool) {
        let mut stats = self.ctx.stats.borrow_mut();
        let stats = &mut stats[self.transport];
        if receivers_request && matches!(e, ClientError::Status { .. }) {
            stats.requests += 1;
        }
        stats.error(e.kind());
        self.ctx.progress.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Connects, learns where "now" is on the first time, and subscribes.
    async fn subscribe<R: Receiver>(
        &mut self,
        plan: &UserPlan,
        sub: &Sub<'_>,
        started: Instant,
    ) -> Result<R, ClientError> {
        let bytes = self.ctx.bytes[plan.transport].clone();
        let target = &self.ctx.shared.targets[plan.target];
        let mut http = Conn::open(target, plan.source, bytes).await?;
        self.ctx.stats.borrow_mut()[plan.transport].connections += 1;
        // Where "now" is, once: a user the server refuses is owed every message from
        // its first try, not from its last (each retry moving its start on would make
        // a user refused all run long owe nothing, and lose nothing).
        if !self.located {
            let now = http.newest(sub.room).await?;
            let mut a = self.acct.borrow_mut();
            a.rec.tracker = Tracker::starting_after(now);
            a.cursor = now;
            self.located = true;
        }
        let rx = R::open(http, sub, self.cursor()).await?;
        let mut stats = self.ctx.stats.borrow_mut();
        let stats = &mut stats[plan.transport];
        if R::STREAM {
            stats.requests += 1;
        }
        let mut a = self.acct.borrow_mut();
        if a.rec.subscribed {
            stats.reconnects += 1;
        } else {
            a.rec.subscribed = true;
            let us = started.elapsed().as_micros() as u64;
            stats.connect.saturating_record(us.max(1));
            self.ctx.progress.users.fetch_add(1, Ordering::Relaxed);
        }
        Ok(rx)
    }

    /// Leaves early: owed what the room holds now, then drains.
    async fn leave(&mut self, plan: &UserPlan, stop: &mut Stop) {
        let target = &self.ctx.shared.targets[plan.target];
        let room = &self.ctx.shared.scenario.room;
        let newest = answered(async {
            let mut http = Conn::open(target, plan.source, Default::default()).await?;
            http.newest(room).await
        })
        .await;
        let end = newest.unwrap_or_else(|e| {
            self.count_error(&e, false);
            self.acct.borrow().rec.tracker.last()
        });
        self.acct.borrow_mut().rec.end = Some(end);
        stop.set(end);
    }

    /// Accounts for what the receiver got.
    fn feed(&mut self, received: Received<'_>) {
        self.acct.borrow_mut().feed(self.ctx, received);
    }
}

impl Account {
    /// [`User::through`], for a `stream` transport or a poll.
    fn through(&self, stream: bool) -> u64 {
        if stream {
            self.rec.tracker.complete_through()
        } else {
            self.rec.tracker.last()
        }
    }

    /// Accounts for what a receiver got.
    fn feed(&mut self, ctx: &WorkerCtx, received: Received<'_>) {
        let now = ctx.shared.clock.now_us();
        let (body, page, wire) = match received {
            Received::Nothing => return,
            Received::Page(body) => (body, true, 0),
            Received::Message { json, wire } => (json, false, wire),
        };
        let window = ctx.shared.window_us;
        let counting = ctx.counting.get();
        let mut stats = ctx.stats.borrow_mut();
        let stats = &mut stats[self.rec.transport];
        let mut delivered = 0;
        // Messages due before the counted window, when this was read within it.
        let mut early = 0;
        let end = self.rec.end;
        // Messages without an id (or with one beyond JSON's exact integers, which no
        // server hands out), and messages changed on their way.
        let mut bad_id = 0;
        let mut altered = 0;
        let mut deliver = |m: &Msg| {
            let Some(id) = m.id.filter(|&id| id <= crate::conn::NOW) else {
                bad_id += 1;
                return;
            };
            let fresh = self.rec.tracker.see(id);
            self.cursor = self.cursor.max(id);
            delivered += 1;
            // Latency is measured from the `client_ts` the server hands back; the text
            // says what was sent. A message on which they differ (or either is
            // missing) was changed on its way: delivered, but no latency is taken
            // from it and it is an error.
            let Some(sent) = m.client_ts.filter(|&ts| m.stamp == Some(ts)) else {
                altered += 1;
                return;
            };
            let due = sent.saturating_sub(m.lag.unwrap_or(0));
            // Read since the worker's snapshot of bytes at the window's start (not
            // just after the window's start by the clock: bytes read before that
            // snapshot are not in the window's count to take off).
            if due < window.0 && counting {
                early += 1;
            }
            // A latency for each counted delivery only: not for a duplicate, nor for
            // what a user that left receives beyond the last id it was owed.
            let owed = fresh && end.is_none_or(|end| id <= end);
            if owed && due >= window.0 && due < window.1 {
                stats
                    .latency
                    .saturating_record(now.saturating_sub(sent).max(1));
                stats
                    .latency_from_due
                    .saturating_record(now.saturating_sub(due).max(1));
            }
        };
        let mut kind = None;
        if page {
            // `wire::page` hands out messages only from a whole, well-formed answer:
            // a malformed one delivers nothing.
            match wire::page(body, &mut deliver) {
                Ok(p) => {
                    self.cursor = self.cursor.max(p.last_id);
                    stats.requests += 1;
                    // Their share of the answer is not part of what the counted
                    // deliveries cost (messages are alike in size).
                    if early > 0 {
                        stats.bytes_before_window += (body.len() * early / p.count) as u64;
                    }
                    if p.count == 0 {
                        stats.empty += 1;
                    }
                    kind = p.gap.then_some("gap");
                }
                Err(_) => kind = Some("protocol"),
            }
        } else {
            match wire::msg(body) {
                Ok(m) if m.gap => kind = Some("gap"),
                Ok(m) if m.id.is_some() => {
                    deliver(&m);
                    // Not part of what the counted deliveries cost, as on a poll.
                    if early > 0 {
                        stats.bytes_before_window += wire as u64;
                    }
                }
                Ok(m) if m.error => kind = Some("server_error"),
                _ => kind = Some("protocol"),
            }
        }
        let counts = [
            (kind, 1),
            (Some("protocol"), bad_id),
            (Some("altered"), altered),
        ];
        for (kind, n) in counts {
            if let Some(kind) = kind.filter(|_| n > 0) {
                stats.errors_of(kind, n);
                ctx.progress.errors.fetch_add(n, Ordering::Relaxed);
            }
        }
        ctx.progress
            .deliveries
            .fetch_add(delivered, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::phase;

    #[test]
    fn phases_spread_over_the_interval() {
        let p: Vec<f64> = (0..1000).map(|i| phase(1, i)).collect();
        assert!(p.iter().all(|&x| (0.0..1.0).contains(&x)));
        let low = p.iter().filter(|&&x| x < 0.5).count();
        assert!((400..600).contains(&low), "{low}");
        assert_eq!(phase(7, 3), phase(7, 3));
    }
}
