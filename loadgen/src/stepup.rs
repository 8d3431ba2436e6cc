//! `loadgen step-up`: in the style of the well-known WebSocket shootout, add clients in
//! steps, 4 senders broadcasting, until the p95 latency of a broadcast passes a limit
//! (500 ms by default); the highest client count per transport, and what stopped it:
//! latency, losses or refusals, or the open-file ceiling (20,000 files per process, a
//! hard limit; the server's `--max-connections` of 19,000 sits just under it).
//!
//! One loadgen process is enough to reach that ceiling: its own hard limit is the same
//! 20,000 files, and a step never holds more than the server's `--max-connections`
//! receiving sockets plus its small POST pool. Above 5,000 users the connections are
//! spread over 127.0.0.1-4 (see docs/measurement.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::error::LoadgenError;
use crate::report::{Document, LOADGEN_BUSY};
use crate::runner;
use crate::scenario::Scenario;
use crate::server::ChildServer;
use crate::sweep::plan::parse_mix;
use crate::sweep::record::Record;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen step-up",
    bin_name = "loadgen step-up",
    about = "Add clients in steps until the p95 broadcast latency passes a limit; the highest client count per transport",
    after_help = "See docs/sweep.md. Each step runs against a fresh child lab server."
)]
pub struct StepUpArgs {
    /// Folder name under --out [default: step-up-<unix time>].
    #[arg(long)]
    pub name: Option<String>,
    /// Where the step-up folder goes.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Transports (short polling is left out by default: its p95 is 95% of its interval at any load).
    #[arg(long, value_delimiter = ',', default_value = "long-poll,sse,ws")]
    pub modes: Vec<String>,
    /// Client counts, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,8000,12000,16000,18900"
    )]
    pub steps: Vec<usize>,
    /// The p95 latency limit.
    #[arg(long, default_value = "500ms", value_parser = crate::cli::parse_duration)]
    pub limit: std::time::Duration,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Messages per second across the room.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Counted window per step.
    #[arg(long, default_value = "5s", value_parser = crate::cli::parse_duration)]
    pub duration: std::time::Duration,
    /// Warm-up per step, not counted.
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration)]
    pub warmup: std::time::Duration,
    /// Clients started per second.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp_up: f64,
    /// Loadgen worker threads [default: one per core, less the child server's threads].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra argument for each child `lab` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// No progress bars, one line per step.
    #[arg(long, short)]
    pub quiet: bool,
    /// Let the kernel place each child server and the loadgen on any core (by default
    /// each side is bound to cores of its own when they fit; see docs/measurement.md).
    #[arg(long)]
    pub no_pin: bool,
}

/// The server's connection ceiling: its `--max-connections` (19,000 unless given).
fn max_connections(server_args: &[String]) -> usize {
    let mut it = server_args.iter();
    let mut found = None;
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--max-connections=") {
            found = v.parse().ok();
        } else if a == "--max-connections" {
            found = it.next().and_then(|v| v.parse().ok());
        }
    }
    found.unwrap_or(19_000)
}

/// Milliseconds with a decimal below 10, so that a limit of 0.5 ms is not "1 ms".
fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// What ended a transport's climb.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    Latency {
        p95_ms: f64,
    },
    Incomplete {
        lost: u64,
        errors: String,
    },
    Failed(String),
    /// Every step passed; the next would need more connections than the ceiling.
    FileLimit {
        ceiling: usize,
    },
    /// Every step passed, well under the ceiling: larger `--steps` would say more.
    StepsRanOut,
}

/// A step's outcome against the limit: `None` when it passed.
pub fn judge(r: &Record, limit_ms: f64) -> Option<Stop> {
    if r.lost > 0 || r.duplicated > 0 || r.received < r.expected || r.expected == 0 {
        return Some(Stop::Incomplete {
            lost: r.lost,
            errors: r.errors.clone(),
        });
    }
    (r.p95_ms > limit_ms).then_some(Stop::Latency { p95_ms: r.p95_ms })
}

impl Stop {
    pub fn describe(&self, limit_ms: f64) -> String {
        match self {
            Stop::Latency { p95_ms } => {
                format!("latency: p95 {} ms > {} ms", ms(*p95_ms), ms(limit_ms))
            }
            Stop::Incomplete { lost, errors } => format!(
                "deliveries: {lost} lost{}",
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(", errors {errors}")
                }
            ),
            Stop::Failed(e) => format!("run failed: {e}"),
            Stop::StepsRanOut => "nothing: every step passed (give larger --steps)".into(),
            Stop::FileLimit { ceiling } => format!(
                "file limit, not latency: the next step would pass the server's \
                 --max-connections, {ceiling} (by default 19,000, just under the 20,000 open \
                 files a process may hold)"
            ),
        }
    }
}

/// Runs the steps for every mode; the folder with `step-up.csv` and `step-up.md`.
pub fn step_up(a: &StepUpArgs) -> Result<PathBuf, LoadgenError> {
    // "The highest count that passed" reads the steps in order.
    let climbing = a.steps.first().is_some_and(|&s| s > 0) && a.steps.is_sorted_by(|x, y| x < y);
    if !climbing {
        return Err(LoadgenError::BadFlag(
            "--steps must be client counts of at least 1, each larger than the one before".into(),
        ));
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("step-up-{}", crate::report::unix_now()));
    let dir = a.out.join(&name);
    std::fs::create_dir_all(dir.join("runs"))
        .map_err(LoadgenError::io(format!("creating {}", dir.display())))?;
    let ceiling = max_connections(&a.server_arg);
    let limit_ms = a.limit.as_secs_f64() * 1000.0;
    let (threads, pinned) = crate::cpus::arrange(a.threads, Some(&a.server_arg), !a.no_pin);
    let mut records = Vec::new();
    let mut summary = Vec::new();
    for m in &a.modes {
        let mix = parse_mix(m)?;
        let mut best = 0usize;
        let mut stop = Stop::FileLimit { ceiling };
        for &users in a.steps.iter().filter(|&&u| u <= ceiling) {
            let room = format!(
                "stepup-{}-{}-{users}",
                crate::report::unix_now(),
                mix.name()
            );
            let mut sc = Scenario::new(mix, users, &room);
            sc.senders = a.senders.min(users);
            sc.rate = a.rate;
            sc.duration = a.duration;
            sc.warmup = a.warmup;
            sc.ramp_up = a.ramp_up;
            sc.progress = !a.quiet;
            sc.threads = threads;
            sc.pinned = pinned.clone();
            let child = ChildServer::start(&a.server_arg, pinned.as_ref().map(|p| &p.server[..]))?;
            let targets = vec![child.target.clone()];
            let rows = match runner::run(&targets, &sc) {
                Ok(rows) => rows,
                Err(e) => {
                    stop = Stop::Failed(e.to_string());
                    break;
                }
            };
            drop(child);
            let json = format!("runs/{}-u{users}.json", mix.name());
            let doc = Document::new(
                sc.config_json(&[], &a.server_arg),
                "child",
                targets.iter().map(|t| t.url.clone()).collect(),
                rows,
            );
            doc.write(&dir.join(&json))?;
            let mut r = Record::of(&doc.runs[0], &sc, 1);
            r.json = json;
            eprintln!(
                "step-up {:<9} {users:>6} clients: p95 {:.1} ms, {}/{} delivered, errors {}",
                r.mode,
                r.p95_ms,
                r.received,
                r.expected,
                if r.errors.is_empty() {
                    "none"
                } else {
                    &r.errors
                }
            );
            let verdict = judge(&r, limit_ms);
            records.push(r);
            match verdict {
                None => best = users,
                Some(s) => {
                    stop = s;
                    break;
                }
            }
        }
        // Every step passed: the ceiling stopped the climb only if the steps reach it.
        let reaches = a.steps.iter().any(|&u| u > ceiling) || best * 20 >= ceiling * 19;
        if stop == (Stop::FileLimit { ceiling }) && !reaches {
            stop = Stop::StepsRanOut;
        }
        summary.push((mix.name().to_owned(), best, stop));
    }
    let text = markdown(&summary, &records, a, limit_ms, pinned.as_ref());
    let write = |p: &Path, t: String| {
        std::fs::write(p, t).map_err(LoadgenError::io(format!("writing {}", p.display())))
    };
    write(
        &dir.join("step-up.csv"),
        crate::sweep::record::csv(&records),
    )?;
    write(&dir.join("step-up.md"), text.clone())?;
    crate::report::print(&text);
    Ok(dir)
}

/// What is added to a climb stopped by latency when the loadgen was busy at or above
/// [`LOADGEN_BUSY`] in the step that stopped it: that latency is partly the
/// instrument's.
fn busy_at_stop(mode: &str, stop: &Stop, steps: &[Record]) -> String {
    let last = steps.iter().rev().find(|r| r.mode == mode);
    match (stop, last.and_then(|r| r.loadgen_busy)) {
        (Stop::Latency { .. }, Some(b)) if b >= LOADGEN_BUSY => format!(
            " (the loadgen was busy {:.0}% of its threads' time in that step, so how late \
             it read is part of that latency)",
            b * 100.0
        ),
        _ => String::new(),
    }
}

/// The result as markdown: one line per transport, then every step.
pub fn markdown(
    summary: &[(String, usize, Stop)],
    steps: &[Record],
    a: &StepUpArgs,
    limit_ms: f64,
    pinned: Option<&crate::cpus::Split>,
) -> String {
    let placement = crate::cpus::Placement::of(pinned).sentence();
    let mut s = format!(
        "Step-up: {} senders, {} msg/s, {:.0} s counted per step, p95 limit {limit_ms:.0} ms, steps {:?}. {placement}\n\n\
         | transport | most clients under the limit | stopped by |\n|---|---|---|\n",
        a.senders,
        a.rate,
        a.duration.as_secs_f64(),
        a.steps
    );
    for (mode, best, stop) in summary {
        let _ = writeln!(
            s,
            "| {mode} | {best} | {}{} |",
            stop.describe(limit_ms),
            busy_at_stop(mode, stop, steps)
        );
    }
    s.push_str("\n| transport | clients | p50 ms | p95 ms | p99 ms | received / expected | server CPU s (busy) | loadgen CPU s (busy) | errors |\n|---|---|---|---|---|---|---|---|---|\n");
    let busy = |b: Option<f64>| b.map_or(String::new(), |b| format!(" ({:.0}%)", b * 100.0));
    for r in steps {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} / {} | {}{} | {:.1}{} | {} |",
            r.mode,
            r.users,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.received,
            r.expected,
            r.server_cpu_s.map_or("-".into(), |c| format!("{c:.1}")),
            busy(r.server_busy),
            r.loadgen_cpu_s,
            busy(r.loadgen_busy),
            if r.errors.is_empty() {
                "none"
            } else {
                &r.errors
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_and_the_judgement() {
        assert_eq!(max_connections(&[]), 19_000);
        assert_eq!(max_connections(&["--max-connections=500".into()]), 500);
        assert_eq!(
            max_connections(&["--max-connections".into(), "7".into()]),
            7
        );
        let ok = Record {
            expected: 10,
            received: 10,
            p95_ms: 100.0,
            ..Record::default()
        };
        assert_eq!(judge(&ok, 500.0), None);
        let slow = Record {
            p95_ms: 600.0,
            ..ok.clone()
        };
        assert_eq!(judge(&slow, 500.0), Some(Stop::Latency { p95_ms: 600.0 }));
        let lossy = Record {
            received: 9,
            lost: 1,
            ..ok
        };
        assert!(matches!(
            judge(&lossy, 500.0),
            Some(Stop::Incomplete { lost: 1, .. })
        ));
        assert!(
            Stop::FileLimit { ceiling: 19_000 }
                .describe(500.0)
                .starts_with("file limit")
        );
    }

    #[test]
    fn a_climb_stopped_while_the_loadgen_was_busy_says_so() {
        let step = |mode: &str, users, loadgen_busy| Record {
            mode: mode.into(),
            users,
            expected: 10,
            received: 10,
            p95_ms: 600.0,
            server_busy: Some(0.97),
            loadgen_busy,
            ..Record::default()
        };
        let steps = [
            step("long-poll", 1000, Some(0.2)),
            step("long-poll", 8000, Some(0.94)),
            step("ws", 1000, Some(0.2)),
            step("ws", 8000, Some(0.5)),
        ];
        let a = StepUpArgs::parse_from(["step-up"]);
        let latency = Stop::Latency { p95_ms: 600.0 };
        let summary = [
            ("long-poll".to_owned(), 1000, latency.clone()),
            ("ws".to_owned(), 1000, latency),
        ];
        let md = markdown(&summary, &steps, &a, 500.0, None);
        let line = |mode: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {mode} | 1000 | latency")))
                .unwrap()
                .to_owned()
        };
        assert!(
            line("long-poll").contains("the loadgen was busy 94%"),
            "{md}"
        );
        assert!(!line("ws").contains("busy"), "{md}");
        assert!(
            md.contains(
                "| long-poll | 8000 | 0.0 | 600.0 | 0.0 | 10 / 10 | - (97%) | 0.0 (94%) | none |"
            ),
            "{md}"
        );
        // A climb stopped by losses is not put down to the loadgen's speed.
        let lossy = [(
            "long-poll".to_owned(),
            1000,
            Stop::Incomplete {
                lost: 1,
                errors: String::new(),
            },
        )];
        assert!(!markdown(&lossy, &steps, &a, 500.0, None).contains("loadgen was busy"));
    }
}
