//! `report.html`: the verdict, the machine and versions, the charts (inline SVG, no
//! JavaScript), the summary table with medians and ranges, delivery completeness,
//! and the model beside the measurement; and `summary.md`, the verdict and a table of
//! medians for a README.

use std::fmt::Write as _;

use super::chart::{self, Spec};
use super::meta::Meta;
use super::model::{self, Check};
use super::points::{self, Figure, PointRuns, Spread};
use super::verdict::{self, latency_ms, thousands, title};

/// The charts drawn against users, for the main rate: (file stem, spec).
pub fn chart_specs() -> Vec<(&'static str, Spec<'static>)> {
    let s = |title, y_label, figure, log_y| Spec {
        title,
        y_label,
        figure,
        log_y,
    };
    vec![
        (
            "latency-p50",
            s("p50 latency against users", "ms (log)", Figure::P50Ms, true),
        ),
        (
            "latency-p99",
            s("p99 latency against users", "ms (log)", Figure::P99Ms, true),
        ),
        (
            "requests-per-delivery",
            s(
                "HTTP requests per delivered message",
                "requests",
                Figure::RequestsPerDelivery,
                false,
            ),
        ),
        (
            "bytes-per-delivery",
            s(
                "Bytes on the wire per delivered message",
                "bytes",
                Figure::BytesPerDelivery,
                false,
            ),
        ),
        (
            "server-cpu",
            s(
                "Server CPU per 1,000 deliveries",
                "ms (log)",
                Figure::ServerCpuMsPer1k,
                true,
            ),
        ),
        (
            "server-memory",
            s(
                "Server memory per connected user",
                "KiB",
                Figure::ServerKibPerUser,
                false,
            ),
        ),
    ]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn spread(s: Option<Spread>, digits: usize) -> String {
    spread_with(s, |v| format!("{v:.digits$}"))
}

fn spread_with(s: Option<Spread>, show: impl Fn(f64) -> String) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.min == s.max => show(s.median),
        Some(s) => format!(
            "{} <small>[{}-{}]</small>",
            show(s.median),
            show(s.min),
            show(s.max)
        ),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1340px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}\
td:first-child,th:first-child{text-align:left}small{color:#777}.flag{background:#fff1d6}.bad{background:#fde0e0}\
.charts{display:flex;flex-wrap:wrap;gap:8px}.charts svg{border:1px solid #eee}.verdict li{margin:.4em 0}code{font-size:12px}";

/// The report page and the charts in it as separate SVG files: (stem, svg).
/// `failures`: one line per run that failed (failures.txt), said before the verdict.
pub fn render(
    all: &[PointRuns],
    meta: &Meta,
    scenario_toml: &str,
    failures: &[String],
) -> (String, Vec<(String, String)>) {
    let modes = points::modes(all);
    let rates = points::rates(all);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Transport sweep</title><style>{STYLE}</style></head><body>\
         <h1>Which transport, at which scale?</h1><h2>Verdict</h2><ul class=\"verdict\">"
    );
    if let Some(said) = failed(failures) {
        let _ = write!(h, "<li class=\"bad\">{}</li>", esc(&said));
    }
    for s in verdict::verdict(all, &rates) {
        let _ = write!(h, "<li>{}</li>", esc(&s));
    }
    h.push_str("</ul>");

    let m = &meta.machine;
    let _ = write!(
        h,
        "<h2>Machine and versions</h2><p>{} cores, {} memory, Linux {}; open files per process: {}. \
         loadgen {} at commit <code>{}</code>; server: {} (the <code>lab</code> built from the same tree; a fresh process per run for a child). \
         Created at Unix time {}.</p><p>Command: <code>{}</code></p><p>{}</p>",
        m.cores,
        m.memory_bytes.map_or("?".into(), |b| format!(
            "{:.1} GiB",
            b as f64 / (1u64 << 30) as f64
        )),
        esc(m.kernel.as_deref().unwrap_or("?")),
        meta.open_files_limit
            .map_or("?".into(), |n| thousands(n as usize)),
        esc(&meta.tool.version),
        esc(&format!(
            "{}{}",
            meta.tool.git_commit.as_deref().unwrap_or("unknown"),
            if meta.git_dirty == Some(true) {
                " with uncommitted changes"
            } else {
                ""
            }
        )),
        esc(&meta.server_process),
        meta.created_unix_s,
        esc(&meta.command),
        esc(&verdict::steal_sentence(all)),
    );
    if let Some(placement) = &meta.placement {
        let _ = write!(h, "<p>{}</p>", esc(&placement.sentence()));
    }

    let mut files = Vec::new();
    if let Some(&rate) = rates.first() {
        let _ = write!(
            h,
            "<h2>Against users, at {rate} msg/s</h2><p>Lines join the medians of the repeats; the shaded band is their min-max range.</p><div class=\"charts\">"
        );
        for (stem, spec) in chart_specs() {
            if let Some(svg) = chart::svg(&spec, all, &modes, rate) {
                h.push_str(svg.trim_start_matches(|c| c != '<'));
                files.push((stem.to_owned(), svg));
            }
        }
        h.push_str("</div>");
    }

    h.push_str(
        "<h2>Every point</h2><p>Median of the repeats, <small>[min-max]</small>. Latency is receive time minus the actual send \
         (<code>client_ts</code>); the p99 from the due time counts from when each message was scheduled instead, so a \
         sender that fell behind its schedule (coordinated omission) shows there and not in the other columns; requests and bytes are the receivers' (headers and framing included); memory per user is the \
         server's resident growth over its empty state, divided by users.</p><table><tr><th>mode</th><th>users</th><th>msg/s</th>\
         <th>runs</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>p99 ms from due time</th><th>requests / delivery</th><th>bytes / delivery</th>\
         <th>server CPU ms / 1k</th><th>loadgen CPU ms / 1k</th><th>server KiB / user</th><th>received / expected</th>\
         <th>lost</th><th>dup</th><th>out of order</th><th>errors</th></tr>",
    );
    for p in all {
        let [e, r, l, d, o] = p.deliveries();
        let class = if l > 0 || d > 0 { " class=\"bad\"" } else { "" };
        let _ = write!(
            h,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{r} / {e}</td><td>{l}</td><td>{d}</td><td>{o}</td><td>{}</td></tr>",
            esc(&p.mode),
            thousands(p.users),
            p.rate,
            p.runs.len(),
            spread_with(p.spread(Figure::P50Ms), latency_ms),
            spread_with(p.spread(Figure::P95Ms), latency_ms),
            spread_with(p.spread(Figure::P99Ms), latency_ms),
            spread_with(p.spread(Figure::DueP99Ms), latency_ms),
            spread(p.spread(Figure::RequestsPerDelivery), 3),
            spread(p.spread(Figure::BytesPerDelivery), 0),
            spread(p.spread(Figure::ServerCpuMsPer1k), 2),
            spread(p.spread(Figure::LoadgenCpuMsPer1k), 2),
            spread(p.spread(Figure::ServerKibPerUser), 1),
            esc(&p.errors()),
        );
    }
    h.push_str("</table>");

    let checks: Vec<Check> = all
        .iter()
        .flat_map(|p| model::checks(p, meta.probe.as_ref()))
        .collect();
    let flagged = checks.iter().filter(|c| c.flag.is_some()).count();
    let _ = write!(
        h,
        "<h2>The model beside the measurement</h2><p>{} comparisons, {flagged} more than {:.0}% off the model (highlighted, with the likely reason). \
         The round trip is the median connect time (user start to subscription answered). Wire sizes come from a probe of a fresh server: {}.</p>\
         <table><tr><th>mode</th><th>users</th><th>msg/s</th><th>what</th><th>model</th><th>measured</th><th>off by</th><th>formula</th><th>likely reason</th></tr>",
        checks.len(),
        model::TOLERANCE * 100.0,
        meta.probe.map_or("none (no probe)".into(), |p| format!(
            "message JSON {:.0} B (room name of {:.0} characters, user u0; each run's figure is adjusted for its own names), \
             short-poll answer head {:.0} B and empty body {:.0} B, long-poll head {:.0} B and empty body {:.0} B",
            p.message_json, p.room_len, p.poll_head, p.poll_empty_body, p.long_poll_head, p.long_poll_empty_body
        )),
    );
    for c in &checks {
        let class = if c.flag.is_some() {
            " class=\"flag\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:+.0}%</td><td>{}</td><td>{}</td></tr>",
            esc(&c.mode),
            thousands(c.users),
            c.rate,
            c.what,
            c.model,
            c.measured,
            c.deviation() * 100.0,
            esc(&c.formula),
            esc(c.flag.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table>");
    let _ = writeln!(
        h,
        "<h2>Scenario</h2><pre>{}</pre><p>Each run's JSON is in <code>runs/</code> (schema: docs/results.md); \
         <code>summary.csv</code> has one line per run, <code>points.csv</code> one per point. \
         How each figure is measured: docs/measurement.md; the sweep: docs/sweep.md. Mode names: {}.</p></body></html>",
        esc(scenario_toml),
        modes
            .iter()
            .map(|m| format!("{m} = {}", title(m)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (h, files)
}

/// `points.csv`: one line per point with medians and ranges.
pub fn points_csv(all: &[PointRuns]) -> String {
    let figs = [
        ("p50_ms", Figure::P50Ms),
        ("p95_ms", Figure::P95Ms),
        ("p99_ms", Figure::P99Ms),
        ("due_p99_ms", Figure::DueP99Ms),
        ("requests_per_delivery", Figure::RequestsPerDelivery),
        ("bytes_per_delivery", Figure::BytesPerDelivery),
        ("server_cpu_ms_per_1k", Figure::ServerCpuMsPer1k),
        ("loadgen_cpu_ms_per_1k", Figure::LoadgenCpuMsPer1k),
        ("server_kib_per_user", Figure::ServerKibPerUser),
    ];
    let mut out = String::from("mode,users,rate,runs");
    for (name, _) in figs {
        let _ = write!(out, ",{name},{name}_min,{name}_max");
    }
    out.push_str(",expected,received,lost,duplicated,out_of_order\n");
    for p in all {
        let _ = write!(out, "{},{},{},{}", p.mode, p.users, p.rate, p.runs.len());
        for (_, f) in figs {
            match p.spread(f) {
                Some(s) => {
                    let _ = write!(out, ",{:.4},{:.4},{:.4}", s.median, s.min, s.max);
                }
                None => out.push_str(",,,"),
            }
        }
        let [e, r, l, d, o] = p.deliveries();
        let _ = writeln!(out, ",{e},{r},{l},{d},{o}");
    }
    out
}

/// The sentence that says which runs failed and are missing from every figure.
fn failed(failures: &[String]) -> Option<String> {
    let first = failures.first()?;
    Some(format!(
        "{} run{} failed and {} left out of every figure below (failures.txt); the first: {first}",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" },
        if failures.len() == 1 { "is" } else { "are" },
    ))
}

/// `summary.md`: the verdict and a table of medians, for a README.
pub fn summary_markdown(all: &[PointRuns], failures: &[String]) -> String {
    let rates = points::rates(all);
    let mut out = String::new();
    if let Some(said) = failed(failures) {
        let _ = writeln!(out, "- **{said}**");
    }
    for s in verdict::verdict(all, &rates) {
        let _ = writeln!(out, "- {s}");
    }
    out.push_str(
        "\n| mode | users | msg/s | p50 ms | p99 ms | p99 ms from due | requests / delivery | bytes / delivery \
         | server CPU ms / 1k | loadgen CPU ms / 1k | server KiB / user | lost, dup |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let med = |p: &PointRuns, f: Figure, digits: usize| {
        p.median(f).map_or("-".into(), |v| format!("{v:.digits$}"))
    };
    let lat = |p: &PointRuns, f: Figure| p.median(f).map_or("-".into(), latency_ms);
    let mut sorted: Vec<&PointRuns> = all.iter().collect();
    sorted.sort_by(|a, b| {
        (rates.iter().position(|r| *r == a.rate), a.users)
            .cmp(&(rates.iter().position(|r| *r == b.rate), b.users))
    });
    for p in sorted {
        let [_, _, l, d, _] = p.deliveries();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {l}, {d} |",
            p.mode,
            thousands(p.users),
            p.rate,
            lat(p, Figure::P50Ms),
            lat(p, Figure::P99Ms),
            lat(p, Figure::DueP99Ms),
            med(p, Figure::RequestsPerDelivery, 2),
            med(p, Figure::BytesPerDelivery, 0),
            med(p, Figure::ServerCpuMsPer1k, 1),
            med(p, Figure::LoadgenCpuMsPer1k, 1),
            med(p, Figure::ServerKibPerUser, 1),
        );
    }
    out
}
