//! A worker thread: a single-threaded runtime with a `LocalSet` that runs its share of
//! the users and senders. Everything it records stays on the thread and is handed to
//! the runner once, at the end.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::LoadgenError;
use crate::progress::Progress;
use crate::pump::Pump;
use crate::scenario::Scenario;
use crate::sender::{self, Sent};
use crate::stats::TransportStats;
use crate::target::Target;
use crate::transport::TRANSPORTS;
use crate::user::{UserPlan, UserRecord};

/// What every worker of a run shares.
#[derive(Debug)]
pub struct Shared {
    pub targets: Vec<Target>,
    pub scenario: Scenario,
    pub clock: Clock,
    /// Due times of the counted window, microseconds since the epoch: `[start, end)`.
    pub window_us: (u64, u64),
    /// How long users drain after being told the last id.
    pub drain: Duration,
}

/// A worker's state, shared by its users and senders on its thread.
pub struct WorkerCtx {
    pub shared: Arc<Shared>,
    pub index: usize,
    /// By transport.
    pub stats: RefCell<Vec<TransportStats>>,
    /// Bytes read by users' connections, by transport.
    pub bytes: Vec<Arc<AtomicU64>>,
    pub progress: Arc<Progress>,
    /// Per target, the last id published: set when all senders are done.
    pub finals: Finals,
    /// Set when the worker has taken its snapshot of requests and bytes at the
    /// window's start: what is read from then on is in the window's counts.
    pub counting: Cell<bool>,
    /// The worker's pump for streams and long polls, started by the first user that
    /// needs it.
    pump: OnceCell<Option<Rc<Pump>>>,
}

impl WorkerCtx {
    /// The worker's pump; `None` if it could not be started, or if `LOADGEN_IN_TASK`
    /// (or an older name, `LOADGEN_STREAMS_IN_TASK` or `LOADGEN_WS_IN_TASK`) is set:
    /// each user then reads its own socket, the way to compare the two.
    pub fn pump(&self) -> Option<Rc<Pump>> {
        self.pump
            .get_or_init(|| {
                let in_task = [
                    "LOADGEN_IN_TASK",
                    "LOADGEN_STREAMS_IN_TASK",
                    "LOADGEN_WS_IN_TASK",
                ];
                if in_task.iter().any(|v| std::env::var_os(v).is_some()) {
                    return None;
                }
                Pump::start()
                    .inspect_err(|e| {
                        eprintln!(
                            "loadgen: worker {}: the pump did not start ({e}); \
                             its users read their own sockets",
                            self.index
                        )
                    })
                    .ok()
            })
            .clone()
    }
}

/// The runner's last ids, copied once onto the worker's thread. Users wait on this
/// rather than on the runner's `watch` channel: waiting on that means registering with
/// a lock shared by every worker thread on each message received, this is one
/// registration per user with a lock only its own thread takes.
#[derive(Default)]
pub struct Finals {
    /// `Some(None)`: the runner went away without sending them.
    value: OnceCell<Option<Vec<u64>>>,
    notify: Notify,
}

impl Finals {
    /// `None` until known; then the last ids, or `None` if they never will be.
    pub fn get(&self) -> Option<Option<&[u64]>> {
        self.value.get().map(|v| v.as_deref())
    }

    /// Completes once [`Finals::get`] answers; `enable` it before the first `get`.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    async fn forward(&self, mut rx: watch::Receiver<Option<Vec<u64>>>) {
        let value = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        let _ = self.value.set(value);
        self.notify.notify_waiters();
    }
}

/// What a worker hands over at the end.
pub struct WorkerReport {
    pub stats: Vec<TransportStats>,
    pub users: Vec<UserRecord>,
    pub sent: Sent,
}

/// A worker's work and the ends of its channels to the runner.
pub struct WorkerJob {
    pub index: usize,
    pub users: Vec<UserPlan>,
    /// Sending: `[send_start, window_end)`, counted from `window_start`.
    pub send_start: Instant,
    pub window_start: Instant,
    pub window_end: Instant,
    pub progress: Arc<Progress>,
    pub finals: watch::Receiver<Option<Vec<u64>>>,
    /// Gets this worker's `Sent::max_id` as soon as its senders are done.
    pub senders_done: oneshot::Sender<Vec<u64>>,
}

/// Starts a worker thread.
pub fn spawn(
    shared: Arc<Shared>,
    job: WorkerJob,
    report: oneshot::Sender<WorkerReport>,
) -> Result<std::thread::JoinHandle<()>, LoadgenError> {
    std::thread::Builder::new()
        .name(format!("loadgen-{}", job.index))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let local = tokio::task::LocalSet::new();
            let done = local.block_on(&rt, work(shared, job));
            // The runner may have given up; nothing to do then.
            let _ = report.send(done);
        })
        .map_err(LoadgenError::io("starting a worker thread"))
}

async fn work(shared: Arc<Shared>, job: WorkerJob) -> WorkerReport {
    let ctx = Rc::new(WorkerCtx {
        shared,
        index: job.index,
        stats: RefCell::new(vec![TransportStats::default(); TRANSPORTS.len()]),
        bytes: (0..TRANSPORTS.len()).map(|_| Arc::default()).collect(),
        progress: job.progress,
        finals: Finals::default(),
        counting: Cell::new(false),
        pump: OnceCell::new(),
    });
    let forward = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move { ctx.finals.forward(job.finals).await })
    };
    let handles: Vec<_> = job
        .users
        .into_iter()
        .map(|plan| tokio::task::spawn_local((TRANSPORTS[plan.transport].run)(ctx.clone(), plan)))
        .collect();
    // Requests and bytes are counted from the start of the counted window, like the
    // deliveries they are compared with.
    let at_window = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(job.window_start).await;
            let snapshot = traffic(&ctx);
            ctx.counting.set(true);
            snapshot
        })
    };
    let sent = sender::run(
        ctx.clone(),
        job.send_start,
        job.window_start,
        job.window_end,
    )
    .await;
    let _ = job.senders_done.send(sent.max_id.clone());
    let mut records = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(r) => records.push(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    forward.abort();
    let before = at_window.await.expect("the snapshot task does not panic");
    let after = traffic(&ctx);
    let mut stats = ctx.stats.take();
    for (s, (b, a)) in stats.iter_mut().zip(before.iter().zip(after)) {
        s.requests = a.requests - b.requests;
        s.empty = a.empty - b.empty;
        s.bytes_received = (a.bytes - b.bytes).saturating_sub(s.bytes_before_window);
    }
    WorkerReport {
        stats,
        users: records,
        sent,
    }
}

/// Requests, empty answers and bytes received so far, by transport.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    requests: u64,
    empty: u64,
    bytes: u64,
}

fn traffic(ctx: &WorkerCtx) -> Vec<Traffic> {
    let stats = ctx.stats.borrow();
    stats
        .iter()
        .zip(&ctx.bytes)
        .map(|(s, b)| Traffic {
            requests: s.requests,
            empty: s.empty,
            bytes: b.load(std::sync::atomic::Ordering::Relaxed),
        })
        .collect()
}
