//! The JSON a real run writes matches the table in docs/results.md, both ways: every
//! field it has is documented with its type, and every documented field is there.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{Server, run_binary};

/// `path -> type` from the rows of the fields table: "| `path` | `type` | ... |".
fn documented() -> BTreeMap<String, String> {
    let doc = include_str!("../../../docs/results.md");
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let path = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let ty = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((path.to_owned(), ty.to_owned()))
        })
        .collect()
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Leaves of `v` as (path, type); documented `object`/`array` fields (or null) are leaves.
fn leaves(
    v: &Value,
    path: &str,
    doc: &BTreeMap<String, String>,
    out: &mut Vec<(String, &'static str)>,
) {
    let leaf = doc
        .get(path)
        .map(|t| t.trim_end_matches('?'))
        .is_some_and(|t| t == "object" || t == "array");
    match v {
        Value::Object(m) if !leaf => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(v, &p, doc, out);
            }
        }
        Value::Array(a) if !leaf => a
            .iter()
            .for_each(|v| leaves(v, &format!("{path}[]"), doc, out)),
        _ => out.push((path.to_owned(), type_of(v))),
    }
}

fn compatible(documented: &str, actual: &str) -> bool {
    let base = documented.trim_end_matches('?');
    actual == base
        || (actual == "null" && documented.ends_with('?'))
        // A whole number where a number is documented is still a number.
        || (actual == "integer" && base == "number")
}

#[test]
fn the_json_matches_its_documented_schema() {
    let server = Server::start();
    let url = server.url();
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_loadgen"));
    let args = [
        "--target",
        &url,
        "--mode",
        "mixed",
        "--users",
        "4",
        "--duration",
        "1s",
    ];
    let more = [
        "--warmup",
        "200ms",
        "--rate",
        "20",
        "--poll-interval",
        "200ms",
        "--quiet",
    ];
    let csv_path = std::env::temp_dir().join(format!("schema-{}.csv", std::process::id()));
    let csv_arg = ["--csv", csv_path.to_str().unwrap()];
    let (_, value) = run_binary(exe, &[&args[..], &more[..], &csv_arg[..]].concat());

    // The CSV has the same rows; a figure that is null in the JSON is an empty field
    // (the per-transport rows of a mixed run have no CPU per delivery), never the
    // table's `-`.
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let _ = std::fs::remove_file(&csv_path);
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines.len(), 6, "{csv}");
    let cpu = lines[0].iter().position(|c| *c == "srv_cpu_ms/1k").unwrap();
    for row in &lines[1..] {
        assert_eq!(row.len(), lines[0].len(), "{csv}");
        assert!(!row.contains(&"-"), "{csv}");
        if row[0].starts_with("mixed/") {
            assert!(row[cpu].is_empty(), "{csv}");
        }
    }

    let doc = documented();
    assert!(doc.len() > 50, "the fields table was not found");
    let mut found = Vec::new();
    leaves(&value, "", &doc, &mut found);
    for (path, actual) in &found {
        let ty = doc
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented in docs/results.md"));
        assert!(
            compatible(ty, actual),
            "{path}: documented {ty}, found {actual}"
        );
    }
    for path in doc.keys() {
        assert!(
            found.iter().any(|(p, _)| p == path),
            "{path} is documented but not written"
        );
    }
    // The names the browser page relies on.
    let run = &value["runs"][0];
    for field in [
        "latency_us",
        "deliveries",
        "requests",
        "send_lag_us",
        "server",
        "loadgen",
    ] {
        assert!(run[field].is_object(), "{field}");
    }
    assert!(run["bytes_received"].is_u64());
    assert_eq!(value["runs"].as_array().unwrap().len(), 5);
}
