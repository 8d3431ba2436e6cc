//! `/api/results/latest`: the newest load-generator run, or 204 when there is none.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

/// A server whose `--results-dir` is a fresh folder named after `name`, with `config`.
async fn with_results_dir(name: &str, mut config: lab::Config) -> (PathBuf, TestServer) {
    let dir = std::env::temp_dir().join(format!("lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    config.results_dir = dir.clone();
    (dir, TestServer::with(config).await)
}

#[tokio::test]
async fn the_newest_results_file_is_served_and_none_is_204() {
    let (dir, server) = with_results_dir("results", config()).await;
    let url = server.url("/api/results/latest");

    let none = server.http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 204);

    std::fs::write(dir.join("old.json"), r#"{"runs":[],"name":"old"}"#).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("new.json"), r#"{"runs":[],"name":"new"}"#).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a run").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // A folder whose name ends in .json is not a run, however new.
    std::fs::create_dir_all(dir.join("sweep.json")).unwrap();
    let (status, body) = server.get_json("/api/results/latest").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "new");
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_results_file_over_the_limit_is_an_error_not_read_into_memory() {
    let mut config = config();
    config.max_results_bytes = 64;
    let (dir, server) = with_results_dir("results-big", config).await;
    let fits = r#"{"runs":[],"name":"fits"}"#;
    std::fs::write(dir.join("a.json"), fits).unwrap();
    let (status, body) = server.get_json("/api/results/latest").await;
    assert_eq!((status, &body["name"]), (200, &serde_json::json!("fits")));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        dir.join("b.json"),
        format!(r#"{{"runs":[],"pad":"{}"}}"#, "x".repeat(64)),
    )
    .unwrap();
    let (status, body) = server.get_json("/api/results/latest").await;
    assert_eq!(status, 500);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("b.json") && error.contains("--max-results-bytes"),
        "{error}"
    );
    // Still serving.
    assert_eq!(server.post("r", "u", "after").await, 1);
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
