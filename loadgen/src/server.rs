//! The server under test when no `--target` is given: the `lab` binary next to the
//! loadgen's own executable, started as a child process on a free loopback port and
//! stopped at the end (see docs/measurement.md for why a separate process). When no
//! `lab` binary has been built there, the child is this executable itself, which
//! serves the lab library when its first argument is [`SERVE_ARG`].

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::LoadgenError;
use crate::runner;
use crate::target::Target;

/// How long a child server has to answer `/healthz`.
const READY: Duration = Duration::from_secs(10);

/// The first argument that makes the loadgen executable serve the lab instead.
pub const SERVE_ARG: &str = "__serve-lab";

pub struct ChildServer {
    child: Child,
    pub target: Target,
}

impl ChildServer {
    /// The `lab` binary beside the running executable.
    pub fn binary() -> Result<PathBuf, LoadgenError> {
        let exe =
            std::env::current_exe().map_err(LoadgenError::io("finding the loadgen executable"))?;
        let lab = exe.with_file_name(format!("lab{}", std::env::consts::EXE_SUFFIX));
        if lab.is_file() {
            Ok(lab)
        } else {
            Err(LoadgenError::Server(format!(
                "no lab binary at {} (build it with `cargo build --release`, or pass --target URL)",
                lab.display()
            )))
        }
    }

    /// Starts `lab --addr 127.0.0.1:<free port> <extra args>` and waits until it is
    /// healthy; bound to the cores `cpus` when given (see [`crate::cpus`]).
    pub fn start(
        extra_args: &[String],
        cpus: Option<&[usize]>,
    ) -> Result<ChildServer, LoadgenError> {
        let (lab, first) = match Self::binary() {
            Ok(lab) => (lab, None),
            Err(_) => (
                std::env::current_exe()
                    .map_err(LoadgenError::io("finding the loadgen executable"))?,
                Some(SERVE_ARG),
            ),
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(LoadgenError::io("finding a free port"))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&lab);
        cmd.args(first)
            .arg("--addr")
            .arg(&addr)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        if let Some(cpus) = cpus {
            use std::os::unix::process::CommandExt;
            let set = crate::cpus::set_of(cpus);
            // SAFETY: the closure only makes one system call (async-signal-safe) on a
            // set made before the fork.
            unsafe {
                cmd.pre_exec(move || crate::cpus::set_thread(0, &set));
            }
        }
        let child = cmd
            .spawn()
            .map_err(LoadgenError::io(format!("starting {}", lab.display())))?;
        let mut target = Target::parse(&addr)?;
        target.pid = Some(child.id());
        let mut server = ChildServer { child, target };
        // What the child runs on, read back: a binding the kernel did not take is an
        // error, not a run said to be bound.
        if let Some(cpus) = cpus {
            let pid = libc::pid_t::try_from(server.child.id())
                .map_err(|_| LoadgenError::Server("lab's process id is out of range".into()))?;
            match crate::cpus::allowed_of(pid) {
                Ok(now) if now == cpus => {}
                now => {
                    return Err(LoadgenError::Server(format!(
                        "lab was to run on cores {cpus:?}, runs on {now:?}"
                    )));
                }
            }
        }
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), LoadgenError> {
        let deadline = Instant::now() + READY;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(LoadgenError::io("waiting for lab"))?
            {
                return Err(LoadgenError::Server(format!(
                    "lab exited at start: {status}"
                )));
            }
            match runner::block_on(runner::health(&self.target)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(LoadgenError::Server(format!(
                        "lab did not become healthy in {READY:?}: {e}"
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// The loadgen's worker threads when `--threads` is not given: one per core, less the
/// runtime threads of the child server started with `child_args`, if there is one, and
/// never fewer than one. A worker thread that shares a core with the server it measures
/// slows both: on this 2-core machine a second worker beside a one-thread server
/// doubled the WebSocket p99 at 10,000 users (results/performance.md).
pub fn default_threads(child_args: Option<&[String]>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = child_args.map_or(0, child_threads);
    cores.saturating_sub(server).max(1)
}

/// The runtime threads a child `lab` started with `args` will use (its flags and the
/// `LAB_` environment it inherits, as it will parse them).
pub fn child_threads(args: &[String]) -> usize {
    use clap::Parser;
    let argv = ["lab"]
        .into_iter()
        .map(String::from)
        .chain(args.iter().cloned());
    lab::Config::try_parse_from(argv).map_or(1, |c| c.threads.max(1))
}

/// Serves the lab in this process until SIGTERM or SIGINT, with the runtime the `lab`
/// binary would use: the child when no `lab` binary is built. `args` are `lab`'s flags.
pub fn serve(args: impl Iterator<Item = String>) -> Result<(), LoadgenError> {
    use clap::Parser;
    let config = lab::Config::parse_from(std::iter::once("lab".to_owned()).chain(args));
    lab::launch::serve_until_signal(config).map_err(LoadgenError::io("serving"))
}

impl Drop for ChildServer {
    /// SIGTERM for a graceful shutdown, SIGKILL after 5 s.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a pid of our own child, which has not been reaped
            // (try_wait has not returned its status), and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::default_threads;

    #[test]
    fn the_loadgen_leaves_the_child_servers_threads_their_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            default_threads(None),
            cores,
            "an external server: every core"
        );
        assert_eq!(
            default_threads(Some(&args(&["--threads=2"]))),
            cores.saturating_sub(2).max(1)
        );
        assert_eq!(
            default_threads(Some(&args(&["--threads", "1"]))),
            cores.saturating_sub(1).max(1)
        );
        assert_eq!(
            default_threads(Some(&args(&["--threads=512"]))),
            1,
            "never none"
        );
    }
}
