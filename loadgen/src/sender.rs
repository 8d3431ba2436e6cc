//! The open-model sender: message `i` of the room is due at `t0 + i / rate` and is
//! sent by sender `i mod senders`, whatever the server does. A worker sends the
//! messages of its own senders over a small pool of keep-alive connections per
//! target; a send that finds the pool exhausted waits, and that wait is send lag.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::StatusCode;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::conn::Http;
use crate::error::ClientError;
use crate::stats::histogram;
use crate::wire;
use crate::worker::WorkerCtx;

/// Connections a worker opens at most per target for sending.
const POOL: usize = 64;

/// How long a POST may take before it counts as failed (a stalled server must not
/// stall the run).
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker's senders did.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Per target: ids of the messages due in the counted window.
    pub counted: Vec<Vec<u64>>,
    /// Per target: the highest id published.
    pub max_id: Vec<u64>,
    /// Send lag of the messages due in the counted window, accepted or not,
    /// microseconds.
    pub lag: Histogram<u64>,
    /// Counted messages that were not accepted.
    pub failed: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// The first refusal the server answered: its status and body.
    pub first_refusal: Option<String>,
}

struct Pool {
    idle: RefCell<Vec<Http>>,
    permits: Semaphore,
}

/// Sends this worker's share of the messages due in `[t0, end)`; messages due from
/// `window_start` on are counted. Returns once every send has finished.
pub async fn run(ctx: Rc<WorkerCtx>, t0: Instant, window_start: Instant, end: Instant) -> Sent {
    let targets = ctx.shared.targets.len();
    let sent = Rc::new(RefCell::new(Sent {
        counted: vec![Vec::new(); targets],
        max_id: vec![0; targets],
        lag: histogram(),
        failed: 0,
        errors: BTreeMap::new(),
        first_refusal: None,
    }));
    let sc = &ctx.shared.scenario;
    let pools: Rc<Vec<Pool>> = Rc::new(
        (0..targets)
            .map(|_| Pool {
                idle: RefCell::new(Vec::new()),
                permits: Semaphore::new(POOL),
            })
            .collect(),
    );
    let mut tasks = JoinSet::new();
    if sc.rate > 0.0 && sc.senders > 0 {
        for i in 0u64.. {
            let due = t0 + Duration::from_secs_f64(i as f64 / sc.rate);
            if due >= end {
                break;
            }
            let sender = (i % sc.senders as u64) as usize;
            if sender % sc.threads != ctx.index {
                continue;
            }
            tokio::time::sleep_until(due).await;
            let job = send_one(
                ctx.clone(),
                pools.clone(),
                sent.clone(),
                sender,
                due,
                due >= window_start,
            );
            tasks.spawn_local(job);
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    Rc::into_inner(sent)
        .expect("every send task has finished")
        .into_inner()
}

async fn send_one(
    ctx: Rc<WorkerCtx>,
    pools: Rc<Vec<Pool>>,
    sent: Rc<RefCell<Sent>>,
    sender: usize,
    due: Instant,
    counted: bool,
) {
    let target = sender % ctx.shared.targets.len();
    let pool = &pools[target];
    let _permit = pool
        .permits
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let (lag, result) = post(&ctx, pool, sender, target, due).await;
    ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
    let mut sent = sent.borrow_mut();
    // How late each message due in the window went out, whatever became of it: a
    // send that failed after a long wait is the lateness the figure is there to show.
    if counted {
        sent.lag.saturating_record(lag.max(1));
    }
    match result {
        Ok(id) => {
            sent.max_id[target] = sent.max_id[target].max(id);
            if counted {
                sent.counted[target].push(id);
            }
        }
        Err((kind, answer)) => {
            if sent.first_refusal.is_none() {
                sent.first_refusal = answer;
            }
            *sent.errors.entry(kind).or_default() += 1;
            ctx.progress.errors.fetch_add(1, Ordering::Relaxed);
            if counted {
                sent.failed += 1;
            }
        }
    }
}

/// What became of one POST: the message's id, or the kind of error (and the server's
/// answer when it refused the message).
type Outcome = Result<u64, (&'static str, Option<String>)>;

/// POSTs one message: its send lag (for one that could not be sent, how late it was
/// when that was known) and what became of it.
async fn post(
    ctx: &WorkerCtx,
    pool: &Pool,
    sender: usize,
    target: usize,
    due: Instant,
) -> (u64, Outcome) {
    let sh = &ctx.shared;
    let lag_at = |now_us: u64| now_us.saturating_sub(sh.clock.at_us(due.into_std()));
    // A server closes keep-alive connections left idle (the lab after
    // `--idle-timeout-ms`); hyper has seen that close, and such a connection is
    // dropped here rather than failing the send.
    let idle = std::iter::from_fn(|| pool.idle.borrow_mut().pop()).find(Http::is_open);
    let mut http = match idle {
        Some(http) => http,
        None => match Http::open(&sh.targets[target], None, Default::default()).await {
            Ok(http) => http,
            Err(e) => return (lag_at(sh.clock.now_us()), Err((e.kind(), None))),
        },
    };
    let sent_us = sh.clock.now_us();
    let lag = lag_at(sent_us);
    let outcome = async {
        let text = wire::text_with_stamp(lag, sent_us, sh.scenario.message_bytes);
        let body = wire::post_body(&format!("u{sender}"), &text, sent_us);
        let path = format!("/rooms/{}/messages", sh.scenario.room);
        let (status, answer) = tokio::time::timeout(POST_TIMEOUT, http.post_json(&path, body))
            .await
            .map_err(|_| (ClientError::Timeout.kind(), None))?
            .map_err(|e| (e.kind(), None))?;
        pool.idle.borrow_mut().push(http);
        if status != StatusCode::CREATED {
            return Err((
                ClientError::status(status.as_u16(), &path).kind(),
                Some(crate::conn::said(status, &answer)),
            ));
        }
        let posted: wire::Posted =
            serde_json::from_slice(&answer).map_err(|_| ("protocol", None))?;
        Ok(posted.id)
    };
    (lag, outcome.await)
}
