//! The binary: one-line errors with a non-zero exit for a bad flag, an unreachable
//! target and a server that does not speak the protocol; a whole run with a JSON file
//! against a target, and against a child `lab` server when one is built.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::{Server, run_binary};

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap()
}

fn one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err}");
}

#[test]
fn a_bad_flag_is_a_clear_error() {
    let out = loadgen(&["--mode", "carrier-pigeon"]);
    one_line_error(&out, "expected one of poll, long-poll, sse, ws, mixed, all");
    let out = loadgen(&["--target", "http://127.0.0.1:9", "--message-bytes", "4"]);
    one_line_error(&out, "--message-bytes must be at least 32");
    // Settings under which nothing would be measured, or the server must refuse.
    let target = ["--target", "http://127.0.0.1:9"];
    for (flag, value, says) in [
        ("--rate", "0", "--rate must be a number > 0"),
        ("--senders", "0", "--senders must be at least 1"),
        ("--duration", "0s", "--duration must be > 0"),
        ("--long-poll-timeout", "61s", "at most 60s"),
        (
            "--rate",
            "0.02",
            "at least one message in the counted window",
        ),
    ] {
        let out = loadgen(&[target[0], target[1], flag, value]);
        one_line_error(&out, says);
    }
    for steps in ["5,3", "0,5", "4,4"] {
        let out = loadgen(&["step-up", "--steps", steps, "--out", "/nonexistent"]);
        one_line_error(&out, "--steps must be client counts");
    }
}

#[test]
fn an_unreachable_target_is_a_one_line_error() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = loadgen(&[
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--mode",
        "ws",
    ]);
    one_line_error(&out, "is unreachable");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn a_server_that_does_not_speak_the_protocol_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(4) {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        }
    });
    let out = loadgen(&["--target", &format!("http://{addr}"), "--mode", "poll"]);
    one_line_error(&out, "does not speak the lab protocol");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

const SHORT_RUN: [&str; 13] = [
    "--mode",
    "ws",
    "--users",
    "3",
    "--duration",
    "1s",
    "--warmup",
    "200ms",
    "--rate",
    "20",
    "--quiet",
    "--server-arg=--threads=2",
    "--seed=2",
];

fn loadgen_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
}

#[test]
fn a_run_against_a_target_prints_a_table_and_writes_json() {
    let server = Server::start();
    let url = server.url();
    let mut args = SHORT_RUN.to_vec();
    args.extend(["--target", &url]);
    let (table, doc) = run_binary(&loadgen_exe(), &args);
    assert!(table.starts_with("mode"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with("ws "), "{table}");
    assert_eq!(doc["server_process"], "external");
    assert_eq!(doc["runs"][0]["deliveries"]["lost"], 0);
}

fn child_run(exe: &std::path::Path) {
    let (_, doc) = run_binary(exe, &SHORT_RUN);
    assert_eq!(doc["server_process"], "child");
    let run = &doc["runs"][0];
    assert_eq!(run["deliveries"]["lost"], 0);
    assert!(run["deliveries"]["received"].as_u64().unwrap() > 0);
    // CPU and memory of the child come from /proc.
    assert!(run["server"]["rss_bytes"].as_f64().unwrap() > 0.0);
    assert!(run["server"]["cpu_seconds"].as_f64().is_some());
    // What the server ran on, as it says itself.
    assert_eq!(run["server"]["threads"], 2);
    // The child is gone: its port no longer answers.
    let target = doc["targets"][0]
        .as_str()
        .unwrap()
        .trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(target).is_err(),
        "{target} still answers"
    );
}

#[test]
fn without_a_target_it_starts_and_stops_a_child_server() {
    let built = loadgen_exe();
    // A copy with no `lab` beside it runs the lab library in a child of itself.
    let alone = std::env::temp_dir().join(format!("loadgen-{}-alone", std::process::id()));
    std::fs::create_dir_all(&alone).unwrap();
    let exe = alone.join("loadgen");
    std::fs::copy(&built, &exe).unwrap();
    child_run(&exe);
    let _ = std::fs::remove_dir_all(alone);
    // Beside a built `lab` (`cargo build`, `cargo test --workspace`), that is the child.
    if built.with_file_name("lab").is_file() {
        child_run(&built);
    }
}

#[test]
fn a_child_server_and_the_loadgen_get_cores_of_their_own_when_they_fit() {
    let cores = loadgen::cpus::allowed().unwrap();
    let mut args: Vec<&str> = SHORT_RUN
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--server-arg"))
        .collect();
    args.extend(["--server-arg=--threads=1", "--threads=1"]);
    let (_, doc) = run_binary(&loadgen_exe(), &args);
    assert_eq!(doc["runs"][0]["deliveries"]["lost"], 0);
    let pinned = &doc["config"]["pinned"];
    if cores.len() >= 2 {
        let side = |name: &str| -> Vec<u64> {
            let list = pinned[name]
                .as_array()
                .unwrap_or_else(|| panic!("{pinned}"));
            list.iter().map(|c| c.as_u64().unwrap()).collect()
        };
        let (server, others) = (side("server"), side("loadgen"));
        assert_eq!(
            server,
            [cores[0] as u64],
            "the server's one thread, one core"
        );
        let rest: Vec<u64> = cores[1..].iter().map(|&c| c as u64).collect();
        assert_eq!(others, rest, "the loadgen the rest");
        // Bound to its share, it still reports the machine's cores.
        let machine = doc["machine"]["cores"].as_u64().unwrap();
        assert!(machine >= cores.len() as u64, "{}", doc["machine"]);
    } else {
        assert!(pinned.is_null(), "one core: nothing to split");
    }

    args.push("--no-pin");
    let (_, doc) = run_binary(&loadgen_exe(), &args);
    assert!(doc["config"]["pinned"].is_null(), "--no-pin");

    // A two-thread server and the default workers (at least one) fit apart only on
    // three cores or more; on fewer they are left to the kernel.
    let (_, doc) = run_binary(&loadgen_exe(), &SHORT_RUN);
    let pinned = &doc["config"]["pinned"];
    assert_eq!(pinned.is_null(), cores.len() < 3, "{}", doc["config"]);
    if !pinned.is_null() {
        assert_eq!(pinned["server"].as_array().unwrap().len(), 2, "{pinned}");
    }
}
