//! The `process_*` metrics, read from `/proc/self` at every scrape: CPU seconds to the
//! clock tick (10 ms), resident memory, open and allowed file descriptors.
//!
//! The `prometheus` crate's own process collector counts CPU in whole seconds, too
//! coarse to divide by the deliveries of a ten-second run.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

pub struct ProcessStats {
    cpu_seconds: Counter,
    resident_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
}

/// What one reading of `/proc/self` gives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
}

impl ProcessStats {
    pub fn new() -> Self {
        let counter = |n: &str, h: &str| Counter::with_opts(Opts::new(n, h)).unwrap();
        let gauge = |n: &str, h: &str| Gauge::with_opts(Opts::new(n, h)).unwrap();
        ProcessStats {
            cpu_seconds: counter(
                "process_cpu_seconds_total",
                "User and system CPU time spent, in seconds",
            ),
            resident_bytes: gauge("process_resident_memory_bytes", "Resident memory, in bytes"),
            open_fds: gauge("process_open_fds", "Open file descriptors"),
            max_fds: gauge("process_max_fds", "Maximum number of open file descriptors"),
        }
    }
}

impl Default for ProcessStats {
    fn default() -> Self {
        Self::new()
    }
}

/// CPU time and resident memory of this process, or `None` off Linux.
pub fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses; the fields after its closing
    // parenthesis are fixed: utime and stime are fields 14 and 15, rss is field 24.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    Some(Reading {
        cpu_seconds: (ticks(14)? + ticks(15)?) / hz,
        resident_bytes: ticks(24)? * page,
    })
}

impl Collector for ProcessStats {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.cpu_seconds.desc(),
            self.resident_bytes.desc(),
            self.open_fds.desc(),
            self.max_fds.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(reading) = read() {
            let delta = reading.cpu_seconds - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.resident_bytes.set(reading.resident_bytes);
        }
        if let Some(fds) = open_fds() {
            self.open_fds.set(fds as f64);
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            self.max_fds.set(soft as f64);
        }
        [
            self.cpu_seconds.collect(),
            self.resident_bytes.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
        ]
        .concat()
    }
}

/// The process's open file descriptors. Since Linux 6.2 the size `stat` gives for
/// `/proc/self/fd` is that count, read from the descriptor table's bitmap; listing the
/// folder instead walks every descriptor, which with 10,000 sockets open held the
/// runtime's thread for 7 ms, and 20 ms the first time (a scrape at the start of a
/// measured window delayed the messages being written then). Older kernels give 0;
/// there the folder is listed, less the descriptor the listing itself holds.
fn open_fds() -> Option<u64> {
    match std::fs::metadata("/proc/self/fd").ok()?.len() {
        0 => Some((std::fs::read_dir("/proc/self/fd").ok()?.count() as u64).saturating_sub(1)),
        n => Some(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_is_finer_than_a_second() {
        let before = read().expect("/proc/self/stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = read().unwrap();
        let spent = after.cpu_seconds - before.cpu_seconds;
        assert!(spent > 0.05 && spent < 1.0, "{spent}");
        assert!(after.resident_bytes > 1e6);
    }

    #[test]
    fn open_descriptors_are_counted() {
        let count = || open_fds().expect("/proc/self/fd") as i64;
        let before = count();
        let files: Vec<_> = (0..300)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let during = count();
        drop(files);
        let after = count();
        // Other tests of this binary open and close files meanwhile: a margin for them.
        assert!(
            (250..=400).contains(&(during - before)),
            "{before} {during}"
        );
        assert!(during - after >= 250, "{during} {after}");
    }
}
