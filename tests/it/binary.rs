//! The `lab` binary itself: it logs the URL to open and stops cleanly on SIGTERM with
//! a stream and a socket open.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::common::ChildLab;

#[tokio::test]
async fn the_binary_logs_its_url_and_stops_on_sigterm_within_5_s() {
    let mut lab = ChildLab::start();
    let url = lab.url.clone();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    let http = reqwest::Client::new();
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    let events = http
        .get(format!("{url}rooms/r/events"))
        .send()
        .await
        .unwrap();
    let mut body = events.bytes_stream();
    body.next().await.unwrap().unwrap();
    let ws_url = url.replace("http://", "ws://") + "rooms/r/ws";
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &lab.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while body.next().await.is_some() {}
    while let Some(Ok(_)) = ws.next().await {}
    let status = loop {
        if let Some(status) = lab.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}
