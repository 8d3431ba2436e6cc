//! `loadgen`: parse the flags, start a child server unless `--target` is given, run
//! the modes, print the table and write the JSON (and CSV).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use loadgen::cli::Args;
use loadgen::machine::{self, Machine};
use loadgen::report::{self, Document, SCHEMA_VERSION, Tool};
use loadgen::server::{ChildServer, SERVE_ARG, serve};
use loadgen::{Target, runner};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(SERVE_ARG) {
        return match serve(std::env::args().skip(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen (lab server): {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Each user holds a socket: as many files as the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("loadgen-{now}"));

    let given: Vec<Target> = args
        .target
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    let mut urls: Vec<String> = given.iter().map(|t| t.url.clone()).collect();
    for mix in args.mixes() {
        // Without --target, a fresh child server per mode: no mode inherits another's
        // memory or warm caches.
        let child = match given.is_empty() {
            true => Some(ChildServer::start(&args.server_arg)?),
            false => None,
        };
        let targets = match &child {
            Some(c) => vec![c.target.clone()],
            None => given.clone(),
        };
        rows.extend(runner::run(&targets, &args.scenario(mix, &room))?);
        if let Some(c) = &child {
            urls.push(c.target.url.clone());
        }
    }

    print!("{}", report::table(&rows));
    let mode = args
        .mixes()
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join("+");
    let mode = if args.mixes().len() > 1 {
        "all".to_owned()
    } else {
        mode
    };
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "loadgen".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: machine::git_commit(),
        },
        created_unix_s: now,
        machine: Machine::detect(),
        server_process: if args.target.is_empty() {
            "child"
        } else {
            "external"
        }
        .into(),
        targets: urls,
        config: args.config_json(&room),
        runs: rows,
    };
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/runs/run-{now}-{mode}.json")));
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    eprintln!("wrote {}", json.display());
    if let Some(csv) = &args.csv {
        std::fs::write(csv, report::csv(&doc.runs))
            .with_context(|| format!("writing {}", csv.display()))?;
        eprintln!("wrote {}", csv.display());
    }
    Ok(())
}
