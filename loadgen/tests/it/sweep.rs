//! `loadgen sweep` and `loadgen step-up` end to end on tiny inputs: the folder, its
//! CSV rows, the report with its charts and verdict, re-rendering from the folder,
//! and both ways a step-up stops (latency, the connection ceiling).

use std::path::{Path, PathBuf};

use crate::common::Server;

fn loadgen(args: &[&str]) -> String {
    crate::common::run_ok(Path::new(env!("CARGO_BIN_EXE_loadgen")), args)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_tiny_sweep_writes_runs_csv_and_a_report() {
    let server = Server::start();
    let out = scratch("sweep");
    let url = server.url();
    let args = [
        "sweep",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "tiny",
        "--target",
        &url,
        "--modes",
        "ws,poll",
        "--users",
        "2,4",
        "--rates",
        "20",
        "--repeat",
        "1",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--poll-interval",
        "200ms",
        "--quiet",
    ];
    loadgen(&args);
    let dir = out.join("tiny");

    let csv = read(&dir.join("summary.csv"));
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let points: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        points,
        [("ws", "2"), ("ws", "4"), ("poll", "2"), ("poll", "4")],
        "{csv}"
    );
    // Everything delivered: `lost` is column 17.
    assert!(rows.iter().all(|r| r[16] == "0"), "{csv}");
    assert_eq!(std::fs::read_dir(dir.join("runs")).unwrap().count(), 4);
    let run: serde_json::Value =
        serde_json::from_str(&read(&dir.join("runs/ws-u2-r20-1.json"))).unwrap();
    assert_eq!(run["schema_version"], 1);
    assert_eq!(run["config"]["users"], 2);
    assert_eq!(read(&dir.join("points.csv")).lines().count(), 5);
    let md = read(&dir.join("summary.md"));
    assert!(md.contains("| ws | 4 | 20 |"), "{md}");

    let html = read(&dir.join("report.html"));
    for needle in [
        "<h2>Verdict</h2>",
        "lowest p99 latency",
        "2 cores",
        "The model beside the measurement",
        "interval/2 + round trip",
        "Every run delivered every message exactly once.",
        // Each run read the machine's CPU counters (this is Linux).
        "CPU time taken by the hypervisor while runs were counted (steal): median",
        // A target of its own: nothing was bound.
        "placed by the kernel, not bound to cores of their own",
    ] {
        assert!(html.contains(needle), "no {needle:?} in the report");
    }
    assert!(html.matches("<svg").count() >= 5, "charts missing");
    assert!(!html.contains("<script"));
    assert!(read(&dir.join("charts/latency-p99.svg")).contains("users"));
    assert!(read(&dir.join("meta.json")).contains("\"probe\""));

    // The report can be made again from the folder alone.
    std::fs::remove_file(dir.join("report.html")).unwrap();
    loadgen(&["sweep", "--report-only", dir.to_str().unwrap()]);
    assert_eq!(read(&dir.join("report.html")), html);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_step_up_stops_at_the_latency_limit_or_the_connection_ceiling() {
    let out = scratch("step-up");
    let base = [
        "step-up",
        "--out",
        out.to_str().unwrap(),
        "--modes",
        "ws",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--rate",
        "20",
        "--quiet",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--name",
        "ceiling",
        "--steps",
        "3,6",
        "--server-arg=--max-connections=5",
    ]);
    let md = loadgen(&args);
    assert!(md.contains("| ws | 3 | file limit, not latency"), "{md}");
    assert_eq!(read(&out.join("ceiling/step-up.csv")).lines().count(), 2);

    let mut args = base.to_vec();
    args.extend(["--name", "latency", "--steps", "3", "--limit", "0.001ms"]);
    let md = loadgen(&args);
    assert!(md.contains("| ws | 0 | latency: p95"), "{md}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_sweep_with_a_failed_run_says_so_and_fails() {
    // A room per run, and one for the sweep's probe of wire sizes: the second run
    // finds the server's two rooms taken.
    let server = Server::with(lab::Config {
        max_rooms: 2,
        ..lab::Config::default()
    });
    let out = scratch("sweep-failed");
    let url = server.url();
    let out_arg = out.to_str().unwrap();
    let args = [
        "sweep",
        "--out",
        out_arg,
        "--name",
        "failed",
        "--target",
        &url,
        "--modes",
        "ws",
        "--users",
        "2,3",
        "--rates",
        "20",
        "--repeat",
        "1",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--quiet",
    ];
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(err.contains("1 of 2 runs failed"), "{err}");
    let dir = out.join("failed");
    assert!(read(&dir.join("failures.txt")).contains("ws-u3"));
    let report = read(&dir.join("report.html"));
    assert!(
        report.contains("1 run failed and is left out"),
        "the report hides it"
    );
    assert!(read(&dir.join("summary.md")).contains("1 run failed"));
    let _ = std::fs::remove_dir_all(&out);
}
