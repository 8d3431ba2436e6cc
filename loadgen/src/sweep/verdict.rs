//! The report's opening: a few plain sentences drawn from the medians (which mode has
//! the lowest tail latency at each user count and by how much, what each costs per
//! delivery, whether anything was lost), and the sentence on how much CPU the
//! hypervisor took while the runs were counted.

use std::fmt::Write as _;

use super::points::{Figure, PointRuns, Spread};
use super::record::{Record, is_mixed_part};
use crate::report::LOADGEN_BUSY;

/// How people call a mode.
pub fn title(mode: &str) -> String {
    match mode {
        "poll" => "short polling".into(),
        "long-poll" => "long polling".into(),
        "sse" => "SSE".into(),
        "ws" => "WebSocket".into(),
        other => other.into(),
    }
}

/// `1,000`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency with its unit.
pub fn ms(v: f64) -> String {
    format!("{} ms", latency_ms(v))
}

/// A latency in ms to three significant digits: the histograms hold no more (a
/// bucket near 1 s is half a millisecond wide).
pub fn latency_ms(v: f64) -> String {
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}")
}

/// Server CPU below this in a run is a few ticks of the 10 ms clock: too coarse to rank
/// modes by or to divide by.
const FINE_CPU_S: f64 = 0.2;
/// The server's growth below this is a few steps of its allocator's heap.
const FINE_GROWTH_BYTES: f64 = 1024.0 * 1024.0;

fn complete(p: &PointRuns) -> bool {
    let [expected, received, _, dup, _] = p.deliveries();
    expected > 0 && received == expected && dup == 0
}

/// Runs whose machine lost more than this share of its CPU time to the hypervisor
/// (steal) are named in the report: their latency and CPU figures are less comparable.
pub const STEAL_NOTED_PCT: f64 = 5.0;

/// A sentence on the CPU time the hypervisor took during the runs: the median, the
/// worst run, and how many runs lost more than [`STEAL_NOTED_PCT`].
pub fn steal_sentence(all: &[PointRuns]) -> String {
    let runs: Vec<(&PointRuns, &Record, f64)> = all
        .iter()
        .filter(|p| !is_mixed_part(&p.mode))
        .flat_map(|p| p.runs.iter().map(move |r| (p, r)))
        .filter_map(|(p, r)| Some((p, r, r.steal_pct?)))
        .collect();
    let Some(median) = Spread::of(runs.iter().map(|r| Some(r.2))).map(|s| s.median) else {
        return "CPU time taken by the hypervisor (steal) was not recorded for these runs.".into();
    };
    let (p, worst, most) = runs
        .iter()
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .copied()
        .expect("runs is not empty");
    let noted = match runs.iter().filter(|r| r.2 > STEAL_NOTED_PCT).count() {
        0 => format!("no run lost more than {STEAL_NOTED_PCT:.0}%"),
        n => format!(
            "{n} of {} runs lost more than {STEAL_NOTED_PCT:.0}%, and their latency and CPU \
             figures are less comparable",
            runs.len()
        ),
    };
    format!(
        "CPU time taken by the hypervisor while runs were counted (steal): median {median:.1}%, \
         at most {most:.1}% ({} with {} users at {} msg/s, repeat {}); {noted}.",
        p.mode, p.users, p.rate, worst.repeat,
    )
}

/// A sentence on how busy the loadgen was: the points where it was busy at or above
/// [`LOADGEN_BUSY`] in some run (their latency is partly the instrument's), or the
/// busiest run when none was. `None` for runs recorded before the busy share was.
pub fn busy_sentence(points: &[PointRuns]) -> Option<String> {
    let busiest = |p: &PointRuns| {
        p.runs
            .iter()
            .filter_map(|r| r.loadgen_busy)
            .max_by(f64::total_cmp)
    };
    let known: Vec<(&PointRuns, f64)> = points
        .iter()
        .filter(|p| !is_mixed_part(&p.mode))
        .filter_map(|p| Some((p, busiest(p)?)))
        .collect();
    let at = |p: &PointRuns, b: f64| {
        format!(
            "{} at {} users, {} msg/s ({:.0}%)",
            title(&p.mode),
            thousands(p.users),
            p.rate,
            b * 100.0
        )
    };
    let busy: Vec<String> = known
        .iter()
        .filter(|(_, b)| *b >= LOADGEN_BUSY)
        .map(|&(p, b)| at(p, b))
        .collect();
    if busy.is_empty() {
        let &(p, b) = known.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        return Some(format!(
            "The loadgen was busy at most {:.0}% of its threads' time in any run ({}): no \
             latency here waited on the instrument.",
            b * 100.0,
            at(p, b)
        ));
    }
    Some(format!(
        "The loadgen was busy {:.0}% or more of its threads' time in some run of {} of {} \
         points: {}; there, how late it read is part of the latency.",
        LOADGEN_BUSY * 100.0,
        busy.len(),
        known.len(),
        busy.join(", ")
    ))
}

/// The sentences, for the points at `rate` (the main one) and the others.
pub fn verdict(points: &[PointRuns], rates: &[f64]) -> Vec<String> {
    let Some(&rate) = rates.first() else {
        return vec!["No runs finished.".into()];
    };
    let own: Vec<&PointRuns> = points
        .iter()
        .filter(|p| p.rate == rate && !p.mode.starts_with("mixed"))
        .collect();
    let mut users: Vec<usize> = own.iter().map(|p| p.users).collect();
    users.sort_unstable();
    users.dedup();
    let mut out = Vec::new();

    // Lowest p99 per user count, among points that delivered everything exactly once.
    let mut lines = Vec::new();
    let mut winners = Vec::new();
    let mut all_clear = true;
    for &u in &users {
        let mut at: Vec<(&PointRuns, f64)> = own
            .iter()
            .filter(|p| p.users == u && complete(p))
            .filter_map(|p| Some((*p, p.median(Figure::P99Ms)?)))
            .collect();
        at.sort_by(|a, b| a.1.total_cmp(&b.1));
        let Some(&(best, b99)) = at.first() else {
            continue;
        };
        winners.push(best.mode.clone());
        let mut s = format!("{} users: {} {}", thousands(u), title(&best.mode), ms(b99));
        if let Some(&(next, n99)) = at.get(1) {
            let ratio = n99 / b99.max(1e-3);
            // Within 10% is a tie on a shared machine whose runs vary by more, and so
            // is a lead the repeats do not all show: the two ranges overlap.
            let overlap = match (best.spread(Figure::P99Ms), next.spread(Figure::P99Ms)) {
                (Some(b), Some(n)) => b.max >= n.min,
                _ => false,
            };
            all_clear &= ratio >= 1.1 && !overlap;
            let _ = if ratio < 1.1 || overlap {
                write!(s, ", level with {} ({})", title(&next.mode), ms(n99))
            } else {
                write!(
                    s,
                    ", {ratio:.1}x lower than {} ({})",
                    title(&next.mode),
                    ms(n99)
                )
            };
        }
        lines.push(s);
    }
    if !lines.is_empty() {
        let same = winners.windows(2).all(|w| w[0] == w[1]);
        let head = if same && all_clear {
            format!(
                "At {rate} msg/s, {} has the lowest p99 latency at every user count measured",
                title(&winners[0])
            )
        } else {
            // "Level": within 10%, or the repeats' ranges overlap.
            format!("At {rate} msg/s, the lowest median p99 latency by user count")
        };
        out.push(format!("{head} ({}).", lines.join("; ")));
    }

    // Short polling is bound by its interval, not by load.
    if let Some(p) = own
        .iter()
        .filter(|p| p.mode == "poll")
        .max_by_key(|p| p.users)
    {
        if let (Some(p50), Some(first)) = (p.median(Figure::P50Ms), p.runs.first()) {
            out.push(format!(
                "Short polling's latency is set by its {:.1} s interval (p50 {} at {} users, about half of it) \
                 and it makes {} requests per delivered message there.",
                first.poll_interval_s,
                ms(p50),
                thousands(p.users),
                p.median(Figure::RequestsPerDelivery)
                    .map_or("?".into(), |r| format!("{r:.2}"))
            ));
        }
    }

    // Cost per delivery at the largest user count.
    if let Some(&top) = users.last() {
        let at: Vec<&&PointRuns> = own.iter().filter(|p| p.users == top).collect();
        let list = |f: Figure, unit: &str, digits: usize| -> String {
            let mut v: Vec<(String, f64)> = at
                .iter()
                .filter_map(|p| Some((title(&p.mode), p.median(f)?)))
                .collect();
            v.sort_by(|a, b| a.1.total_cmp(&b.1));
            v.iter()
                .map(|(m, x)| format!("{m} {x:.digits$}{unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cpu = list(Figure::ServerCpuMsPer1k, " ms", 1);
        let bytes = list(Figure::BytesPerDelivery, " B", 0);
        let mem = list(Figure::ServerKibPerUser, " KiB", 1);
        let parts: Vec<String> = [
            ("server CPU per 1,000 deliveries", cpu),
            ("bytes on the wire per delivery", bytes),
            ("server memory per user", mem),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(what, v)| format!("{what}: {v}"))
        .collect();
        let mut s = format!(
            "At {} users, cheapest first: {}.",
            thousands(top),
            parts.join("; ")
        );
        let runs = || at.iter().flat_map(|p| &p.runs);
        if runs().any(|r| r.server_cpu_s.is_some_and(|c| c < FINE_CPU_S)) {
            s.push_str(&format!(
                " The CPU figures there are coarse: some runs' server CPU is under {:.0} ticks of the 10 ms clock.",
                FINE_CPU_S * 100.0
            ));
        }
        if runs().any(|r| {
            r.server_growth_bytes()
                .is_some_and(|b| b < FINE_GROWTH_BYTES)
        }) {
            s.push_str(" The memory figures there are coarse: the server grew by under 1 MiB, in steps of whole pages of its allocator.");
        }
        out.push(s);
    }

    // Other rates, one sentence each.
    for &r in &rates[1..] {
        let mut at: Vec<(&PointRuns, f64)> = points
            .iter()
            .filter(|p| p.rate == r && !p.mode.starts_with("mixed"))
            .filter_map(|p| Some((p, p.median(Figure::P99Ms)?)))
            .collect();
        at.sort_by(|a, b| {
            (a.0.users, a.1)
                .partial_cmp(&(b.0.users, b.1))
                .expect("finite")
        });
        if at.is_empty() {
            continue;
        }
        let parts: Vec<String> = at
            .iter()
            .map(|(p, v)| {
                format!(
                    "{} {} ({} users)",
                    title(&p.mode),
                    ms(*v),
                    thousands(p.users)
                )
            })
            .collect();
        out.push(format!("At {r} msg/s, p99 latency: {}.", parts.join(", ")));
    }

    // The instrument's own cost against the server's, where the server's CPU is
    // enough clock ticks to divide by.
    let ratios: Vec<f64> = points
        .iter()
        .filter(|p| !is_mixed_part(&p.mode))
        .filter(|p| {
            Spread::of(p.runs.iter().map(|r| r.server_cpu_s))
                .is_some_and(|s| s.median >= FINE_CPU_S)
        })
        .filter_map(|p| {
            let l = p.median(Figure::LoadgenCpuMsPer1k)?;
            let s = p.median(Figure::ServerCpuMsPer1k)?;
            (s > 0.0).then(|| l / s)
        })
        .collect();
    if !ratios.is_empty() {
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        out.push(format!(
            "The loadgen's own CPU per delivery was {lo:.1}x to {hi:.1}x the server's across the points \
             where the server used at least {FINE_CPU_S} s of CPU (both measured; see the table)."
        ));
    }

    out.extend(busy_sentence(points));

    // Completeness.
    let bad: Vec<String> = points
        .iter()
        .filter(|p| !complete(p))
        .map(|p| {
            let [e, r, l, d, _] = p.deliveries();
            format!(
                "{} at {} users, {} msg/s: {r} of {e} delivered, {l} lost, {d} duplicated",
                title(&p.mode),
                thousands(p.users),
                p.rate
            )
        })
        .collect();
    if bad.is_empty() {
        out.push("Every run delivered every message exactly once.".into());
    } else {
        out.push(format!("Not everything arrived: {}.", bad.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::points::group;

    fn p(mode: &str, users: usize, p99_ms: f64, lost: u64) -> PointRuns {
        let r = Record {
            mode: mode.into(),
            users,
            rate: 10.0,
            repeat: 1,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            poll_interval_s: 1.0,
            expected: 100,
            received: 100 - lost,
            lost,
            server_cpu_s: Some(0.01 * users as f64),
            bytes_received: 20_000,
            ..Record::default()
        };
        PointRuns {
            mode: mode.into(),
            users,
            rate: 10.0,
            runs: vec![r],
        }
    }

    #[test]
    fn the_steal_sentence_names_the_worst_run_and_counts_the_noisy_ones() {
        let r = |users, repeat, steal_pct| Record {
            mode: if users == 4 { "mixed/ws" } else { "ws" }.into(),
            users,
            rate: 10.0,
            repeat,
            steal_pct,
            ..Record::default()
        };
        let recs = [
            r(10, 1, Some(0.5)),
            r(10, 2, Some(12.3)),
            r(100, 1, Some(1.0)),
            r(100, 2, None),
            // A mixed run's per-transport row: its run is counted once, as `mixed`.
            r(4, 1, Some(50.0)),
        ];
        let s = steal_sentence(&group(&recs));
        assert!(s.contains("median 1.0%"), "{s}");
        assert!(s.contains("at most 12.3%"), "{s}");
        assert!(s.contains("ws with 10 users at 10 msg/s, repeat 2"), "{s}");
        assert!(s.contains("1 of 3 runs lost more than 5%"), "{s}");
        let quiet = steal_sentence(&group(&[r(10, 1, Some(0.5))]));
        assert!(quiet.contains("; no run lost more than 5%."), "{quiet}");
        let unknown = steal_sentence(&group(&[r(10, 1, None)]));
        assert!(unknown.contains("not recorded"), "{unknown}");
    }

    #[test]
    fn a_lead_the_repeats_do_not_all_show_is_level_and_coarse_figures_are_said_so() {
        let run = |mode: &str, repeat, p99_ms, server_cpu_s: f64, rss: f64| Record {
            mode: mode.into(),
            users: 10,
            rate: 10.0,
            repeat,
            p99_ms,
            expected: 1000,
            received: 1000,
            server_cpu_s: Some(server_cpu_s),
            loadgen_cpu_s: 2.0 * server_cpu_s,
            server_rss_bytes: Some(rss),
            server_rss_base_bytes: Some(0.0),
            ..Record::default()
        };
        let say = |ws: [f64; 2], sse: [f64; 2], cpu, rss| {
            let recs = [
                run("ws", 1, ws[0], cpu, rss),
                run("ws", 2, ws[1], cpu, rss),
                run("sse", 1, sse[0], cpu, rss),
                run("sse", 2, sse[1], cpu, rss),
            ];
            verdict(&group(&recs), &[10.0])
        };
        let said = |v: &[String], text: &str| v.iter().any(|s| s.contains(text));
        // Medians 1.3 and 2.0 ms, but one SSE run beat one WebSocket run.
        let v = say([1.0, 1.6], [1.5, 2.5], 0.05, 100_000.0);
        for text in [
            "At 10 msg/s, the lowest median p99 latency",
            "WebSocket 1.30 ms, level with SSE (2.00 ms)",
            "CPU figures there are coarse: some runs' server CPU is under 20 ticks",
            "memory figures there are coarse",
        ] {
            assert!(said(&v, text), "no {text:?} in {v:?}");
        }
        // A server CPU of a few ticks is not divided by.
        assert!(!said(&v, "loadgen's own CPU"), "{v:?}");

        // Every WebSocket run under every SSE run, with enough CPU and memory to read.
        let v = say([1.0, 1.2], [1.5, 2.5], 0.5, 10e6);
        for text in [
            "WebSocket has the lowest p99 latency at every user count",
            "WebSocket 1.10 ms, 1.8x lower than SSE (2.00 ms)",
            "was 2.0x to 2.0x the server's",
        ] {
            assert!(said(&v, text), "no {text:?} in {v:?}");
        }
        assert!(!said(&v, "coarse"), "{v:?}");
    }

    #[test]
    fn the_busy_sentence_names_the_points_where_the_loadgen_queued() {
        let run = |mode: &str, users, repeat, loadgen_busy| Record {
            mode: mode.into(),
            users,
            rate: 10.0,
            repeat,
            loadgen_busy,
            ..Record::default()
        };
        let calm = [run("ws", 100, 1, Some(0.1)), run("ws", 1000, 1, Some(0.42))];
        let s = busy_sentence(&group(&calm)).unwrap();
        assert!(
            s.contains("at most 42%") && s.contains("WebSocket at 1,000 users, 10 msg/s"),
            "{s}"
        );
        let queued = [
            run("ws", 1000, 1, Some(0.42)),
            run("long-poll", 10000, 1, Some(0.5)),
            run("long-poll", 10000, 2, Some(0.96)),
        ];
        let s = busy_sentence(&group(&queued)).unwrap();
        assert!(
            s.contains(
                "in some run of 1 of 2 points: long polling at 10,000 users, 10 msg/s (96%)"
            ),
            "{s}"
        );
        assert!(!s.contains("WebSocket"), "{s}");
        // Runs recorded before the busy share: nothing is said.
        assert_eq!(busy_sentence(&group(&[run("ws", 100, 1, None)])), None);
    }

    #[test]
    fn the_verdict_names_the_winner_and_the_margin() {
        let pts = vec![
            p("poll", 10, 990.0, 0),
            p("sse", 10, 2.0, 0),
            p("ws", 10, 1.0, 0),
            p("sse", 1000, 300.0, 0),
            p("ws", 1000, 100.0, 3),
            p("sse", 100, 2.0, 0),
            p("ws", 100, 2.1, 0),
        ];
        let v = verdict(&pts, &[10.0]);
        assert!(
            v[0].contains("10 users: WebSocket 1.00 ms, 2.0x lower than SSE (2.00 ms)"),
            "{v:?}"
        );
        assert!(
            v[0].contains("100 users: SSE 2.00 ms, level with WebSocket (2.10 ms)"),
            "{v:?}"
        );
        // The lossy WebSocket point does not win at 1,000 users.
        assert!(v[0].contains("1,000 users: SSE 300 ms"), "{v:?}");
        assert!(
            v[1].starts_with("Short polling's latency is set by its 1.0 s interval"),
            "{v:?}"
        );
        assert!(
            v.last()
                .unwrap()
                .contains("WebSocket at 1,000 users, 10 msg/s: 97 of 100 delivered, 3 lost")
        );
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(verdict(&[], &[]), ["No runs finished."]);
    }
}
