//! Facts about where a run happened: the machine (cores, memory, kernel), the tool's
//! version and git commit, this process's own CPU time (`getrusage`), and how busy the
//! whole machine was, and how much of it the hypervisor took (`/proc/stat`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub kernel: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
        let memory_bytes = meminfo.as_deref().and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
        Machine {
            cores: online_cores(),
            memory_bytes,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
        }
    }
}

/// The machine's online cores: not only those this process may run on (a loadgen bound
/// to its share of them still reports the machine).
fn online_cores() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The commit of the working directory's git checkout, if there is one.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// CPU seconds a process has used, in its own code and in the kernel on its behalf.
/// On loopback the kernel's part includes what a socket operation does for the other
/// end: a read's acknowledgement, received on the writer's socket, runs in the reader's
/// system time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
}

impl CpuTime {
    pub fn total(&self) -> f64 {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// The CPU this process has used so far (`getrusage`).
pub fn cpu_time() -> CpuTime {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full `rusage` into the pointer it is given, which
    // points at a zeroed value of that type; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return CpuTime::default();
    }
    // SAFETY: zero-initialised, and filled in by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    CpuTime {
        user: secs(usage.ru_utime),
        system: secs(usage.ru_stime),
    }
}

/// The CPU time and resident bytes of process `pid`, from /proc: finer than a
/// Prometheus counter of whole seconds.
pub fn process_usage(pid: u32) -> Option<(CpuTime, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let num = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // stat(5): utime is field 14, stime 15, rss (pages) 24; `fields` starts at field 3.
    let (utime, stime, rss_pages) = (num(11)?, num(12)?, num(21)?);
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if ticks <= 0 || page <= 0 {
        return None;
    }
    let cpu = CpuTime {
        user: utime / ticks as f64,
        system: stime / ticks as f64,
    };
    Some((cpu, rss_pages * page as f64))
}

/// The machine's CPU time counters (all CPUs), from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    /// Every state, in seconds: user, nice, system, idle, iowait, irq, softirq, steal.
    total: f64,
    /// Idle and iowait.
    idle: f64,
    /// Time the hypervisor ran something else while a virtual CPU wanted to run.
    steal: f64,
}

impl CpuTimes {
    /// Now, where `/proc/stat` exists.
    pub fn read() -> Option<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        CpuTimes::parse(&text, ticks as f64)
    }

    /// The `cpu` line of `/proc/stat` text, counted in `ticks_per_s`. Guest time is
    /// already inside user and nice, so it is not added again.
    pub fn parse(text: &str, ticks_per_s: f64) -> Option<CpuTimes> {
        if ticks_per_s <= 0.0 {
            return None;
        }
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse::<f64>().map(|t| t / ticks_per_s))
            .collect::<Result<_, _>>()
            .ok()?;
        let field = |i: usize| v.get(i).copied().unwrap_or(0.0);
        if v.len() < 4 {
            return None;
        }
        Some(CpuTimes {
            total: (0..8).map(field).sum(),
            idle: field(3) + field(4),
            steal: field(7),
        })
    }
}

/// How the whole machine's CPUs were used over one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineCpu {
    /// CPU seconds every process (and the kernel) used, the loadgen and a child server
    /// included.
    pub busy_cpu_seconds: Option<f64>,
    /// CPU seconds the hypervisor took from the machine's virtual CPUs.
    pub steal_cpu_seconds: Option<f64>,
    /// `steal_cpu_seconds` as a share of all the CPUs' time, in percent.
    pub steal_pct: Option<f64>,
}

impl MachineCpu {
    /// The use between two readings; all unknown when either is missing.
    pub fn between(before: Option<CpuTimes>, after: Option<CpuTimes>) -> MachineCpu {
        let (Some(b), Some(a)) = (before, after) else {
            return MachineCpu::default();
        };
        let total = a.total - b.total;
        let steal = (a.steal - b.steal).max(0.0);
        let busy = (total - (a.idle - b.idle) - steal).max(0.0);
        MachineCpu {
            busy_cpu_seconds: Some(busy),
            steal_cpu_seconds: Some(steal),
            steal_pct: (total > 0.0).then(|| steal * 100.0 / total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_time().total();
        // Timed, not counted: an optimised build runs a fixed count in under the 10 ms
        // tick that /proc counts CPU in.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        assert!(cpu_time().total() > before);
        assert!(Machine::detect().cores >= 1);
        let (cpu, rss) = process_usage(std::process::id()).unwrap();
        assert!(cpu.user > 0.0 && rss > 1e6, "{cpu:?} {rss}");
        let own = cpu_time();
        assert!(own.user > 0.0 && own.system >= 0.0, "{own:?}");
        // getrusage and /proc count the same time (10 ms ticks in /proc).
        assert!((own.total() - cpu.total()).abs() < 0.05, "{own:?} {cpu:?}");
    }

    #[test]
    fn machine_cpu_is_busy_and_stolen_time_between_two_readings() {
        let before = "cpu  100 5 50 1000 20 3 2 10 7 0\ncpu0 50 2 25 500 10 1 1 5 3 0\nintr 1\n";
        let after = "cpu  300 5 150 1200 30 5 4 50 9 0\ncpu0 1 1 1 1 1 1 1 1 1 0\n";
        let t = |s| CpuTimes::parse(s, 100.0);
        let m = MachineCpu::between(t(before), t(after));
        // user 200 + system 100 + irq 2 + softirq 2 ticks; guest (inside user) not again.
        let near = |v: Option<f64>, want: f64| (v.unwrap() - want).abs() < 1e-9;
        assert!(near(m.busy_cpu_seconds, 3.04), "{m:?}");
        assert!(near(m.steal_cpu_seconds, 0.4), "{m:?}");
        // 5.54 s of CPU time in all, 0.4 s of it stolen.
        let pct = m.steal_pct.unwrap();
        assert!((pct - 40.0 / 5.54).abs() < 1e-9, "{pct}");
        assert_eq!(MachineCpu::between(None, t(after)), MachineCpu::default());
        assert!(CpuTimes::parse("cpu  1 x 3 4\n", 100.0).is_none());
        assert!(CpuTimes::parse("intr 1\n", 100.0).is_none());
        // This machine's own counters move forward.
        if let Some(first) = CpuTimes::read() {
            let again = CpuTimes::read().unwrap();
            let m = MachineCpu::between(Some(first), Some(again));
            assert!(m.busy_cpu_seconds.unwrap() >= 0.0);
            assert!((0.0..=100.0).contains(&m.steal_pct.unwrap_or(0.0)));
        }
    }
}
