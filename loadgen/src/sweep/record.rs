//! One run of a sweep as one flat record: the figures the report compares, taken
//! from the run's result row, and the CSV that holds them (written after every run,
//! read back to re-render a report without running again).

use std::fmt::Write as _;

use crate::error::LoadgenError;
use crate::report::RunResult;
use crate::scenario::Scenario;
use crate::stats;

/// The figures of one run. Times in milliseconds, memory in bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub mode: String,
    pub users: usize,
    pub rate: f64,
    /// 1-based.
    pub repeat: usize,
    pub duration_s: f64,
    /// The counted window plus the drain, as the run timed it.
    pub counted_s: f64,
    pub poll_interval_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub due_p99_ms: f64,
    pub lag_p99_ms: f64,
    pub connect_p50_ms: f64,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub sent: u64,
    pub requests: u64,
    pub bytes_received: u64,
    pub server_cpu_s: Option<f64>,
    pub server_rss_bytes: Option<f64>,
    /// The server's resident memory before any user connected.
    pub server_rss_base_bytes: Option<f64>,
    pub loadgen_cpu_s: f64,
    /// `kind=count` pairs joined by `;`.
    pub errors: String,
    /// The run's JSON file, relative to the sweep folder.
    pub json: String,
    /// The room (its name is part of every message's JSON).
    pub room: String,
    /// Users that sent (named `u0`, `u1`, ...).
    pub senders: u64,
    /// The share of the machine's CPU time the hypervisor took during the run.
    pub steal_pct: Option<f64>,
    /// The run's `loadgen.busy_share` and `server.busy_share`: how much of their
    /// threads' time each spent on CPU.
    pub loadgen_busy: Option<f64>,
    pub server_busy: Option<f64>,
}

const COLUMNS: [&str; 34] = [
    "mode",
    "users",
    "rate",
    "repeat",
    "duration_s",
    "counted_s",
    "poll_interval_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "due_p99_ms",
    "lag_p99_ms",
    "connect_p50_ms",
    "expected",
    "received",
    "lost",
    "duplicated",
    "out_of_order",
    "sent",
    "requests",
    "bytes_received",
    "server_cpu_s",
    "server_rss_bytes",
    "server_rss_base_bytes",
    "loadgen_cpu_s",
    "errors",
    "json",
    "room",
    "senders",
    "steal_pct",
    "loadgen_busy",
    "server_busy",
    // Derived, for reading the CSV by eye; not read back.
    "requests_per_delivery",
];

/// Columns that summaries written before them lack; they read as unknown.
const LATER_COLUMNS: [&str; 3] = ["steal_pct", "loadgen_busy", "server_busy"];

/// One transport's rows of a mixed run (`mixed/ws`, ...): they repeat the run's
/// machine, server and loadgen readings, which belong to the whole room and cannot be
/// split between its transports.
pub fn is_mixed_part(mode: &str) -> bool {
    mode.starts_with("mixed/")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Record {
    /// The record of `row`, repeat `repeat` of a run at `rate`.
    pub fn of(row: &RunResult, sc: &Scenario, repeat: usize) -> Record {
        let (rate, poll_interval_s) = (sc.rate, sc.poll_interval.as_secs_f64());
        let p95 = stats::from_base64(&row.histograms.latency_us).map_or(0, |h| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.95)
            }
        });
        let d = &row.deliveries;
        Record {
            mode: row.mode.clone(),
            users: row.users,
            rate,
            repeat,
            duration_s: row.duration_s,
            counted_s: row.counted_s,
            poll_interval_s,
            p50_ms: ms(row.latency_us.p50),
            p95_ms: ms(p95),
            p99_ms: ms(row.latency_us.p99),
            max_ms: ms(row.latency_us.max),
            due_p99_ms: ms(row.latency_from_due_us.p99),
            lag_p99_ms: ms(row.send_lag_us.p99),
            connect_p50_ms: ms(row.connect_us.p50),
            expected: d.expected,
            received: d.received,
            lost: d.lost,
            duplicated: d.duplicated,
            out_of_order: d.out_of_order,
            sent: row.messages.sent,
            requests: row.requests.total,
            bytes_received: row.bytes_received,
            server_cpu_s: row.server.cpu_seconds,
            server_rss_bytes: row.server.rss_bytes,
            server_rss_base_bytes: None,
            loadgen_cpu_s: row.loadgen.cpu_seconds,
            errors: row
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
            json: String::new(),
            room: sc.room.clone(),
            senders: sc.senders as u64,
            steal_pct: row.machine_cpu.steal_pct,
            loadgen_busy: row.loadgen.busy_share,
            server_busy: row.server.busy_share,
        }
    }

    fn per_delivery(&self, v: f64) -> Option<f64> {
        (self.received > 0).then(|| v / self.received as f64)
    }

    /// HTTP requests made by receivers per delivered message.
    pub fn requests_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.requests as f64)
    }

    /// Bytes the receivers read per delivered message, headers and framing included.
    pub fn bytes_per_delivery(&self) -> Option<f64> {
        self.per_delivery(self.bytes_received as f64)
    }

    /// Server CPU milliseconds per 1,000 deliveries. None where the server's CPU
    /// moved by less than one tick of its clock: not measured, as the run says.
    pub fn server_cpu_ms_per_1k(&self) -> Option<f64> {
        if is_mixed_part(&self.mode) {
            return None;
        }
        self.per_delivery(self.server_cpu_s.filter(|&c| c > 0.0)? * 1e6)
    }

    /// Loadgen CPU milliseconds per 1,000 deliveries.
    pub fn loadgen_cpu_ms_per_1k(&self) -> Option<f64> {
        if is_mixed_part(&self.mode) {
            return None;
        }
        self.per_delivery(self.loadgen_cpu_s * 1e6)
    }

    /// Server memory per connected user: growth over the empty server's, when known.
    pub fn server_bytes_per_user(&self) -> Option<f64> {
        let grown = self.server_growth_bytes()?;
        (self.users > 0).then(|| grown / self.users as f64)
    }

    /// How far the server's resident memory grew over the empty server's, when known.
    pub fn server_growth_bytes(&self) -> Option<f64> {
        if is_mixed_part(&self.mode) {
            return None;
        }
        let end = self.server_rss_bytes?;
        Some((end - self.server_rss_base_bytes.unwrap_or(0.0)).max(0.0))
    }

    /// Receiver requests per second over the counted window and the drain.
    pub fn requests_per_s(&self) -> Option<f64> {
        (self.counted_s > 0.0).then(|| self.requests as f64 / self.counted_s)
    }

    fn cells(&self) -> Vec<String> {
        let o = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v}"));
        vec![
            self.mode.clone(),
            self.users.to_string(),
            self.rate.to_string(),
            self.repeat.to_string(),
            self.duration_s.to_string(),
            format!("{:.3}", self.counted_s),
            self.poll_interval_s.to_string(),
            self.p50_ms.to_string(),
            self.p95_ms.to_string(),
            self.p99_ms.to_string(),
            self.max_ms.to_string(),
            self.due_p99_ms.to_string(),
            self.lag_p99_ms.to_string(),
            self.connect_p50_ms.to_string(),
            self.expected.to_string(),
            self.received.to_string(),
            self.lost.to_string(),
            self.duplicated.to_string(),
            self.out_of_order.to_string(),
            self.sent.to_string(),
            self.requests.to_string(),
            self.bytes_received.to_string(),
            o(self.server_cpu_s),
            o(self.server_rss_bytes),
            o(self.server_rss_base_bytes),
            format!("{:.3}", self.loadgen_cpu_s),
            self.errors.clone(),
            self.json.clone(),
            self.room.clone(),
            self.senders.to_string(),
            o(self.steal_pct),
            o(self.loadgen_busy),
            o(self.server_busy),
            self.requests_per_delivery()
                .map_or_else(String::new, |v| format!("{v:.4}")),
        ]
    }

    /// One line of a summary whose header is `header`.
    fn parse(header: &[&str], line: &str) -> Result<Record, String> {
        let c: Vec<&str> = line.split(',').collect();
        if c.len() != header.len() {
            return Err(format!("{} cells, expected {}", c.len(), header.len()));
        }
        let cell =
            |name: &str| -> Option<&str> { header.iter().position(|h| *h == name).map(|i| c[i]) };
        let text = |name: &str| cell(name).ok_or_else(|| format!("no {name} column"));
        let f = |name: &str| number::<f64>(name, text(name)?);
        let u = |name: &str| number::<u64>(name, text(name)?);
        let o = |name: &str| match cell(name) {
            None | Some("") => Ok(None),
            Some(v) => number(name, v).map(Some),
        };
        Ok(Record {
            mode: text("mode")?.to_owned(),
            users: u("users")? as usize,
            rate: f("rate")?,
            repeat: u("repeat")? as usize,
            duration_s: f("duration_s")?,
            counted_s: f("counted_s")?,
            poll_interval_s: f("poll_interval_s")?,
            p50_ms: f("p50_ms")?,
            p95_ms: f("p95_ms")?,
            p99_ms: f("p99_ms")?,
            max_ms: f("max_ms")?,
            due_p99_ms: f("due_p99_ms")?,
            lag_p99_ms: f("lag_p99_ms")?,
            connect_p50_ms: f("connect_p50_ms")?,
            expected: u("expected")?,
            received: u("received")?,
            lost: u("lost")?,
            duplicated: u("duplicated")?,
            out_of_order: u("out_of_order")?,
            sent: u("sent")?,
            requests: u("requests")?,
            bytes_received: u("bytes_received")?,
            server_cpu_s: o("server_cpu_s")?,
            server_rss_bytes: o("server_rss_bytes")?,
            server_rss_base_bytes: o("server_rss_base_bytes")?,
            loadgen_cpu_s: f("loadgen_cpu_s")?,
            errors: text("errors")?.to_owned(),
            json: text("json")?.to_owned(),
            room: text("room")?.to_owned(),
            senders: u("senders")?,
            steal_pct: o("steal_pct")?,
            loadgen_busy: o("loadgen_busy")?,
            server_busy: o("server_busy")?,
        })
    }
}

/// The cell `value` of column `name`, as a number.
fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{name}: {value:?}"))
}

/// The CSV of `records`: a header line, then one line per run.
pub fn csv(records: &[Record]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for r in records {
        let _ = writeln!(out, "{}", r.cells().join(","));
    }
    out
}

/// Reads a CSV written by [`csv`].
pub fn parse_csv(text: &str) -> Result<Vec<Record>, LoadgenError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    // Every column this version writes, in its order, less those an older summary
    // may not have had yet.
    let known: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| header.contains(c) || !LATER_COLUMNS.contains(c))
        .collect();
    if header != known {
        return Err(LoadgenError::BadFlag(
            "summary CSV: not a sweep summary (header differs)".into(),
        ));
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            Record::parse(&header, l)
                .map_err(|e| LoadgenError::BadFlag(format!("summary CSV line {}: {e}", i + 2)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Record {
        Record {
            mode: "ws".into(),
            users: 100,
            rate: 10.0,
            repeat: 1,
            duration_s: 8.0,
            counted_s: 8.25,
            poll_interval_s: 1.0,
            p50_ms: 1.5,
            p95_ms: 2.0,
            p99_ms: 3.25,
            received: 8000,
            expected: 8000,
            requests: 100,
            bytes_received: 1_600_000,
            server_cpu_s: Some(0.4),
            server_rss_bytes: Some(12e6),
            server_rss_base_bytes: Some(10e6),
            loadgen_cpu_s: 0.5,
            errors: "closed=1;timeout=2".into(),
            json: "runs/ws-u100-r10-1.json".into(),
            room: "r".into(),
            senders: 100,
            steal_pct: Some(1.25),
            loadgen_busy: Some(0.0625),
            server_busy: Some(0.05),
            ..Record::default()
        }
    }

    #[test]
    fn a_transport_of_a_mixed_run_claims_no_share_of_the_processes() {
        let whole = sample();
        assert_eq!(whole.server_cpu_ms_per_1k(), Some(50.0));
        assert_eq!(whole.loadgen_cpu_ms_per_1k(), Some(62.5));
        assert_eq!(whole.server_bytes_per_user(), Some(20_000.0));
        let part = Record {
            mode: "mixed/ws".into(),
            ..sample()
        };
        assert_eq!(part.server_cpu_ms_per_1k(), None);
        assert_eq!(part.loadgen_cpu_ms_per_1k(), None);
        assert_eq!(part.server_bytes_per_user(), None);
        // What is the transport's own is still given.
        assert_eq!(part.bytes_per_delivery(), Some(200.0));
    }

    #[test]
    fn server_cpu_under_one_tick_is_not_measured_not_zero() {
        let idle = Record {
            server_cpu_s: Some(0.0),
            ..sample()
        };
        assert_eq!(idle.server_cpu_ms_per_1k(), None);
    }

    /// `text` (a CSV of one run) without the columns `names`.
    fn without(text: &str, names: &[&str]) -> String {
        let (header, line) = text.trim_end().split_once('\n').unwrap();
        let keep: Vec<bool> = header.split(',').map(|c| !names.contains(&c)).collect();
        let drop = |l: &str| {
            let cells: Vec<&str> = l
                .split(',')
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c)
                .collect();
            cells.join(",")
        };
        format!("{}\n{}\n", drop(header), drop(line))
    }

    #[test]
    fn a_summary_from_before_the_later_columns_still_reads() {
        let r = sample();
        let text = csv(std::slice::from_ref(&r));
        // Before the steal column, and before the busy shares.
        let oldest = without(&text, &["steal_pct", "loadgen_busy", "server_busy"]);
        let read = parse_csv(&oldest).unwrap();
        assert_eq!(read[0].steal_pct, None);
        assert_eq!(read[0].loadgen_busy, None);
        assert_eq!(read[0].p99_ms, r.p99_ms);
        assert_eq!(read[0].senders, r.senders);
        let older = without(&text, &["loadgen_busy", "server_busy"]);
        let read = parse_csv(&older).unwrap();
        assert_eq!(read[0].steal_pct, r.steal_pct);
        assert_eq!((read[0].loadgen_busy, read[0].server_busy), (None, None));
        // Any other difference in the header is still refused.
        let swapped = oldest.replacen("mode,users", "users,mode", 1);
        assert!(parse_csv(&swapped).is_err());
        assert!(parse_csv(&without(&text, &["senders"])).is_err());
    }

    #[test]
    fn the_csv_reads_back_what_it_wrote() {
        let r = sample();
        let text = csv(&[r.clone(), r.clone()]);
        assert_eq!(text.lines().count(), 3);
        assert_eq!(parse_csv(&text).unwrap(), vec![r.clone(), r.clone()]);
        assert_eq!(r.bytes_per_delivery(), Some(200.0));
        assert_eq!(r.server_cpu_ms_per_1k(), Some(50.0));
        assert_eq!(r.server_bytes_per_user(), Some(20_000.0));
        assert!(parse_csv("a,b\n").is_err());
    }
}
