//! `loadgen`: parse the flags, start a child server unless `--target` is given, run
//! the modes, print the table and write the JSON (and CSV). `loadgen sweep` and
//! `loadgen step-up` hand over to their modules.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadgen::cli::Args;
use loadgen::report::{self, Document};
use loadgen::server::{ChildServer, SERVE_ARG, serve};
use loadgen::stepup::{self, StepUpArgs};
use loadgen::sweep::args::SweepArgs;
use loadgen::{Target, runner};

/// The lab binary's allocator (see loadgen/Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let result = match std::env::args().nth(1).as_deref() {
        Some("sweep") => sweep(SweepArgs::parse_from(std::env::args().skip(1))),
        Some("step-up") => {
            let _ = rlimit::increase_nofile_limit(u64::MAX);
            stepup::step_up(&StepUpArgs::parse_from(std::env::args().skip(1)))
                .map(|dir| eprintln!("wrote {}", dir.display()))
                .map_err(Into::into)
        }
        _ => run(&Args::parse()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `loadgen sweep`: a whole sweep, or just its report again.
fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    if let Some(dir) = &args.report_only {
        loadgen::sweep::write_report(dir)?;
        eprintln!("wrote {}", dir.join("report.html").display());
        return Ok(());
    }
    let plan = args.plan()?;
    let targets: Vec<Target> = args
        .target
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<_, _>>()?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let dir = loadgen::sweep::sweep(
        &plan,
        &args.out,
        &targets,
        command,
        args.quiet,
        !args.no_pin,
    )?;
    eprintln!("wrote {}", dir.join("report.html").display());
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Each user holds a socket: as many files as the hard limit allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let now = report::unix_now();
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
    let child_args = given.is_empty().then_some(&args.server_arg[..]);
    let (threads, pinned) = loadgen::cpus::arrange(args.threads, child_args, !args.no_pin);
    // The count settled before binding holds for every mode and the JSON's `config`.
    let args = &Args {
        threads: Some(threads),
        ..args.clone()
    };
    for mix in args.mixes() {
        // Without --target, a fresh child server per mode: no mode inherits another's
        // memory or warm caches.
        let child = match given.is_empty() {
            true => Some(ChildServer::start(
                &args.server_arg,
                pinned.as_ref().map(|p| &p.server[..]),
            )?),
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

    report::print(&report::table(&rows));
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
    let server_process = if args.target.is_empty() {
        "child"
    } else {
        "external"
    };
    let mut doc = Document::new(
        args.config_json(&room, pinned.as_ref()),
        server_process,
        urls,
        rows,
    );
    doc.created_unix_s = now;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("results/runs/run-{now}-{mode}.json")));
    doc.write(&json)?;
    eprintln!("wrote {}", json.display());
    if let Some(csv) = &args.csv {
        std::fs::write(csv, report::csv(&doc.runs))
            .with_context(|| format!("writing {}", csv.display()))?;
        eprintln!("wrote {}", csv.display());
    }
    loadgen::account::nothing_delivered(&doc.runs)?;
    Ok(())
}
