//! What one run does: the resolved settings the runner works from (the command line
//! fills them in; tests build them directly).

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::transport::TRANSPORTS;

/// Which transports a run's users use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mix {
    /// Every user on one transport (an index into [`TRANSPORTS`]).
    Only(usize),
    /// User `k` on transport `k mod TRANSPORTS.len()`, all in one room.
    Mixed,
}

impl Mix {
    /// The transport of user `k`.
    pub fn transport_of(self, k: usize) -> usize {
        match self {
            Mix::Only(t) => t,
            Mix::Mixed => k % TRANSPORTS.len(),
        }
    }

    /// The mode's name in reports: a transport's name or `mixed`.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Only(t) => TRANSPORTS[t].name,
            Mix::Mixed => "mixed",
        }
    }
}

/// A user that joins after the counted window has begun and leaves before it ends.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Churn {
    pub transport: usize,
    /// After the start of the counted window.
    pub join_after: Duration,
    /// After the start of the counted window.
    pub leave_after: Duration,
}

/// The settings of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub mix: Mix,
    pub users: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// How many users send (users `0..senders`).
    pub senders: usize,
    /// Messages per second across the room.
    pub rate: f64,
    pub message_bytes: usize,
    pub poll_interval: Duration,
    pub long_poll_timeout: Duration,
    /// Users started per second.
    pub ramp_up: f64,
    /// How long users wait for the last messages after the window.
    pub drain_timeout: Duration,
    pub room: String,
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
    /// Source addresses connections are spread over (empty: the kernel chooses).
    pub source_addrs: Vec<IpAddr>,
    /// Extra users that join and leave mid-run.
    pub churn: Vec<Churn>,
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// The cores the child server and the loadgen were bound to, if they were.
    pub pinned: Option<crate::cpus::Split>,
}

impl Scenario {
    /// `users` users on `mix` in `room`, with the command line's defaults otherwise.
    pub fn new(mix: Mix, users: usize, room: &str) -> Scenario {
        Scenario {
            mix,
            users,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(3),
            senders: users,
            rate: 10.0,
            message_bytes: 64,
            poll_interval: Duration::from_secs(1),
            long_poll_timeout: Duration::from_secs(25),
            ramp_up: 1000.0,
            drain_timeout: Duration::from_secs(5),
            room: room.to_owned(),
            seed: 1,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            source_addrs: Vec::new(),
            churn: Vec::new(),
            progress: false,
            pinned: None,
        }
    }

    /// The settings as the JSON's `config` (docs/results.md), for runs not made from
    /// the command line's flags (a sweep's).
    pub fn config_json(&self, target: &[String], server_args: &[String]) -> serde_json::Value {
        let kinds = match self.mix {
            Mix::Only(_) => 1,
            Mix::Mixed => TRANSPORTS.len(),
        };
        serde_json::json!({
            "target": target,
            "mode": self.mix.name(),
            "users": self.users,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "senders": self.senders,
            "rate": self.rate,
            "message_bytes": self.message_bytes,
            "poll_interval_s": self.poll_interval.as_secs_f64(),
            "long_poll_timeout_s": self.long_poll_timeout.as_secs_f64(),
            "ramp_up": self.ramp_up,
            "drain_timeout_s": self.drain_timeout.as_secs_f64(),
            "room": self.room,
            "seed": self.seed,
            "threads": self.threads,
            "source_addrs": self.source_addrs,
            "churn": self.churn.len() / kinds,
            "server_args": server_args,
            "pinned": self.pinned,
        })
    }

    /// Time to start every user.
    pub fn ramp_time(&self) -> Duration {
        Duration::from_secs_f64(self.users as f64 / self.ramp_up)
    }
}
