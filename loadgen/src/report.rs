//! Results for machines and for people: the JSON document (schema in
//! docs/results.md), a CSV with one line per run, and the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::machine::{Machine, MachineCpu};
use crate::stats::Summary;
use crate::tracker::Tally;

/// Bumped when a field changes meaning or goes away (adding fields does not).
pub const SCHEMA_VERSION: u32 = 1;

/// The JSON file.
#[derive(Debug, Serialize)]
pub struct Document {
    pub schema_version: u32,
    pub tool: Tool,
    pub created_unix_s: u64,
    pub machine: Machine,
    /// `child` (a `lab` process the loadgen started) or `external` (`--target`).
    pub server_process: String,
    pub targets: Vec<String>,
    /// The settings the runs used, as flag names and values.
    pub config: serde_json::Value,
    pub runs: Vec<RunResult>,
}

impl Document {
    /// A document for `runs` made now, on this machine, by this tool.
    pub fn new(
        config: serde_json::Value,
        server_process: &str,
        targets: Vec<String>,
        runs: Vec<RunResult>,
    ) -> Document {
        Document {
            schema_version: SCHEMA_VERSION,
            tool: Tool {
                name: "loadgen".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                git_commit: crate::machine::git_commit(),
            },
            created_unix_s: unix_now(),
            machine: Machine::detect(),
            server_process: server_process.into(),
            targets,
            config,
            runs,
        }
    }

    /// Writes the document as pretty JSON to `path`, making its folder.
    pub fn write(&self, path: &std::path::Path) -> Result<(), crate::LoadgenError> {
        use crate::LoadgenError;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(LoadgenError::io(format!("creating {}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .map_err(LoadgenError::io(format!("writing {}", path.display())))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
    pub git_commit: Option<String>,
}

/// One row: a mode (or, in a mixed run, one transport's share of it).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: String,
    /// For the per-transport rows of a mixed run: `mixed`.
    pub part_of: Option<String>,
    pub users: usize,
    pub duration_s: f64,
    /// The counted window and the drain after it, as timed: the period `requests` and
    /// `bytes_received` are counted over.
    pub counted_s: f64,
    pub latency_us: Summary,
    pub latency_from_due_us: Summary,
    pub send_lag_us: Summary,
    pub connect_us: Summary,
    #[serde(serialize_with = "tally")]
    pub deliveries: Tally,
    pub messages: Messages,
    pub requests: Requests,
    pub connections: Connections,
    pub errors: BTreeMap<String, u64>,
    pub bytes_received: u64,
    pub bytes_per_delivery: Option<f64>,
    pub server: ServerFigures,
    pub loadgen: LoadgenFigures,
    /// The whole machine over the same period: a run on a machine that was busy with
    /// something else, or whose CPUs the hypervisor took, is told apart.
    pub machine_cpu: MachineCpu,
    pub histograms: Histograms,
}

fn tally<S: serde::Serializer>(t: &Tally, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Deliveries", 5)?;
    st.serialize_field("expected", &t.expected)?;
    st.serialize_field("received", &t.received)?;
    st.serialize_field("lost", &t.lost)?;
    st.serialize_field("duplicated", &t.duplicated)?;
    st.serialize_field("out_of_order", &t.out_of_order)?;
    st.end()
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Messages {
    /// Accepted messages due in the counted window, all targets.
    pub sent: u64,
    /// Messages due in the counted window the server did not accept.
    pub failed: u64,
    pub rate_per_s: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Requests {
    pub total: u64,
    pub empty: u64,
    /// `total` over `counted_s`.
    pub per_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Connections {
    pub opened: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerFigures {
    pub cpu_seconds: Option<f64>,
    /// The kernel's part of `cpu_seconds`, for a child server.
    pub system_cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// The server's runtime worker threads, as its `/metrics` says.
    pub threads: Option<u64>,
    pub bytes_sent: Option<f64>,
    pub cpu_ms_per_1k_deliveries: Option<f64>,
    /// [`busy_share`] of `cpu_seconds` over `threads`: near 1, the server had no idle
    /// time, and what it answered late is what the run measures.
    pub busy_share: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoadgenFigures {
    pub cpu_seconds: f64,
    /// The kernel's part of `cpu_seconds`.
    pub system_cpu_seconds: f64,
    pub threads: usize,
    /// [`busy_share`] of `cpu_seconds` over `threads`: at [`LOADGEN_BUSY`] or above,
    /// the loadgen had little idle time, and how late it read is part of the latency.
    pub busy_share: Option<f64>,
}

/// The loadgen's busy share from which a run says that the instrument's own speed is
/// part of its latency: a thread busy 90% of the time has a queue of its own.
pub const LOADGEN_BUSY: f64 = 0.9;

/// How much of the time `threads` threads had over `seconds` was spent on `cpu`
/// seconds of CPU: 1 is every thread busy throughout. `None` when either is zero.
pub fn busy_share(cpu: f64, seconds: f64, threads: usize) -> Option<f64> {
    (seconds > 0.0 && threads > 0).then(|| cpu / (seconds * threads as f64))
}

/// A line saying that the loadgen was busy at or above [`LOADGEN_BUSY`] in `row`, or
/// `None`.
pub fn loadgen_busy_note(row: &RunResult) -> Option<String> {
    let share = row.loadgen.busy_share.filter(|&b| b >= LOADGEN_BUSY)?;
    Some(format!(
        "{}: the loadgen was busy {:.0}% of its {} worker thread{}' time, so how late it \
         read is part of this latency; give it more threads or fewer users",
        row.mode,
        share * 100.0,
        row.loadgen.threads,
        if row.loadgen.threads == 1 { "" } else { "s" },
    ))
}

#[derive(Debug, Clone, Serialize)]
pub struct Histograms {
    pub latency_us: String,
    pub latency_from_due_us: String,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn opt_csv(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(String::new, |v| format!("{v:.digits$}"))
}

fn opt(v: Option<f64>, scale: f64, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.*}", digits, v * scale))
}

const COLUMNS: [&str; 20] = [
    "mode",
    "users",
    "received",
    "expected",
    "lost",
    "dup",
    "ooo",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "due_p99_ms",
    "lag_p99_ms",
    "requests",
    "req/s",
    "B/msg",
    "srv_cpu_ms/1k",
    "lg_cpu_s",
    "steal%",
];

/// `value` of `summary` in milliseconds, or `-` when nothing was measured (not 0.00).
fn latency(summary: &Summary, value: u64) -> String {
    if summary.count == 0 {
        "-".to_owned()
    } else {
        ms(value)
    }
}

fn cells(r: &RunResult) -> [String; 20] {
    let d = &r.deliveries;
    [
        r.mode.clone(),
        r.users.to_string(),
        d.received.to_string(),
        d.expected.to_string(),
        d.lost.to_string(),
        d.duplicated.to_string(),
        d.out_of_order.to_string(),
        latency(&r.latency_us, r.latency_us.p50),
        latency(&r.latency_us, r.latency_us.p90),
        latency(&r.latency_us, r.latency_us.p99),
        latency(&r.latency_us, r.latency_us.p999),
        latency(&r.latency_us, r.latency_us.max),
        latency(&r.latency_from_due_us, r.latency_from_due_us.p99),
        latency(&r.send_lag_us, r.send_lag_us.p99),
        r.requests.total.to_string(),
        opt(r.requests.per_s, 1.0, 0),
        opt(r.bytes_per_delivery, 1.0, 0),
        opt(r.server.cpu_ms_per_1k_deliveries, 1.0, 1),
        format!("{:.2}", r.loadgen.cpu_seconds),
        opt(r.machine_cpu.steal_pct, 1.0, 1),
    ]
}

/// Writes `text` to standard output. A reader that closed its end (`loadgen | head`)
/// must not cost a run what it writes to files after, so that error is let go.
pub fn print(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
}

/// The table for people: one row per run, columns aligned.
pub fn table(rows: &[RunResult]) -> String {
    let body: Vec<[String; 20]> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].len())
                .chain([COLUMNS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cols: &mut dyn Iterator<Item = &str>| {
        for (i, c) in cols.enumerate() {
            if i == 0 {
                let _ = write!(out, "{c:<w$}", w = widths[0]);
            } else {
                let _ = write!(out, "  {c:>w$}", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, &mut COLUMNS.iter().copied());
    for r in &body {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    let errors: Vec<String> = rows
        .iter()
        .filter(|r| !r.errors.is_empty())
        .map(|r| {
            let e: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}: {}", r.mode, e.join(" "))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "errors  {}", errors.join("; "));
    }
    for note in rows.iter().filter_map(loadgen_busy_note) {
        let _ = writeln!(out, "note    {note}");
    }
    out
}

/// The CSV: the table's columns, plus server figures, comma-separated.
pub fn csv(rows: &[RunResult]) -> String {
    let mut out = COLUMNS.join(",");
    out.push_str(",server_cpu_s,server_rss_bytes,server_bytes_sent,bytes_received\n");
    for r in rows {
        // What the table shows as `-` is an empty field here, as in a sweep's CSV.
        let cells = cells(r).map(|c| if c == "-" { String::new() } else { c });
        out.push_str(&cells.join(","));
        let _ = writeln!(
            out,
            ",{},{},{},{}",
            opt_csv(r.server.cpu_seconds, 3),
            opt_csv(r.server.rss_bytes, 0),
            opt_csv(r.server.bytes_sent, 0),
            r.bytes_received
        );
    }
    out
}
