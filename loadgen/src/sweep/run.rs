//! Runs a sweep: probe the wire sizes, then every point of the plan, repeat after
//! repeat (so a slow minute on the shared machine spreads over points instead of
//! hitting all repeats of one), each run against a fresh child server unless targets
//! are given. Every run's JSON is written as it finishes and the summary CSV is
//! rewritten after each run, so an interrupted sweep keeps what it measured.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cpus::{Placement, Split};
use crate::error::LoadgenError;
use crate::machine;
use crate::report::Document;
use crate::runner;
use crate::server::ChildServer;
use crate::target::Target;

use super::meta::Meta;
use super::plan::Plan;
use super::record::{self, Record};
use super::{probe, write_report};

fn write(path: &Path, text: &str) -> Result<(), LoadgenError> {
    std::fs::write(path, text).map_err(LoadgenError::io(format!("writing {}", path.display())))
}

/// A room name from `parts`: only the characters a room may hold, at most 64.
fn room(parts: &[&str]) -> String {
    let s: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.chars()
        .rev()
        .take(64)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// The server(s) of one run.
struct Under {
    targets: Vec<Target>,
    /// Stopped when dropped.
    child: Option<ChildServer>,
    /// The child's resident memory before any user connected.
    base_rss: Option<f64>,
}

/// A fresh child server, or the given targets.
fn server(
    given: &[Target],
    server_args: &[String],
    cpus: Option<&Split>,
) -> Result<Under, LoadgenError> {
    if !given.is_empty() {
        return Ok(Under {
            targets: given.to_vec(),
            child: None,
            base_rss: None,
        });
    }
    let child = ChildServer::start(server_args, cpus.map(|c| &c.server[..]))?;
    let base_rss = child
        .target
        .pid
        .and_then(machine::process_usage)
        .map(|(_, rss)| rss);
    Ok(Under {
        targets: vec![child.target.clone()],
        child: Some(child),
        base_rss,
    })
}

/// Runs `plan` into `<out>/<plan.name>/`; the folder.
pub fn sweep(
    plan: &Plan,
    out: &Path,
    given: &[Target],
    command: String,
    quiet: bool,
    pin: bool,
) -> Result<PathBuf, LoadgenError> {
    plan.validate()?;
    // One split for the whole sweep: every point has the same threads on each side.
    let child_args = given.is_empty().then_some(&plan.server_args[..]);
    let (threads, pinned) = crate::cpus::arrange(plan.threads, child_args, pin);
    let dir = out.join(&plan.name);
    std::fs::create_dir_all(dir.join("runs"))
        .map_err(LoadgenError::io(format!("creating {}", dir.display())))?;
    let scenario_toml = plan.to_toml();
    write(&dir.join("scenario.toml"), &scenario_toml)?;
    let stamp = crate::report::unix_now().to_string();

    let probe = {
        let under = server(given, &plan.server_args, pinned.as_ref())?;
        probe::probe(
            &under.targets[0],
            &room(&["probe", &stamp]),
            plan.message_bytes,
        )?
    };
    let meta = Meta::detect(
        command,
        if given.is_empty() {
            "child"
        } else {
            "external"
        },
        Some(probe),
        Placement::of(pinned.as_ref()),
    );
    write(
        &dir.join("meta.json"),
        &(serde_json::to_string_pretty(&meta)? + "\n"),
    )?;

    let points = plan.points()?;
    let total = points.len() * plan.repeat;
    let started = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let mut failures = Vec::new();
    for rep in 1..=plan.repeat {
        for (i, &point) in points.iter().enumerate() {
            let n = (rep - 1) * points.len() + i + 1;
            let slug = format!("{}-{rep}", point.slug());
            let mut sc = plan.scenario(point, &room(&["sw", &stamp, &slug]))?;
            sc.threads = threads;
            sc.progress = !quiet;
            sc.pinned = pinned.clone();
            let Under {
                targets,
                child,
                base_rss,
            } = server(given, &plan.server_args, pinned.as_ref())?;
            let rows = match runner::run(&targets, &sc) {
                Ok(rows) => rows,
                Err(e) => {
                    eprintln!("[{n}/{total}] {slug}: failed: {e}");
                    failures.push(format!("{slug}: {e}"));
                    continue;
                }
            };
            let urls = targets.iter().map(|t| t.url.clone()).collect();
            drop(child);
            let json = format!("runs/{slug}.json");
            let given_urls: Vec<String> = given.iter().map(|t| t.url.clone()).collect();
            let doc = Document::new(
                sc.config_json(&given_urls, &plan.server_args),
                &meta.server_process,
                urls,
                rows,
            );
            doc.write(&dir.join(&json))?;
            if let Err(e) = crate::account::nothing_delivered(&doc.runs) {
                eprintln!("[{n}/{total}] {slug}: failed: {e}");
                failures.push(format!("{slug}: {e} ({json})"));
                continue;
            }
            for row in &doc.runs {
                let mut r = Record::of(row, &sc, rep);
                r.server_rss_base_bytes = base_rss;
                r.json = json.clone();
                eprintln!(
                    "[{n}/{total}] {:<15} users {:>6} rate {:>5} rep {rep}: p50 {:.2} ms p99 {:.2} ms, {}/{} delivered, {:.0} s elapsed",
                    r.mode,
                    r.users,
                    r.rate,
                    r.p50_ms,
                    r.p99_ms,
                    r.received,
                    r.expected,
                    started.elapsed().as_secs_f64()
                );
                records.push(r);
            }
            write(&dir.join("summary.csv"), &record::csv(&records))?;
        }
    }
    if !failures.is_empty() {
        write(&dir.join("failures.txt"), &(failures.join("\n") + "\n"))?;
    }
    if records.is_empty() {
        return Err(LoadgenError::NothingMeasured(format!(
            "every run of the sweep failed ({}); the first: {}",
            dir.join("failures.txt").display(),
            failures.first().map_or("", String::as_str)
        )));
    }
    write_report(&dir)?;
    if !failures.is_empty() {
        return Err(LoadgenError::SomeRunsFailed(format!(
            "{} of {total} runs failed ({}); {} covers the others and says so",
            failures.len(),
            dir.join("failures.txt").display(),
            dir.join("report.html").display()
        )));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::room;

    #[test]
    fn room_names_are_valid() {
        assert_eq!(room(&["sw", "1", "ws-u10-r0p5-1"]), "sw-1-ws-u10-r0p5-1");
        assert_eq!(room(&["a.b"]), "a-b");
        assert_eq!(room(&[&"x".repeat(100)]).len(), 64);
    }
}
