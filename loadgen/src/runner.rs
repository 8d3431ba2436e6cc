//! One run, start to end: check the targets, plan the users, start the workers, read
//! the server's metrics around the counted window, tell users the last id when the
//! senders are done, collect what the workers recorded and account for it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::account::{self, Measured};
use crate::clock::Clock;
use crate::conn::Http;
use crate::error::{ClientError, LoadgenError};
use crate::machine;
use crate::metrics::Snapshot;
use crate::progress::{self, Progress};
use crate::report::RunResult;
use crate::scenario::{Mix, Scenario};
use crate::target::{self, Target};
use crate::transport::TRANSPORTS;
use crate::user::UserPlan;
use crate::wire::MIN_MESSAGE_BYTES;
use crate::worker::{self, Shared, WorkerJob};

/// Runs `fut` on a fresh single-threaded runtime with a `LocalSet`.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    tokio::task::LocalSet::new().block_on(&rt, fut)
}

/// Connects to `target` and checks that `GET /healthz` answers `ok`; the connection.
pub async fn health(target: &Target) -> Result<Http, LoadgenError> {
    let mut http = Http::open(target, None, Default::default())
        .await
        .map_err(|e| LoadgenError::Unreachable {
            target: target.url.clone(),
            reason: e.to_string(),
        })?;
    let not_lab = |reason: String| LoadgenError::NotLab {
        target: target.url.clone(),
        reason,
    };
    let body = http
        .get_body("/healthz")
        .await
        .map_err(|e| not_lab(format!("/healthz: {e}")))?;
    if body.trim_ascii() != b"ok" {
        return Err(not_lab("/healthz did not answer `ok`".into()));
    }
    Ok(http)
}

/// The target is healthy, answers a short poll of `room` and, if `stream`, opens a
/// stream in it (a short poll does not make a room): a server already at
/// `--max-rooms` or `--max-connections` is told before the run rather than found at
/// its end.
async fn preflight(target: &Target, room: &str, stream: bool) -> Result<(), LoadgenError> {
    let not_lab = |what: &str, e: ClientError| LoadgenError::NotLab {
        target: target.url.clone(),
        reason: format!("{what} of room {room}: {e}"),
    };
    let mut http = health(target).await?;
    http.newest(room)
        .await
        .map_err(|e| not_lab("short poll", e))?;
    if !stream {
        return Ok(());
    }
    // The stream is closed as soon as its head has come, with the connection.
    let opened = http
        .try_open(&format!("/rooms/{room}/events"))
        .await
        .map_err(|e| not_lab("SSE stream", e))?;
    opened.map_err(|answer| LoadgenError::Refused {
        target: target.url.clone(),
        reason: format!("an SSE stream in room {room} was answered {answer}"),
    })
}

/// What is read at each end of the counted window.
struct Readings {
    servers: Vec<Result<Snapshot, ClientError>>,
    loadgen_cpu: machine::CpuTime,
    machine: Option<machine::CpuTimes>,
}

impl Readings {
    /// The instant readings first and together (a child server's CPU, the loadgen's,
    /// the machine's), so that they cover one interval; `/metrics` answers after them.
    async fn take(targets: &[Target]) -> Readings {
        let local: Vec<_> = targets.iter().map(Snapshot::local).collect();
        let loadgen_cpu = machine::cpu_time();
        let machine = machine::CpuTimes::read();
        let fetches = targets
            .iter()
            .zip(local)
            .map(|(t, l)| Snapshot::fetch(t, l));
        Readings {
            servers: join_all(fetches).await,
            loadgen_cpu,
            machine,
        }
    }
}

/// Whether the run's users hold connections the server counts (streams, WebSockets,
/// long polls): a short-poll run needs no slot, so it is not refused for want of one.
fn holds_connections(mix: Mix) -> bool {
    !matches!(mix, Mix::Only(t) if TRANSPORTS[t].name == "poll")
}

/// The longest long-poll `timeout_ms` the protocol allows.
const MAX_LONG_POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// Rejects settings that cannot make a meaningful run.
pub fn validate(sc: &Scenario) -> Result<(), LoadgenError> {
    let bad = |m: &str| Err(LoadgenError::BadFlag(m.to_owned()));
    let room_ok = !sc.room.is_empty()
        && sc.room.len() <= 64
        && sc
            .room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !room_ok {
        return bad("--room must be 1 to 64 of A-Z a-z 0-9 _ -");
    }
    if sc.users == 0 {
        return bad("--users must be at least 1");
    }
    if sc.senders == 0 {
        return bad("--senders must be at least 1");
    }
    if sc.senders > sc.users {
        return bad("--senders cannot exceed --users");
    }
    // Without messages a run would print a table of zeros and call it a measurement.
    if !(sc.rate > 0.0 && sc.rate.is_finite()) {
        return bad("--rate must be a number > 0");
    }
    if sc.duration.is_zero() {
        return bad("--duration must be > 0");
    }
    if sc.rate * sc.duration.as_secs_f64() < 1.0 {
        return bad("--rate x --duration must give at least one message in the counted window");
    }
    if sc.long_poll_timeout.is_zero() || sc.long_poll_timeout > MAX_LONG_POLL_TIMEOUT {
        return bad("--long-poll-timeout must be > 0 and at most 60s (the protocol's limit)");
    }
    if !(sc.ramp_up > 0.0 && sc.ramp_up.is_finite()) {
        return bad("--ramp-up must be > 0");
    }
    if sc.message_bytes < MIN_MESSAGE_BYTES {
        return bad(&format!(
            "--message-bytes must be at least {MIN_MESSAGE_BYTES} (the text carries the send lag and time)"
        ));
    }
    if sc.poll_interval.is_zero() {
        return bad("--poll-interval must be > 0");
    }
    if sc.threads == 0 {
        return bad("--threads must be at least 1");
    }
    if sc
        .churn
        .iter()
        .any(|c| c.transport >= TRANSPORTS.len() || c.leave_after <= c.join_after)
    {
        return bad("churn users must leave after they join");
    }
    Ok(())
}

/// Runs `sc` against `targets`: one result row, or for a mixed run one for the room
/// and one per transport.
pub fn run(targets: &[Target], sc: &Scenario) -> Result<Vec<RunResult>, LoadgenError> {
    validate(sc)?;
    if targets.is_empty() {
        return Err(LoadgenError::BadFlag("no target".into()));
    }
    block_on(run_async(targets, sc))
}

async fn run_async(targets: &[Target], sc: &Scenario) -> Result<Vec<RunResult>, LoadgenError> {
    for t in targets {
        preflight(t, &sc.room, holds_connections(sc.mix)).await?;
    }
    let clock = Clock::new();
    let t_start = Instant::now() + Duration::from_millis(20);
    let send_start = t_start + sc.ramp_time();
    let window_start = send_start + sc.warmup;
    let window_end = window_start + sc.duration;
    let shared = Arc::new(Shared {
        targets: targets.to_vec(),
        scenario: sc.clone(),
        clock,
        window_us: (
            clock.at_us(window_start.into_std()),
            clock.at_us(window_end.into_std()),
        ),
        drain: sc.drain_timeout,
    });

    let threads = sc.threads;
    let sources = target::source_addrs(&sc.source_addrs, targets, sc.users + sc.churn.len());
    let source = |k: usize| (!sources.is_empty()).then(|| sources[k % sources.len()]);
    let mut plans: Vec<Vec<UserPlan>> = vec![Vec::new(); threads];
    for k in 0..sc.users {
        plans[k % threads].push(UserPlan {
            index: k,
            transport: sc.mix.transport_of(k),
            target: k % targets.len(),
            start_at: t_start + Duration::from_secs_f64(k as f64 / sc.ramp_up),
            leave_at: None,
            source: source(k),
        });
    }
    for (c, churn) in sc.churn.iter().enumerate() {
        let k = sc.users + c;
        plans[k % threads].push(UserPlan {
            index: k,
            transport: churn.transport,
            target: k % targets.len(),
            start_at: window_start + churn.join_after,
            leave_at: Some(window_start + churn.leave_after),
            source: source(k),
        });
    }

    let (finals_tx, finals_rx) = watch::channel(None);
    let (mut done, mut reports, mut handles, mut counters) = (vec![], vec![], vec![], vec![]);
    for (index, users) in plans.into_iter().enumerate() {
        let (senders_done, done_rx) = oneshot::channel();
        let (report, report_rx) = oneshot::channel();
        let progress = Arc::new(Progress::default());
        let job = WorkerJob {
            index,
            users,
            send_start,
            window_start,
            window_end,
            progress: progress.clone(),
            finals: finals_rx.clone(),
            senders_done,
        };
        handles.push(worker::spawn(shared.clone(), job, report)?);
        done.push(done_rx);
        reports.push(report_rx);
        counters.push(progress);
    }

    let bar = progress::bar(sc.mix.name(), window_end - t_start, sc.progress);
    let ticker = {
        let (bar, users) = (bar.clone(), sc.users + sc.churn.len());
        tokio::task::spawn_local(async move {
            loop {
                let now = Instant::now();
                let phase = if now < send_start {
                    "connect"
                } else if now < window_start {
                    "warmup"
                } else if now < window_end {
                    "counted"
                } else {
                    "drain"
                };
                bar.set_position(now.saturating_duration_since(t_start).as_secs());
                progress::show(&bar, &counters, users, phase);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let lost_worker = |_| LoadgenError::Worker("a worker thread stopped early".into());
    tokio::time::sleep_until(window_start).await;
    let before = Readings::take(targets).await;
    let mut finals = vec![0u64; targets.len()];
    for rx in done {
        for (f, id) in finals.iter_mut().zip(rx.await.map_err(lost_worker)?) {
            *f = (*f).max(id);
        }
    }
    finals_tx.send_replace(Some(finals));
    let mut collected = Vec::with_capacity(reports.len());
    for rx in reports {
        collected.push(rx.await.map_err(lost_worker)?);
    }
    // Every worker reports when its last user is done: the counted window and the drain.
    let counted = Instant::now().saturating_duration_since(window_start);
    let after = Readings::take(targets).await;
    let loadgen_cpu = after.loadgen_cpu - before.loadgen_cpu;
    let machine_cpu = machine::MachineCpu::between(before.machine, after.machine);
    ticker.abort();
    bar.finish_and_clear();
    for h in handles {
        h.join()
            .map_err(|_| LoadgenError::Worker("a worker thread panicked".into()))?;
    }
    account::nothing_counted(&collected)?;
    let pairs: Vec<(Snapshot, Snapshot)> = before
        .servers
        .into_iter()
        .zip(after.servers)
        .filter_map(|(b, a)| Some((b.ok()?, a.ok()?)))
        .collect();
    let server = (pairs.len() == targets.len()).then(|| Snapshot::delta(&pairs));
    Ok(account::rows(
        &shared,
        collected,
        server,
        Measured {
            counted,
            loadgen_cpu,
            machine_cpu,
        },
    ))
}
