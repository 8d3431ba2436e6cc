//! Which cores a child server and the loadgen run on.
//!
//! The loadgen's default of one worker per core, less the child server's threads,
//! leaves the server its own cores only if the kernel keeps them apart, and it does
//! not: on loopback a write wakes the reader on the writer's core when it can
//! (wake-affine placement), so during a burst the loadgen and the server it measures
//! take turns on one core while the other idles. On this 2-core machine that doubled
//! the long-poll p99 at 1,000 users and 10 msg/s (16 ms against 9 ms pinned;
//! results/performance.md). When there are cores enough, the child's threads are
//! given the first allowed cores and the loadgen the rest, as `taskset` would.

use std::io;

/// The cores each side runs on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    pub server: Vec<usize>,
    pub loadgen: Vec<usize>,
}

/// The child server's `server_threads` threads on the first of the `allowed` cores,
/// the loadgen (`loadgen_threads` workers) on the rest; `None` when they do not fit
/// without sharing.
pub fn split(server_threads: usize, loadgen_threads: usize, allowed: &[usize]) -> Option<Split> {
    if server_threads == 0
        || loadgen_threads == 0
        || server_threads + loadgen_threads > allowed.len()
    {
        return None;
    }
    let (server, loadgen) = allowed.split_at(server_threads);
    Some(Split {
        server: server.to_vec(),
        loadgen: loadgen.to_vec(),
    })
}

/// The loadgen's worker threads (`threads`, or the default beside a child started with
/// `child_args`, `None` for an external target) and, when `pin` and there is a child,
/// the split this process is now bound to. The count is settled first: once bound, the
/// loadgen sees only its share of the cores. Used by a run, a sweep and a step-up.
pub fn arrange(
    threads: Option<usize>,
    child_args: Option<&[String]>,
    pin: bool,
) -> (usize, Option<Split>) {
    let threads = threads.unwrap_or_else(|| crate::server::default_threads(child_args));
    let pinned = child_args
        .filter(|_| pin)
        .and_then(|args| beside_child(args, threads));
    (threads, pinned)
}

/// Where a child server and the loadgen ran, for a report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    Bound(Split),
    /// Left to the kernel (`--no-pin`, too few cores, or an external target).
    Kernel,
}

impl Placement {
    pub fn of(pinned: Option<&Split>) -> Placement {
        pinned.map_or(Placement::Kernel, |s| Placement::Bound(s.clone()))
    }

    /// A sentence for a report.
    pub fn sentence(&self) -> String {
        let list = |cpus: &[usize]| {
            let s: Vec<String> = cpus.iter().map(usize::to_string).collect();
            let noun = if cpus.len() == 1 { "core" } else { "cores" };
            format!("{noun} {}", s.join(", "))
        };
        match self {
            Placement::Bound(s) => format!(
                "Each child server was bound to {} and the loadgen to {}, as the \
                 loadgen does when they fit unless --no-pin is given: left to the kernel, \
                 they take turns on one core during a burst.",
                list(&s.server),
                list(&s.loadgen)
            ),
            Placement::Kernel => {
                "The server and the loadgen were placed by the kernel, not bound to cores of \
                 their own."
                    .into()
            }
        }
    }
}

/// Binds this process to the loadgen's share of the cores it may use, beside a child
/// server started with `server_args`, and returns the split (the child's share is for
/// [`crate::server::ChildServer::start`]); `None`, with everything left where it was,
/// when the two would share a core or the kernel refuses.
pub fn beside_child(server_args: &[String], loadgen_threads: usize) -> Option<Split> {
    let server_threads = crate::server::child_threads(server_args);
    let before = allowed().ok()?;
    let split = split(server_threads, loadgen_threads, &before)?;
    let bound = pin_process(&split.loadgen).and_then(|()| match allowed()? {
        now if now == split.loadgen => Ok(()),
        now => Err(io::Error::other(format!(
            "bound to {now:?}, not {:?}",
            split.loadgen
        ))),
    });
    match bound {
        Ok(()) => Some(split),
        Err(e) => {
            eprintln!("not binding the loadgen and the server to cores of their own: {e}");
            // Threads bound before the failure go back to every core they had, so that
            // a child started next is not confined with them.
            let _ = pin_process(&before);
            None
        }
    }
}

/// The cores this thread may run on.
pub fn allowed() -> io::Result<Vec<usize>> {
    allowed_of(0)
}

/// The cores thread or process `pid` may run on (0: the calling thread).
pub fn allowed_of(pid: libc::pid_t) -> io::Result<Vec<usize>> {
    let mut set = empty_set();
    // SAFETY: the size passed is the size of the set written into.
    let rc = unsafe { libc::sched_getaffinity(pid, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET reads a bit of an initialised set; the index is below its size.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// A set of `cpus`, for [`set_thread`]; a core beyond what the set can hold is left out.
pub fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
    let mut set = empty_set();
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: CPU_SET writes a bit of an initialised set, at an index within it.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

fn empty_set() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    unsafe { std::mem::zeroed() }
}

/// Binds thread `tid` (0: the calling thread) to `set`. Async-signal-safe: a child may
/// call it between fork and exec.
pub fn set_thread(tid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: the set is initialised and its size is passed with it.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(set), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds every thread of this process to `cpus`; threads started later inherit it
/// from the thread that starts them.
pub fn pin_process(cpus: &[usize]) -> io::Result<()> {
    let set = set_of(cpus);
    for entry in std::fs::read_dir("/proc/self/task")? {
        let tid = entry?.file_name().to_string_lossy().parse::<libc::pid_t>();
        if let Ok(tid) = tid {
            match set_thread(tid, &set) {
                // A thread that ended since the listing.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Split, split};

    #[test]
    fn the_server_gets_the_first_cores_and_the_loadgen_the_rest() {
        assert_eq!(
            split(1, 1, &[0, 1]),
            Some(Split {
                server: vec![0],
                loadgen: vec![1]
            })
        );
        assert_eq!(
            split(2, 1, &[2, 3, 5, 7]),
            Some(Split {
                server: vec![2, 3],
                loadgen: vec![5, 7]
            })
        );
    }

    #[test]
    fn no_split_when_the_threads_would_share_a_core() {
        assert_eq!(split(2, 1, &[0, 1]), None);
        assert_eq!(split(1, 2, &[0, 1]), None);
        assert_eq!(split(1, 1, &[0]), None);
        assert_eq!(split(0, 1, &[0, 1]), None);
    }

    #[test]
    fn a_thread_bound_to_one_allowed_core_runs_only_there() {
        let allowed = super::allowed().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        // A thread of its own: the test harness's threads keep their cores.
        let seen = std::thread::spawn(move || {
            super::set_thread(0, &super::set_of(&[last])).unwrap();
            (super::allowed().unwrap(), unsafe { libc::sched_getcpu() })
        })
        .join()
        .unwrap();
        assert_eq!(seen, (vec![last], last as i32));
        assert_eq!(
            super::allowed().unwrap(),
            allowed,
            "this thread is unchanged"
        );
    }
}
