//! Where and with what a sweep ran: tool version and commit, machine, the command,
//! and the probe's wire sizes. Written as `meta.json` beside the results so that a
//! report can be re-rendered later from the folder alone.

use serde::{Deserialize, Serialize};

use crate::cpus::Placement;
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
    /// Where each child server and the loadgen ran; absent in a sweep recorded before
    /// the loadgen bound them (then the report says nothing of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

impl Meta {
    /// This machine and tool, now.
    pub fn detect(
        command: String,
        server_process: &str,
        probe: Option<Probe>,
        placement: Placement,
    ) -> Meta {
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
            placement: Some(placement),
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

#[cfg(test)]
mod tests {
    use super::Meta;
    use crate::cpus::{Placement, Split};

    #[test]
    fn the_placement_is_kept_in_meta_json_and_absent_in_an_older_one() {
        let bound = Placement::Bound(Split {
            server: vec![0],
            loadgen: vec![1, 2],
        });
        let meta = Meta::detect("loadgen sweep".into(), "child", None, bound.clone());
        let json = serde_json::to_string(&meta).unwrap();
        assert!(
            json.contains(r#""placement":{"bound":{"server":[0],"loadgen":[1,2]}}"#),
            "{json}"
        );
        let back: Meta = serde_json::from_str(&json).unwrap();
        assert_eq!(back.placement, Some(bound.clone()));
        assert!(
            bound
                .sentence()
                .contains("core 0 and the loadgen to cores 1, 2")
        );

        let mut older: serde_json::Value = serde_json::from_str(&json).unwrap();
        older.as_object_mut().unwrap().remove("placement");
        let back: Meta = serde_json::from_value(older).unwrap();
        assert_eq!(back.placement, None, "a sweep from before says nothing");
    }
}
