//! What a sweep runs: modes x (user counts x rates) grids, each point repeated, with
//! the run settings shared by every point. Built from flags or from a small TOML
//! scenario file (flags given on the command line override the file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::LoadgenError;
use crate::scenario::{Mix, Scenario};
use crate::transport::{TRANSPORTS, Transport};

/// One block of points: every user count at every rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub users: Vec<usize>,
    pub rates: Vec<f64>,
}

/// A whole sweep. Durations are strings as the flags take them (`8s`, `500ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The folder under the output directory: `results/<name>/`.
    pub name: String,
    /// Transport names (`poll`, `long-poll`, `sse`, `ws`) or `mixed`.
    pub modes: Vec<String>,
    pub grid: Vec<Grid>,
    pub repeat: usize,
    pub duration: String,
    pub warmup: String,
    pub poll_interval: String,
    pub long_poll_timeout: String,
    pub message_bytes: usize,
    /// Users that send; absent: every user (as for a single run).
    pub senders: Option<usize>,
    pub ramp_up: f64,
    /// Loadgen worker threads; absent: one per core, less the child server's threads.
    pub threads: Option<usize>,
    /// Extra arguments for each child `lab` server.
    pub server_args: Vec<String>,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            name: "sweep".into(),
            modes: TRANSPORTS.iter().map(|t| t.name.to_owned()).collect(),
            grid: vec![Grid {
                users: vec![10, 100, 1000, 10_000],
                rates: vec![10.0],
            }],
            repeat: 3,
            duration: "10s".into(),
            warmup: "2s".into(),
            poll_interval: "1s".into(),
            long_poll_timeout: "25s".into(),
            message_bytes: 64,
            senders: None,
            ramp_up: 1000.0,
            threads: None,
            server_args: Vec::new(),
        }
    }
}

/// One point of the sweep: a mode at a user count and a rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub mix: Mix,
    pub users: usize,
    pub rate: f64,
}

impl Point {
    /// `ws-u1000-r10` (`r0p5` for 0.5/s): used in file names and room names.
    pub fn slug(&self) -> String {
        let rate = self.rate.to_string().replace('.', "p");
        format!("{}-u{}-r{rate}", self.mix.name(), self.users)
    }
}

/// A mode name as the sweep takes it.
pub fn parse_mix(name: &str) -> Result<Mix, LoadgenError> {
    if name == "mixed" {
        return Ok(Mix::Mixed);
    }
    Transport::index(name).map(Mix::Only).ok_or_else(|| {
        LoadgenError::BadFlag(format!(
            "sweep mode {name:?}: expected poll, long-poll, sse, ws or mixed"
        ))
    })
}

fn duration(what: &str, s: &str) -> Result<Duration, LoadgenError> {
    crate::cli::parse_duration(s).map_err(|e| LoadgenError::BadFlag(format!("{what}: {e}")))
}

impl Plan {
    /// Reads a TOML scenario file; missing keys take the defaults.
    pub fn from_toml(text: &str) -> Result<Plan, LoadgenError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Partial {
            name: Option<String>,
            modes: Option<Vec<String>>,
            grid: Option<Vec<Grid>>,
            repeat: Option<usize>,
            duration: Option<String>,
            warmup: Option<String>,
            poll_interval: Option<String>,
            long_poll_timeout: Option<String>,
            message_bytes: Option<usize>,
            senders: Option<usize>,
            ramp_up: Option<f64>,
            threads: Option<usize>,
            server_args: Option<Vec<String>>,
        }
        let p: Partial = toml::from_str(text)
            .map_err(|e| LoadgenError::BadFlag(format!("scenario file: {e}")))?;
        let d = Plan::default();
        Ok(Plan {
            name: p.name.unwrap_or(d.name),
            modes: p.modes.unwrap_or(d.modes),
            grid: p.grid.unwrap_or(d.grid),
            repeat: p.repeat.unwrap_or(d.repeat),
            duration: p.duration.unwrap_or(d.duration),
            warmup: p.warmup.unwrap_or(d.warmup),
            poll_interval: p.poll_interval.unwrap_or(d.poll_interval),
            long_poll_timeout: p.long_poll_timeout.unwrap_or(d.long_poll_timeout),
            message_bytes: p.message_bytes.unwrap_or(d.message_bytes),
            senders: p.senders.or(d.senders),
            ramp_up: p.ramp_up.unwrap_or(d.ramp_up),
            threads: p.threads.or(d.threads),
            server_args: p.server_args.unwrap_or(d.server_args),
        })
    }

    /// The plan as a TOML scenario file (written beside the results).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a plan is plain data")
    }

    /// Checks everything a run would reject, before the first run starts.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::BadFlag(m));
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            && !self.name.starts_with('.');
        if !name_ok {
            return bad("sweep name must be letters, digits, _ - . (not starting with .)".into());
        }
        if self.repeat == 0 {
            return bad("--repeat must be at least 1".into());
        }
        if self.modes.is_empty() || self.grid.iter().all(|g| g.users.is_empty()) {
            return bad("a sweep needs at least one mode and one user count".into());
        }
        for m in &self.modes {
            parse_mix(m)?;
        }
        for p in self.points()? {
            crate::runner::validate(&self.scenario(p, "check")?)?;
        }
        Ok(())
    }

    /// Every point, in order: by mode, then grid, user count, rate. Duplicates are
    /// dropped.
    pub fn points(&self) -> Result<Vec<Point>, LoadgenError> {
        let mut out: Vec<Point> = Vec::new();
        for m in &self.modes {
            let mix = parse_mix(m)?;
            for g in &self.grid {
                if g.rates.is_empty() {
                    return Err(LoadgenError::BadFlag(
                        "a grid needs at least one rate".into(),
                    ));
                }
                for &users in &g.users {
                    for &rate in &g.rates {
                        let p = Point { mix, users, rate };
                        if !out.contains(&p) {
                            out.push(p);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The run settings of `point` in `room`.
    pub fn scenario(&self, point: Point, room: &str) -> Result<Scenario, LoadgenError> {
        let mut sc = Scenario::new(point.mix, point.users, room);
        sc.rate = point.rate;
        sc.duration = duration("duration", &self.duration)?;
        sc.warmup = duration("warmup", &self.warmup)?;
        sc.poll_interval = duration("poll_interval", &self.poll_interval)?;
        sc.long_poll_timeout = duration("long_poll_timeout", &self.long_poll_timeout)?;
        sc.drain_timeout = Duration::from_secs(5) + sc.poll_interval;
        sc.message_bytes = self.message_bytes;
        sc.senders = self.senders.unwrap_or(point.users).min(point.users);
        sc.ramp_up = self.ramp_up;
        if let Some(t) = self.threads {
            sc.threads = t;
        }
        Ok(sc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issues_grid() {
        let p = Plan::default();
        let points = p.points().unwrap();
        assert_eq!(points.len(), 4 * 4);
        assert_eq!(p.repeat, 3);
        assert_eq!(points[0].slug(), "poll-u10-r10");
        assert_eq!(points[15].slug(), "ws-u10000-r10");
        p.validate().unwrap();
    }

    #[test]
    fn a_scenario_file_fills_in_and_round_trips() {
        let text = r#"
name = "reference"
modes = ["ws", "sse"]
repeat = 2
duration = "8s"

[[grid]]
users = [10, 1000]
rates = [10]

[[grid]]
users = [1000]
rates = [10, 100]
"#;
        let p = Plan::from_toml(text).unwrap();
        assert_eq!(p.name, "reference");
        assert_eq!(p.message_bytes, 64);
        let slugs: Vec<String> = p.points().unwrap().iter().map(Point::slug).collect();
        assert_eq!(
            slugs,
            [
                "ws-u10-r10",
                "ws-u1000-r10",
                "ws-u1000-r100",
                "sse-u10-r10",
                "sse-u1000-r10",
                "sse-u1000-r100"
            ]
        );
        let sc = p.scenario(p.points().unwrap()[2], "r").unwrap();
        assert_eq!((sc.users, sc.rate, sc.senders), (1000, 100.0, 1000));
        assert_eq!(sc.duration, Duration::from_secs(8));
        assert_eq!(Plan::from_toml(&p.to_toml()).unwrap(), p);
        assert!(Plan::from_toml("colour = 1").is_err());
        let mut bad = p.clone();
        bad.modes = vec!["pigeon".into()];
        assert!(bad.validate().is_err());
        bad = p;
        bad.name = "../x".into();
        assert!(bad.validate().is_err());
    }
}
