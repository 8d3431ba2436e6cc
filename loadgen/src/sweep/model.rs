//! The analytic model beside the measurement: what each mode should cost where a
//! simple expectation exists, and which measurements are more than 20% off it, with
//! the likely reason. The wire sizes the model needs (a message's JSON, a poll
//! answer's headers) come from a probe of a real server ([`Probe`]), not from guesses.

use serde::{Deserialize, Serialize};

use super::points::{Figure, PointRuns};

/// A measurement this far from the model (relative) is flagged.
pub const TOLERANCE: f64 = 0.20;

/// Wire sizes measured once per sweep on a fresh server (see `probe.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// One message's JSON as every transport writes it.
    pub message_json: f64,
    /// A short-poll answer's status line and headers.
    pub poll_head: f64,
    /// A short-poll answer's body without messages (`{"messages":[],"last_id":N}`).
    pub poll_empty_body: f64,
    /// A long-poll answer's status line and headers.
    pub long_poll_head: f64,
    /// A long-poll answer's body without messages.
    pub long_poll_empty_body: f64,
    /// The probe's room name and user name lengths: a run's message JSON differs
    /// from the probe's by its own names' lengths.
    pub room_len: f64,
    pub user_len: f64,
}

impl Probe {
    /// One message's JSON in a run in `room` whose senders are `u0..u<senders>`.
    pub fn message_json_for(&self, room: &str, senders: u64) -> f64 {
        let senders = senders.max(1);
        // Mean length of the names u0 .. u<senders-1>.
        let digits: u64 = (0..senders.min(100_000))
            .map(|i| i.to_string().len() as u64)
            .sum();
        let user = 1.0 + digits as f64 / senders.min(100_000) as f64;
        let room = if room.is_empty() {
            self.room_len
        } else {
            room.len() as f64
        };
        self.message_json + (room - self.room_len) + (user - self.user_len)
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub mode: String,
    pub users: usize,
    pub rate: f64,
    pub what: &'static str,
    pub formula: String,
    pub model: f64,
    pub measured: f64,
    /// Set when `measured` is more than [`TOLERANCE`] off `model`: the likely reason.
    pub flag: Option<String>,
}

impl Check {
    /// `(measured - model) / model`.
    pub fn deviation(&self) -> f64 {
        if self.model == 0.0 {
            0.0
        } else {
            (self.measured - self.model) / self.model
        }
    }
}

/// SSE framing around one message's JSON: `id: N\n`, `event: message\n`, `data: `,
/// the blank line, and one HTTP chunk's size line and trailing CRLF.
fn sse_overhead(id_digits: usize, json: f64) -> f64 {
    let chunk_hex = format!("{:x}", (json as usize) + 29 + id_digits).len();
    (4 + id_digits + 1 + 15 + 6 + 2) as f64 + (chunk_hex + 4) as f64
}

/// WebSocket frame header of an unmasked server text frame.
fn ws_overhead(json: f64) -> f64 {
    if json < 126.0 { 2.0 } else { 4.0 }
}

/// The checks for `point`, given the probe's sizes.
pub fn checks(p: &PointRuns, probe: Option<&Probe>) -> Vec<Check> {
    let Some(first) = p.runs.first() else {
        return Vec::new();
    };
    let interval_ms = first.poll_interval_s * 1000.0;
    let rtt = p.median(Figure::ConnectP50Ms).unwrap_or(0.0);
    let rpd = p.median(Figure::RequestsPerDelivery);
    let cpu = p.median(Figure::ServerCpuMsPer1k);
    let mut out = Vec::new();
    let mut add = |what, formula: String, model: f64, measured: Option<f64>| {
        if let Some(measured) = measured {
            out.push(Check {
                mode: p.mode.clone(),
                users: p.users,
                rate: p.rate,
                what,
                formula,
                model,
                measured,
                flag: None,
            });
        }
    };
    let mode = p.mode.trim_start_matches("mixed/");
    match mode {
        "poll" => {
            add(
                "latency p50 (ms)",
                format!("interval/2 + round trip = {:.0}/2 + {rtt:.2}", interval_ms),
                interval_ms / 2.0 + rtt,
                p.median(Figure::P50Ms),
            );
            add(
                "latency p99 (ms)",
                format!(
                    "0.99 x interval + round trip = {:.0} + {rtt:.2}",
                    0.99 * interval_ms
                ),
                0.99 * interval_ms + rtt,
                p.median(Figure::P99Ms),
            );
            add(
                "requests/s",
                format!(
                    "users / interval = {} / {:.3} s",
                    p.users, first.poll_interval_s
                ),
                p.users as f64 / first.poll_interval_s,
                p.median(Figure::RequestsPerS),
            );
        }
        "long-poll" => add(
            "requests per delivery",
            "1: each message answers every held poll".into(),
            1.0,
            rpd,
        ),
        _ => {}
    }
    if let Some(pr) = probe {
        let json = pr.message_json_for(&first.room, first.senders);
        let id_digits = (first.sent.max(1) as f64 * 1.3).log10().ceil().max(1.0) as usize;
        let (formula, model) = match mode {
            "poll" => {
                // Requests per delivery as the model expects them: users/interval
                // polls a second over the messages they carry.
                let m_rpd = p.users as f64 / first.poll_interval_s * first.counted_s
                    / first.received.max(1) as f64;
                let per = pr.poll_head + pr.poll_empty_body;
                (
                    format!(
                        "message + 1 + (head {:.0} + empty body {:.0}) x {m_rpd:.3} requests",
                        pr.poll_head, pr.poll_empty_body
                    ),
                    json + 1.0 + per * m_rpd,
                )
            }
            "long-poll" => {
                let per = pr.long_poll_head + pr.long_poll_empty_body;
                (
                    format!(
                        "message + 1 + (head {:.0} + empty body {:.0}) x 1 request",
                        pr.long_poll_head, pr.long_poll_empty_body
                    ),
                    json + 1.0 + per,
                )
            }
            "sse" => (
                "message + id/event/data lines + one chunk's framing".into(),
                json + sse_overhead(id_digits, json),
            ),
            "ws" => ("message + frame header".into(), json + ws_overhead(json)),
            _ => (String::new(), 0.0),
        };
        if model > 0.0 {
            add(
                "bytes per delivery",
                format!("{formula} (message {json:.0} B)"),
                model,
                p.median(Figure::BytesPerDelivery),
            );
        }
    }
    for c in &mut out {
        if c.deviation().abs() > TOLERANCE {
            c.flag = Some(reason(c, p, rpd, cpu));
        }
    }
    out
}

/// The likely reason `c` is off its model.
fn reason(c: &Check, p: &PointRuns, rpd: Option<f64>, cpu: Option<f64>) -> String {
    let high = c.measured > c.model;
    let gap_ms = if p.rate > 0.0 {
        1000.0 / p.rate
    } else {
        f64::INFINITY
    };
    let p50 = p.median(Figure::P50Ms).unwrap_or(0.0);
    let cpu = cpu.map_or_else(String::new, |c| {
        format!(" (server CPU {c:.1} ms per 1,000 deliveries)")
    });
    let mode = c.mode.trim_start_matches("mixed/");
    match (mode, c.what, high) {
        ("poll", w, true) if w.starts_with("latency") => format!(
            "answers queue: {} users poll {:.0} times a second on a shared 2-core machine, \
             and a message that misses a poll waits for the next{cpu}",
            p.users,
            p.users as f64 / p.runs[0].poll_interval_s
        ),
        ("poll", w, false) if w.starts_with("latency") => {
            "few samples per interval: the users' poll phases do not cover the interval evenly"
                .into()
        }
        ("poll", "requests/s", false) => {
            "polls fell behind: a poll that answers late delays that user's next one \
             (missed ticks are not made up)"
                .into()
        }
        ("poll", "requests/s", true) => {
            "the drain is counted: users keep polling until they have the last message".into()
        }
        ("long-poll", "requests per delivery", false) => {
            if p50 > gap_ms / 2.0 {
                format!(
                    "answers carried several messages: delivery took {p50:.0} ms (p50), \
                     against {gap_ms:.0} ms between messages, so messages queued while \
                     each poll was answered and re-sent{cpu}"
                )
            } else {
                "answers carried several messages: some arrived within one re-poll round trip"
                    .into()
            }
        }
        ("long-poll", "requests per delivery", true) => {
            "empty answers: held polls timed out or were answered empty before a message came"
                .into()
        }
        (_, "bytes per delivery", _) => match (mode, rpd) {
            ("poll" | "long-poll", Some(r)) => format!(
                "headers are paid per request: {r:.3} requests per delivery measured, so \
                 {} header bytes per message than modelled",
                if high { "more" } else { "fewer" }
            ),
            ("sse", _) if !high => {
                "several events shared one chunk (messages ready together are written at once)"
                    .into()
            }
            ("sse", _) => "keep-alive comments or the stream's opening bytes in the window".into(),
            _ => "extra frames (pings, reconnects) in the counted window".into(),
        },
        _ => format!(
            "{} than the model; see the runs' JSON",
            if high { "higher" } else { "lower" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::record::Record;

    fn point(mode: &str, users: usize, f: impl Fn(&mut Record)) -> PointRuns {
        let mut r = Record {
            mode: mode.into(),
            users,
            rate: 10.0,
            repeat: 1,
            duration_s: 10.0,
            counted_s: 10.0,
            poll_interval_s: 1.0,
            connect_p50_ms: 0.5,
            sent: 100,
            room: "r".into(),
            senders: 1,
            received: 100 * users as u64,
            expected: 100 * users as u64,
            ..Record::default()
        };
        f(&mut r);
        PointRuns {
            mode: mode.into(),
            users,
            rate: 10.0,
            runs: vec![r],
        }
    }

    const PROBE: Probe = Probe {
        message_json: 150.0,
        poll_head: 100.0,
        poll_empty_body: 28.0,
        long_poll_head: 100.0,
        long_poll_empty_body: 28.0,
        room_len: 1.0,
        user_len: 2.0,
    };

    #[test]
    fn a_runs_message_size_follows_its_names() {
        assert_eq!(PROBE.message_json_for("r", 1), 150.0);
        assert_eq!(PROBE.message_json_for("rrr", 1), 152.0);
        // u0..u9: 2 bytes; u10..u99: 3 bytes.
        assert_eq!(PROBE.message_json_for("r", 100), 150.9);
    }

    #[test]
    fn short_polling_on_the_model_is_not_flagged() {
        let p = point("poll", 100, |r| {
            r.p50_ms = 510.0;
            r.p99_ms = 995.0;
            r.requests = 1000;
            r.bytes_received = (100 * 100) * 151 + 1000 * 128;
        });
        let c = checks(&p, Some(&PROBE));
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].model, 500.5);
        assert_eq!(c[2].model, 100.0);
        assert!(
            (c[3].model - (151.0 + 128.0 * 0.1)).abs() < 1e-9,
            "{}",
            c[3].model
        );
        assert!(c.iter().all(|c| c.flag.is_none()), "{c:?}");
    }

    #[test]
    fn a_measurement_far_off_the_model_is_flagged_with_a_reason() {
        let p = point("poll", 10_000, |r| {
            r.p50_ms = 900.0;
            r.p99_ms = 1000.0;
            r.requests = 70_000;
        });
        let c = checks(&p, None);
        assert!(c[0].flag.as_deref().unwrap().contains("answers queue"));
        assert!(c[1].flag.is_none());
        assert!((c[2].deviation() + 0.3).abs() < 1e-9);
        assert!(c[2].flag.as_deref().unwrap().contains("polls fell behind"));

        let lp = point("long-poll", 10_000, |r| {
            r.p50_ms = 300.0;
            r.requests = r.received / 3;
        });
        let c = checks(&lp, None);
        assert_eq!(c.len(), 1);
        assert!(c[0].flag.as_deref().unwrap().contains("several messages"));

        let ws = point("ws", 10, |r| r.bytes_received = r.received * 154);
        let c = checks(&ws, Some(&PROBE));
        assert_eq!((c[0].model, c[0].flag.clone()), (154.0, None));
        let sse = point("sse", 10, |r| r.bytes_received = r.received * 100);
        assert!(checks(&sse, Some(&PROBE))[0].flag.is_some());
    }
}
