//! Where and with what a sweep ran: tool version and commit, machine, the command,
//! and the probe's wire sizes. Written as `meta.json` beside the results so that a
//! report can be re-rendered later from the folder alone.

use serde::{Deserialize, Serialize};

use crate::machine::{self, Machine};
use crate::report::Tool;

use super::model::Probe;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub tool: Tool,
    pub machine: Machine,
    pub created_unix_s: u64,
    /// The command line, as typed.
    pub command: String,
    /// `child` (a fresh `lab` per run) or `external` (`--target`).
    pub server_process: String,
    pub probe: Option<Probe>,
    /// Whether the working tree had uncommitted changes (then the commit alone does
    /// not say what was measured).
    #[serde(default)]
    pub git_dirty: Option<bool>,
    /// The open-file hard limit of the loadgen process.
    pub open_files_limit: Option<u64>,
}

impl Meta {
    /// This machine and tool, now.
    pub fn detect(command: String, server_process: &str, probe: Option<Probe>) -> Meta {
        Meta {
            tool: Tool {
                name: "loadgen".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                git_commit: machine::git_commit(),
            },
            machine: Machine::detect(),
            created_unix_s: crate::report::unix_now(),
            command,
            server_process: server_process.into(),
            probe,
            git_dirty: git_dirty(),
            open_files_limit: rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(_, hard)| hard),
        }
    }
}

/// `git status --porcelain` printed anything (untracked files aside).
fn git_dirty() -> Option<bool> {
    let out = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(!out.stdout.is_empty())
}
