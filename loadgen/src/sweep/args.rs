//! `loadgen sweep` flags. Each overrides the scenario file's value when given; what
//! neither sets takes [`Plan::default`].

use std::path::PathBuf;

use clap::Parser;

use crate::error::LoadgenError;

use super::plan::{Grid, Plan};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen sweep",
    bin_name = "loadgen sweep",
    about = "Run modes x user counts x rates, each point repeated, and write results/<name>/ \
             with every run's JSON, a CSV summary and report.html",
    after_help = "See docs/sweep.md. Example:\n  loadgen sweep --name quick --users 10,100 --rates 10 --repeat 2 --duration 5s"
)]
pub struct SweepArgs {
    /// A TOML scenario file (keys as in the scenario.toml a sweep writes).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Folder name under --out [default: sweep-<unix time>].
    #[arg(long)]
    pub name: Option<String>,
    /// Where sweep folders go.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Modes, comma-separated: poll, long-poll, sse, ws, mixed [default: the four transports].
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// User counts, comma-separated [default: 10,100,1000,10000].
    #[arg(long, value_delimiter = ',')]
    pub users: Vec<usize>,
    /// Rates (messages per second across the room), comma-separated [default: 10].
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Runs per point [default: 3].
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Counted window of each run [default: 10s].
    #[arg(long)]
    pub duration: Option<String>,
    /// Warm-up of each run [default: 2s].
    #[arg(long)]
    pub warmup: Option<String>,
    /// Short-poll interval [default: 1s].
    #[arg(long)]
    pub poll_interval: Option<String>,
    /// Long-poll timeout [default: 25s].
    #[arg(long)]
    pub long_poll_timeout: Option<String>,
    /// Message text size [default: 64].
    #[arg(long)]
    pub message_bytes: Option<usize>,
    /// Users that send [default: every user].
    #[arg(long)]
    pub senders: Option<usize>,
    /// Users started per second [default: 1000].
    #[arg(long)]
    pub ramp_up: Option<f64>,
    /// Loadgen worker threads [default: one per core, less the child server's threads].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra argument for each child `lab` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Drive running servers instead of a fresh child per run (comma-separated URLs).
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// Let the kernel place each child server and the loadgen on any core (by default
    /// each side is bound to cores of its own when they fit; see docs/measurement.md).
    #[arg(long)]
    pub no_pin: bool,
    /// Only re-render report.html, points.csv and charts/ of an existing sweep folder.
    #[arg(long)]
    pub report_only: Option<PathBuf>,
    /// No progress bars, one line per run.
    #[arg(long, short)]
    pub quiet: bool,
}

impl SweepArgs {
    /// The plan: the scenario file if any, then the flags over it.
    pub fn plan(&self) -> Result<Plan, LoadgenError> {
        let mut p = match &self.scenario {
            Some(path) => Plan::from_toml(
                &std::fs::read_to_string(path)
                    .map_err(LoadgenError::io(format!("reading {}", path.display())))?,
            )?,
            None => Plan {
                name: format!("sweep-{}", crate::report::unix_now()),
                ..Plan::default()
            },
        };
        if let Some(n) = &self.name {
            p.name = n.clone();
        }
        if !self.modes.is_empty() {
            p.modes = self.modes.clone();
        }
        if !self.users.is_empty() || !self.rates.is_empty() {
            let base = p.grid.first().cloned().unwrap_or(Grid {
                users: vec![],
                rates: vec![],
            });
            p.grid = vec![Grid {
                users: if self.users.is_empty() {
                    base.users
                } else {
                    self.users.clone()
                },
                rates: if self.rates.is_empty() {
                    base.rates
                } else {
                    self.rates.clone()
                },
            }];
        }
        let set = |dst: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                dst.clone_from(v);
            }
        };
        set(&mut p.duration, &self.duration);
        set(&mut p.warmup, &self.warmup);
        set(&mut p.poll_interval, &self.poll_interval);
        set(&mut p.long_poll_timeout, &self.long_poll_timeout);
        p.repeat = self.repeat.unwrap_or(p.repeat);
        p.message_bytes = self.message_bytes.unwrap_or(p.message_bytes);
        p.senders = self.senders.or(p.senders);
        p.ramp_up = self.ramp_up.unwrap_or(p.ramp_up);
        p.threads = self.threads.or(p.threads);
        if !self.server_arg.is_empty() {
            p.server_args = self.server_arg.clone();
        }
        p.validate()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_defaults() {
        let a = SweepArgs::parse_from([
            "sweep", "--users", "5,6", "--repeat", "1", "--modes", "ws,sse", "--name", "t",
        ]);
        let p = a.plan().unwrap();
        assert_eq!(
            p.grid,
            vec![Grid {
                users: vec![5, 6],
                rates: vec![10.0]
            }]
        );
        assert_eq!((p.repeat, p.name.as_str(), p.modes.len()), (1, "t", 2));
        let a = SweepArgs::parse_from(["sweep", "--modes", "pigeon"]);
        assert!(a.plan().is_err());
    }
}
