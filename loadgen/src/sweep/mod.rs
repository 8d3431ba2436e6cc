//! `loadgen sweep`: the comparison across modes, user counts and rates, repeated, with
//! a report people can read (docs/sweep.md).
//!
//! - [`args`]: the subcommand's flags; [`plan`]: the points to run, from flags or a
//!   TOML scenario file.
//! - [`run`]: runs them (a fresh child server per run) and writes the JSON of each.
//! - [`probe`]: the wire sizes the model needs, measured on a real server.
//! - [`record`]: one run as one CSV line; [`points`]: repeats folded into medians and
//!   ranges.
//! - [`model`]: the analytic expectation beside each measurement, with flags.
//! - [`verdict`]: the plain-language opening; [`chart`]: SVG charts; [`html`]: the page.
//! - [`meta`]: machine and versions, kept beside the results.

pub mod args;
pub mod chart;
pub mod html;
pub mod meta;
pub mod model;
pub mod plan;
pub mod points;
pub mod probe;
pub mod record;
pub mod run;
pub mod verdict;

use std::path::Path;

use crate::error::LoadgenError;

pub use plan::{Grid, Plan, Point};
pub use run::sweep;

fn read(path: &Path) -> Result<String, LoadgenError> {
    std::fs::read_to_string(path).map_err(LoadgenError::io(format!("reading {}", path.display())))
}

/// (Re-)writes `report.html`, `points.csv`, `summary.md` and `charts/*.svg` in a sweep folder from
/// its `summary.csv`, `meta.json` and `scenario.toml`.
pub fn write_report(dir: &Path) -> Result<(), LoadgenError> {
    let records = record::parse_csv(&read(&dir.join("summary.csv"))?)?;
    let meta: meta::Meta = serde_json::from_str(&read(&dir.join("meta.json"))?)?;
    let scenario = read(&dir.join("scenario.toml")).unwrap_or_default();
    let failures: Vec<String> = read(&dir.join("failures.txt"))
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default();
    let all = points::group(&records);
    let (page, charts) = html::render(&all, &meta, &scenario, &failures);
    let charts_dir = dir.join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(LoadgenError::io(format!(
        "creating {}",
        charts_dir.display()
    )))?;
    for (stem, svg) in charts {
        let path = charts_dir.join(format!("{stem}.svg"));
        std::fs::write(&path, svg)
            .map_err(LoadgenError::io(format!("writing {}", path.display())))?;
    }
    let w = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(LoadgenError::io(format!("writing {}", path.display())))
    };
    w("points.csv", html::points_csv(&all))?;
    w("summary.md", html::summary_markdown(&all, &failures))?;
    w("report.html", page)
}
