//! Operations: `/healthz`, `/metrics` by transport, and the embedded page.

use crate::common::*;

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_deliveries_and_bytes_by_transport() {
    let server = TestServer::start().await;
    for transport in lab::transport::NAMES {
        let series = format!("lab_requests_total{{transport=\"{transport}\"}}");
        assert_eq!(server.metric(&series).await, 0.0, "{series}");
    }
    server.post("r", "u", "hello").await;
    let (_, body) = server.poll("/rooms/r/messages").await;
    assert_eq!(server.metric("lab_messages_published_total").await, 1.0);
    assert_eq!(
        server
            .metric("lab_requests_total{transport=\"poll\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("lab_deliveries_total{transport=\"poll\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("lab_bytes_sent_total{transport=\"poll\"}")
            .await,
        body.to_string().len() as f64
    );
    // The server runs in this process: spend some CPU so the counter has ticked.
    let started = std::time::Instant::now();
    let mut x = 1u64;
    while started.elapsed() < std::time::Duration::from_millis(50) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    assert!(server.metric("process_cpu_seconds_total").await >= 0.04);
    assert!(server.metric("process_resident_memory_bytes").await > 1e6);
    assert!(server.metric("process_open_fds").await > 0.0);
    server.stop().await;
}

#[tokio::test]
async fn the_page_and_its_files_are_served_from_the_binary() {
    let server = TestServer::start().await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let ct = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    server.stop().await;
}
