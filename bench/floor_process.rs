//! What the two-process floor examples (`write_floor.rs`, `poll_floor.rs`) share: the
//! clock both of their processes read, and binding a process to a core of its own.

use loadgen::cpus;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for both processes of a pair.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Binds this (single-threaded) process to `cpu`.
pub fn pin(cpu: usize) -> Result<(), String> {
    cpus::set_thread(0, &cpus::set_of(&[cpu])).map_err(|e| format!("binding to core {cpu}: {e}"))
}
