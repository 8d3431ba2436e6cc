//! From what the workers recorded to result rows: merge the statistics, gather the
//! counted ids each target published, and tally every user's deliveries against them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::LoadgenError;
use crate::machine::MachineCpu;
use crate::metrics::Snapshot;
use crate::report::{Connections, LoadgenFigures, Messages, Requests, RunResult, ServerFigures};
use crate::scenario::Mix;
use crate::stats::{Summary, TransportStats, histogram, to_base64};
use crate::tracker::Tally;
use crate::transport::TRANSPORTS;
use crate::worker::{Shared, WorkerReport};

/// The senders' errors of every worker, by kind.
fn send_errors(reports: &[WorkerReport]) -> BTreeMap<&'static str, u64> {
    let mut all = BTreeMap::new();
    for (kind, n) in reports.iter().flat_map(|r| &r.sent.errors) {
        *all.entry(*kind).or_default() += n;
    }
    all
}

/// A row whose users were owed messages and received none measured no latency: after
/// its table and JSON (which show the errors), the run fails with this error rather
/// than ending as if all were well.
pub fn nothing_delivered(rows: &[RunResult]) -> Result<(), LoadgenError> {
    let empty: Vec<String> = rows
        .iter()
        .filter(|r| r.deliveries.expected > 0 && r.deliveries.received == 0)
        .map(|r| {
            format!(
                "{}: none of the {} deliveries owed came (errors: {})",
                r.mode,
                r.deliveries.expected,
                kinds(&r.errors)
            )
        })
        .collect();
    if empty.is_empty() {
        Ok(())
    } else {
        Err(LoadgenError::NothingMeasured(empty.join("; ")))
    }
}

/// A run in which the server accepted none of the counted messages measured nothing:
/// an error naming why (with the server's first refusal), not a table of zeros.
pub fn nothing_counted(reports: &[WorkerReport]) -> Result<(), LoadgenError> {
    let accepted: usize = reports
        .iter()
        .flat_map(|r| &r.sent.counted)
        .map(Vec::len)
        .sum();
    let refused: u64 = reports.iter().map(|r| r.sent.failed).sum();
    if accepted > 0 {
        return Ok(());
    }
    if refused == 0 {
        return Err(LoadgenError::NothingMeasured(
            "no message was due in the counted window".into(),
        ));
    }
    let first = reports
        .iter()
        .find_map(|r| r.sent.first_refusal.as_deref())
        .map_or(String::new(), |answer| format!("; it answered {answer}"));
    Err(LoadgenError::NothingMeasured(format!(
        "the server accepted none of the {refused} messages sent in the counted window \
         (send errors: {}){first}",
        kinds(&send_errors(reports))
    )))
}

/// Error counts as a message says them: `status x3, timeout x1`, or `none`.
fn kinds<K: std::fmt::Display>(errors: &BTreeMap<K, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    let each: Vec<String> = errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    each.join(", ")
}

/// What the run timed and read about itself, besides the workers' reports.
pub struct Measured {
    /// From the counted window's start until the last worker reported (end of drain).
    pub counted: Duration,
    pub loadgen_cpu: crate::machine::CpuTime,
    pub machine_cpu: MachineCpu,
}

/// The rows of one run: its mode, and for a mixed run one per transport as well.
pub fn rows(
    shared: &Shared,
    reports: Vec<WorkerReport>,
    server: Option<Snapshot>,
    measured: Measured,
) -> Vec<RunResult> {
    let Measured {
        counted: counted_time,
        loadgen_cpu,
        machine_cpu,
    } = measured;
    let counted_s = counted_time.as_secs_f64();
    let n = TRANSPORTS.len();
    let targets = shared.targets.len();
    let mut stats = vec![TransportStats::default(); n];
    let mut counted = vec![Vec::new(); targets];
    let mut finals = vec![0u64; targets];
    let mut lag = histogram();
    let mut failed = 0;
    let send_errors = send_errors(&reports);
    for r in &reports {
        for (all, s) in stats.iter_mut().zip(&r.stats) {
            all.merge(s);
        }
        for t in 0..targets {
            counted[t].extend_from_slice(&r.sent.counted[t]);
            finals[t] = finals[t].max(r.sent.max_id[t]);
        }
        lag.add(&r.sent.lag).expect("same bounds");
        failed += r.sent.failed;
    }
    counted.iter_mut().for_each(|c| c.sort_unstable());

    let mut tallies = vec![Tally::default(); n];
    let mut users = vec![0usize; n];
    // Ids above the last one the run published, seen by users that stayed to the end.
    let mut beyond = vec![0u64; n];
    for u in reports.iter().flat_map(|r| &r.users) {
        let end = u.end.unwrap_or(finals[u.target]);
        let tally = u.tracker.tally(&counted[u.target], end, finals[u.target]);
        tallies[u.transport].add(&tally);
        if u.end.is_none() {
            beyond[u.transport] += u.tracker.beyond(end);
        }
        users[u.transport] += 1;
    }

    let sc = &shared.scenario;
    let messages = Messages {
        sent: counted.iter().map(|c| c.len() as u64).sum(),
        failed,
        rate_per_s: sc.rate,
    };
    let row = |mode: String, part_of: Option<&str>, which: &[usize]| {
        let mut s = TransportStats::default();
        let mut tally = Tally::default();
        for &t in which {
            s.merge(&stats[t]);
            tally.add(&tallies[t]);
        }
        let mut errors: BTreeMap<String, u64> =
            s.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let unpublished: u64 = which.iter().map(|&t| beyond[t]).sum();
        if unpublished > 0 {
            errors.insert("beyond_last_id".into(), unpublished);
        }
        if part_of.is_none() {
            for (k, v) in &send_errors {
                errors.insert(format!("send_{k}"), *v);
            }
        }
        let server = server.as_ref().map_or_else(ServerFigures::default, |m| {
            let bytes_sent = which
                .iter()
                .map(|&t| m.bytes_sent.get(&TRANSPORTS[t].label()).copied())
                .sum::<Option<f64>>();
            ServerFigures {
                cpu_seconds: m.cpu_seconds,
                system_cpu_seconds: m.system_cpu_seconds,
                rss_bytes: m.rss_bytes,
                threads: m.threads.map(|t| t as u64),
                bytes_sent,
                // The process's CPU cannot be split between a mixed run's transports,
                // and under one 10 ms tick it was not measured, only not seen.
                cpu_ms_per_1k_deliveries: m
                    .cpu_seconds
                    .filter(|&c| c > 0.0 && tally.received > 0 && part_of.is_none())
                    .map(|c| c * 1e6 / tally.received as f64),
                busy_share: m
                    .cpu_seconds
                    .zip(m.threads)
                    .and_then(|(c, t)| crate::report::busy_share(c, counted_s, t as usize)),
            }
        });
        RunResult {
            mode,
            part_of: part_of.map(str::to_owned),
            users: which.iter().map(|&t| users[t]).sum(),
            duration_s: sc.duration.as_secs_f64(),
            counted_s,
            latency_us: Summary::of(&s.latency),
            latency_from_due_us: Summary::of(&s.latency_from_due),
            send_lag_us: Summary::of(&lag),
            connect_us: Summary::of(&s.connect),
            deliveries: tally,
            messages,
            requests: Requests {
                total: s.requests,
                empty: s.empty,
                per_s: (counted_s > 0.0).then(|| s.requests as f64 / counted_s),
            },
            connections: Connections {
                opened: s.connections,
                reconnects: s.reconnects,
            },
            errors,
            bytes_received: s.bytes_received,
            bytes_per_delivery: (tally.received > 0)
                .then(|| s.bytes_received as f64 / tally.received as f64),
            server,
            loadgen: LoadgenFigures {
                cpu_seconds: loadgen_cpu.total(),
                system_cpu_seconds: loadgen_cpu.system,
                threads: sc.threads,
                busy_share: crate::report::busy_share(loadgen_cpu.total(), counted_s, sc.threads),
            },
            machine_cpu,
            histograms: crate::report::Histograms {
                latency_us: to_base64(&s.latency),
                latency_from_due_us: to_base64(&s.latency_from_due),
            },
        }
    };
    match sc.mix {
        Mix::Only(t) => vec![row(TRANSPORTS[t].name.to_owned(), None, &[t])],
        Mix::Mixed => {
            let all: Vec<usize> = (0..n).collect();
            let mut rows = vec![row("mixed".into(), None, &all)];
            for (t, transport) in TRANSPORTS.iter().enumerate() {
                rows.push(row(
                    format!("mixed/{}", transport.name),
                    Some("mixed"),
                    &[t],
                ));
            }
            rows
        }
    }
}
