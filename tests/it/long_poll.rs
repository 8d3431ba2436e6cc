//! Long polling: held until a message, answered at once, timeouts, per-client queues.

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test]
async fn a_held_poll_is_answered_as_soon_as_a_message_is_posted() {
    let server = TestServer::start().await;
    let url = server.url("/rooms/r/long-poll?client=c&timeout_ms=10000");
    let http = server.http.clone();
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
        (body, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll was not held");
    let id = server.post("r", "u", "now").await;
    let posted = Instant::now();
    let (body, answered) = poll.await.unwrap();
    assert_eq!(ids(&body["messages"]), vec![id]);
    assert_eq!(body["last_id"], id);
    assert!(answered.duration_since(started) >= Duration::from_millis(300));
    // Generous bound for a busy CI machine; typically well under 5 ms.
    let lag = answered.saturating_duration_since(posted);
    assert!(
        lag < Duration::from_millis(500),
        "answered {lag:?} after the post"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_poll_times_out_with_an_empty_list() {
    let server = TestServer::start().await;
    server.post("r", "u", "old").await;
    let started = Instant::now();
    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=300")
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(ids.is_empty());
    assert_eq!(body["last_id"], 1);
    server.stop().await;
}

#[tokio::test]
async fn messages_posted_between_polls_wait_in_the_clients_queue() {
    let server = TestServer::start().await;
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert!(ids.is_empty());
    for _ in 0..3 {
        server.post("r", "u", "x").await;
    }
    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(body["last_id"], 3);
    // Another client's queue started later and is its own.
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=d&timeout_ms=0")
        .await;
    assert!(ids.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn after_re_asks_for_an_answer_lost_in_transit() {
    let server = TestServer::start().await;
    server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    for _ in 0..3 {
        server.post("r", "u", "x").await;
    }
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![1, 2, 3]);
    // The client never saw that answer and asks again from where it was.
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=c&after=0&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![1, 2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn an_after_beyond_the_newest_id_answers_where_now_is() {
    let server = TestServer::start().await;
    for _ in 0..4 {
        server.post("r", "u", "x").await;
    }
    // A client that comes back from a server that had got further (or restarted) is
    // answered at once, not held past the messages it would never be sent.
    let started = Instant::now();
    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&after=100&timeout_ms=5000")
        .await;
    assert!(started.elapsed() < Duration::from_secs(4), "held");
    assert!(ids.is_empty());
    assert_eq!(body["last_id"], 4, "{body}");
    server.post("r", "u", "after the restart").await;
    // Continuing with `after=last_id`, as the protocol says, it gets what came since.
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=c&after=4&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![5]);
    // An empty answer to a client that is up to date still names its cursor.
    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    assert!(ids.is_empty());
    assert_eq!(body["last_id"], 5, "{body}");
    // Its queue went on from where now was: a client that polls on without `after`
    // after such an answer is not made to pass over the ids up to its old one.
    server
        .poll("/rooms/r/long-poll?client=d&after=100&timeout_ms=0")
        .await;
    server.post("r", "u", "next").await;
    let (ids, _) = server
        .poll("/rooms/r/long-poll?client=d&timeout_ms=0")
        .await;
    assert_eq!(ids, vec![6]);
    server.stop().await;
}

#[tokio::test]
async fn limit_splits_a_full_queue_over_several_answers() {
    let server = TestServer::start().await;
    server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    for _ in 0..5 {
        server.post("r", "u", "x").await;
    }
    let (ids, _) = server.poll("/rooms/r/long-poll?client=c&limit=3").await;
    assert_eq!(ids, vec![1, 2, 3]);
    let (ids, _) = server.poll("/rooms/r/long-poll?client=c&limit=3").await;
    assert_eq!(ids, vec![4, 5]);
    server.stop().await;
}

#[tokio::test]
async fn bad_long_poll_parameters_are_400() {
    let server = TestServer::start().await;
    for path in [
        "/rooms/r/long-poll",
        "/rooms/r/long-poll?client=c&timeout_ms=60001",
        "/rooms/r/long-poll?client=c&timeout_ms=-1",
        "/rooms/r/long-poll?client=c&after=x",
        "/rooms/r/long-poll?client=",
    ] {
        let (status, body) = server.get_json(path).await;
        assert_eq!(status, 400, "{path}");
        assert!(body["error"].is_string(), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_queue_answers_what_history_no_longer_holds() {
    let mut config = config();
    config.history = 5;
    config.queue_capacity = 100;
    let server = TestServer::with(config).await;
    server
        .poll("/rooms/r/long-poll?client=c&timeout_ms=0")
        .await;
    for _ in 0..20 {
        server.post("r", "u", "x").await;
    }
    // History holds 16..20, but the client's queue still has all twenty.
    let (ids, body) = server
        .poll("/rooms/r/long-poll?client=c&after=0&timeout_ms=0")
        .await;
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert!(body.get("gap").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_second_poller_under_the_same_client_name_ends_the_first_with_a_conflict() {
    let server = TestServer::start().await;
    let url = server.url("/rooms/r/long-poll?client=shared&timeout_ms=10000");
    let first = {
        let (http, url) = (server.http.clone(), url.clone());
        tokio::spawn(async move {
            let answer = http.get(url).send().await.unwrap();
            let status = answer.status();
            (
                status,
                answer.json::<serde_json::Value>().await.unwrap(),
                Instant::now(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!first.is_finished(), "the first poll was not held");
    let second = {
        let (http, url) = (server.http.clone(), url.clone());
        tokio::spawn(async move {
            let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            body
        })
    };
    let asked = Instant::now();
    // Not an ordinary empty answer, which a client polls again on at once (two such
    // clients would release each other's polls as fast as they can ask), but 409.
    let (status, body, answered) = first.await.unwrap();
    assert_eq!(status, 409);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("newer poll") && error.contains("shared"),
        "{error}"
    );
    assert!(answered.duration_since(asked) < Duration::from_secs(5));
    // The second is held, and gets what comes next.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second poll was not held");
    let id = server.post("r", "u", "next").await;
    assert_eq!(ids(&second.await.unwrap()["messages"]), vec![id]);
    server.stop().await;
}

/// The long poll is answered before the router (`http1::Direct`), but the router keeps
/// its route: `lab::router` alone, served here by axum's own server, answers a long
/// poll as the lab does, in its messages and in its refusals.
#[tokio::test]
async fn the_router_alone_answers_long_polls_as_the_lab_does() {
    let lab = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router_addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let state = lab::state::Shared::new(config(), shutdown.clone());
    let stop = shutdown.clone();
    let router_only = tokio::spawn(async move {
        axum::serve(listener, lab::router(state))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for base in [
        format!("http://{}", lab.addr),
        format!("http://{router_addr}"),
    ] {
        let post = |text: &'static str| {
            http.post(format!("{base}/rooms/r/messages"))
                .json(&serde_json::json!({"user": "u", "text": text}))
                .send()
        };
        let get = |path: &'static str| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                let response = http.get(url).send().await.unwrap();
                let status = response.status().as_u16();
                let mut body: serde_json::Value = response.json().await.unwrap();
                // The times differ from one server to the other; the rest may not.
                for message in body["messages"].as_array_mut().into_iter().flatten() {
                    message.as_object_mut().unwrap().remove("server_ts");
                }
                (status, body)
            }
        };
        assert_eq!(post("first").await.unwrap().status(), 201);
        let mut these = vec![get("/rooms/r/long-poll?client=c&after=0&timeout_ms=0").await];
        let held = tokio::spawn(get("/rooms/r/long-poll?client=c&timeout_ms=5000"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "{base}: the poll was not held");
        assert_eq!(post("second").await.unwrap().status(), 201);
        these.push(held.await.unwrap());
        for refused in [
            "/rooms/%ff/long-poll?client=c",
            "/rooms/r/long-poll?timeout_ms=0",
            "/rooms/r/long-poll?client=c&client=d",
            "/rooms/r/long-poll?client=c&timeout_ms=60001",
            "/rooms/r/long-poll?client=c&after=x",
        ] {
            these.push(get(refused).await);
        }
        answers.push(these);
    }
    let [direct, routed] = <[_; 2]>::try_from(answers).unwrap();
    assert_eq!(direct[0].0, 200);
    assert_eq!(ids(&direct[0].1["messages"]), vec![1]);
    assert_eq!(ids(&direct[1].1["messages"]), vec![2]);
    assert!(direct[2..].iter().all(|(status, _)| *status == 400));
    assert_eq!(direct, routed);
    shutdown.cancel();
    router_only.await.unwrap().unwrap();
    lab.stop().await;
}
