//! The command line: flags, their defaults, and how they become [`Scenario`]s.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::scenario::{Churn, Mix, Scenario};
use crate::transport::{TRANSPORTS, Transport};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Drive simulated users against the transport lab and measure what they got",
    after_help = "Without --target, starts the `lab` binary next to this executable on a free port.\n\
                  Also: `loadgen sweep --help` (modes x users x rates, repeated, with a report) and\n\
                  `loadgen step-up --help` (clients added until latency passes a limit).\n\
                  See docs/measurement.md for what is measured and docs/results.md for the JSON."
)]
pub struct Args {
    /// Servers to drive (http://host:port, comma-separated); users are spread round-robin.
    /// Without it, a child `lab` server is started and stopped.
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,

    /// poll | long-poll | sse | ws | mixed (all four in one room) | all (the four, one after another).
    #[arg(long, default_value = "all", value_parser = parse_mode)]
    pub mode: ModeArg,

    /// Simulated users (per mode).
    #[arg(long, default_value_t = 100)]
    pub users: usize,

    /// The counted window.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Sending before the counted window; not counted.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// How many users send [default: all users].
    #[arg(long)]
    pub senders: Option<usize>,

    /// Messages per second across the room (open model: message i is due at i/rate).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,

    /// Text size of each message (at least 32: it starts with the send lag and time).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,

    /// Short-poll interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Long-poll timeout the server is asked for.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub long_poll_timeout: Duration,

    /// Users started per second.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp_up: f64,

    /// How long users wait for the last messages after the window [default: 5s + poll interval].
    #[arg(long, value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,

    /// Room name [default: loadgen-<unix time>; `all` appends -<mode>].
    #[arg(long)]
    pub room: Option<String>,

    /// Seed for the users' poll phases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Worker threads [default: one per core, less the child server's threads].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Source addresses to spread connections over (comma-separated)
    /// [default: 127.0.0.1-4 above 5,000 users on loopback, else the kernel's choice].
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<IpAddr>,

    /// Extra users per transport that join a third into the counted window and leave
    /// at two thirds (checks accounting of users who come and go).
    #[arg(long, default_value_t = 0)]
    pub churn: usize,

    /// Write the JSON here [default: results/runs/run-<unix time>-<mode>.json].
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also write a CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,

    /// Extra argument for the child `lab` server (repeatable), e.g. --server-arg=--threads=2.
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,

    /// Let the kernel place the child server and the loadgen on any core. By default,
    /// when the child's threads and the loadgen's workers fit on separate cores, each
    /// side is bound to its own (see docs/measurement.md).
    #[arg(long)]
    pub no_pin: bool,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    One(Mix),
    All,
}

fn parse_mode(s: &str) -> Result<ModeArg, String> {
    match s {
        "all" => Ok(ModeArg::All),
        "mixed" => Ok(ModeArg::One(Mix::Mixed)),
        _ => match Transport::index(s) {
            Some(t) => Ok(ModeArg::One(Mix::Only(t))),
            None => {
                let names: Vec<&str> = TRANSPORTS.iter().map(|t| t.name).collect();
                Err(format!("expected one of {}, mixed, all", names.join(", ")))
            }
        },
    }
}

/// `500ms`, `3s`, `2m`, `1h`, or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 500ms, 3s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

impl Args {
    /// The mixes to run, in order.
    pub fn mixes(&self) -> Vec<Mix> {
        match self.mode {
            ModeArg::One(m) => vec![m],
            ModeArg::All => (0..TRANSPORTS.len()).map(Mix::Only).collect(),
        }
    }

    /// The scenario for `mix`, in room `base` (suffixed with the mode for `all`).
    pub fn scenario(&self, mix: Mix, base: &str) -> Scenario {
        let room = match self.mode {
            ModeArg::All => format!("{base}-{}", mix.name()),
            ModeArg::One(_) => base.to_owned(),
        };
        let mut sc = Scenario::new(mix, self.users, &room);
        sc.duration = self.duration;
        sc.warmup = self.warmup;
        sc.senders = self.senders.unwrap_or(self.users);
        sc.rate = self.rate;
        sc.message_bytes = self.message_bytes;
        sc.poll_interval = self.poll_interval;
        sc.long_poll_timeout = self.long_poll_timeout;
        sc.ramp_up = self.ramp_up;
        sc.drain_timeout = self
            .drain_timeout
            .unwrap_or(Duration::from_secs(5) + self.poll_interval);
        sc.seed = self.seed;
        sc.threads = self.threads();
        sc.source_addrs = self.source_addrs.clone();
        let kinds: Vec<usize> = match mix {
            Mix::Only(t) => vec![t],
            Mix::Mixed => (0..TRANSPORTS.len()).collect(),
        };
        sc.churn = kinds
            .iter()
            .flat_map(|&transport| {
                (0..self.churn).map(move |_| Churn {
                    transport,
                    join_after: self.duration / 3,
                    leave_after: self.duration * 2 / 3,
                })
            })
            .collect();
        sc.progress = !self.quiet;
        sc
    }

    /// The loadgen's worker threads: `--threads`, or the default beside the server.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            crate::server::default_threads(self.target.is_empty().then_some(&self.server_arg[..]))
        })
    }

    /// The settings, for the JSON's `config`.
    pub fn config_json(
        &self,
        room: &str,
        pinned: Option<&crate::cpus::Split>,
    ) -> serde_json::Value {
        serde_json::json!({
            "target": self.target,
            "mode": match self.mode { ModeArg::All => "all", ModeArg::One(m) => m.name() },
            "users": self.users,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "senders": self.senders.unwrap_or(self.users),
            "rate": self.rate,
            "message_bytes": self.message_bytes,
            "poll_interval_s": self.poll_interval.as_secs_f64(),
            "long_poll_timeout_s": self.long_poll_timeout.as_secs_f64(),
            "ramp_up": self.ramp_up,
            "drain_timeout_s": self.drain_timeout.unwrap_or(Duration::from_secs(5) + self.poll_interval).as_secs_f64(),
            "room": room,
            "seed": self.seed,
            "threads": self.threads(),
            "source_addrs": self.source_addrs,
            "churn": self.churn,
            "server_args": self.server_arg,
            "pinned": pinned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_modes_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_mode("long-poll"), Ok(ModeArg::One(Mix::Only(1))));
        assert_eq!(parse_mode("long_poll"), Ok(ModeArg::One(Mix::Only(1))));
        assert!(parse_mode("carrier-pigeon").is_err());
    }

    #[test]
    fn defaults_match_the_issue() {
        let a = Args::parse_from(["loadgen"]);
        assert_eq!((a.users, a.rate, a.message_bytes), (100, 10.0, 64));
        assert_eq!(a.mixes().len(), 4);
        let sc = a.scenario(Mix::Only(3), "r");
        assert_eq!(sc.room, "r-ws");
        assert_eq!(sc.senders, 100);
        assert_eq!(sc.drain_timeout, Duration::from_secs(6));
        let a = Args::parse_from([
            "loadgen",
            "--mode",
            "mixed",
            "--churn",
            "1",
            "--server-arg=--threads=2",
        ]);
        assert_eq!(a.scenario(Mix::Mixed, "r").churn.len(), 4);
        assert_eq!(a.server_arg, vec!["--threads=2"]);
    }
}
