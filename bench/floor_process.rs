//! What the two-process floor examples (`write_floor.rs`, `poll_floor.rs`) share: the
//! clock both of their processes read, binding a process to a core of its own, and the
//! second process itself: this executable again with the same flags and some more,
//! which reports on one JSON line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use loadgen::cpus;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for both processes of a pair.
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The clock `clock` in nanoseconds.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    timespec_ns(&ts)
}

/// `ts` in nanoseconds.
pub fn timespec_ns(ts: &libc::timespec) -> u64 {
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Binds this (single-threaded) process to `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    cpus::set_thread(0, &cpus::set_of(&[cpu])).map_err(|e| format!("binding to core {cpu}: {e}"))
}

/// Starts the pair's other process (`what`, for errors): this executable with this
/// process's flags and `more`, its standard output piped for its report.
pub fn start_other(what: &str, more: &[String]) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Command::new(exe)
        .args(std::env::args().skip(1))
        .args(more)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the {what}: {e}"))
}

/// The other process's report: the JSON line it prints when it is done.
pub fn report_of(mut other: Child, what: &str) -> Result<serde_json::Value, String> {
    let mut line = String::new();
    BufReader::new(other.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| format!("the {what}'s report: {e}"))?;
    let _ = other.wait();
    serde_json::from_str(&line).map_err(|e| format!("the {what}'s report {line:?}: {e}"))
}
