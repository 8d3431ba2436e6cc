//! Every error status of the protocol, with its JSON body; the server serves after.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// A message to `room` that the server refuses with 503 (over `--max-rooms`); its error.
async fn refused_room(server: &TestServer, room: &str) -> String {
    let response = server
        .http
        .post(server.url(&format!("/rooms/{room}/messages")))
        .json(&json!({"user": "u", "text": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(response, 503).await
}

async fn expect_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().expect("an error message").to_owned()
}

#[tokio::test]
async fn bad_posts_get_400_413_415_and_change_nothing() {
    let mut config = config();
    config.max_message_bytes = 10;
    let server = TestServer::with(config).await;
    let url = server.url("/rooms/r/messages");
    let post_raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = server.http.post(&url).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let json = Some("application/json");
    for (body, status) in [
        ("{not json", 400),
        (r#"{"text":"no user"}"#, 400),
        (r#"{"user":"u"}"#, 400),
        (r#"{"user":"","text":"x"}"#, 400),
        (r#"{"user":"a\nb","text":"x"}"#, 400),
        (r#"{"user":"u","text":""}"#, 400),
        (r#"{"user":"u","text":"x","client_ts":"soon"}"#, 400),
        (r#"{"user":"u","text":"x","client_ts":1.5}"#, 400),
        (r#"{"user":"u","text":"eleven byte"}"#, 413),
    ] {
        let error = expect_error(post_raw(body, json).await.unwrap(), status).await;
        assert!(!error.is_empty(), "{body}");
    }
    expect_error(
        post_raw(r#"{"user":"u","text":"x"}"#, None).await.unwrap(),
        415,
    )
    .await;
    expect_error(
        post_raw(r#"{"user":"u","text":"x"}"#, Some("text/plain"))
            .await
            .unwrap(),
        415,
    )
    .await;
    let huge: &'static str = Box::leak("y".repeat(1 << 20).into_boxed_str());
    expect_error(post_raw(huge, json).await.unwrap(), 413).await;

    // Parameters on the content type are allowed; null client_ts is fine.
    let response = post_raw(
        r#"{"user":"u","text":"ok","client_ts":null}"#,
        Some("application/json; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"id": 1}));
    server.stop().await;
}

#[tokio::test]
async fn bad_paths_and_parameters() {
    let server = TestServer::start().await;
    let cases = [
        ("/nowhere", 404),
        ("/rooms/r", 404),
        ("/rooms/bad%20room/messages", 400),
        (&*format!("/rooms/{}/messages", "a".repeat(65)), 400),
        ("/rooms/r/messages?after=-1", 400),
        ("/rooms/r/messages?after=abc", 400),
        ("/rooms/r/messages?limit=0", 400),
        ("/rooms/r/events?after=x", 400),
        ("/rooms/r/ws", 400),
        ("/rooms/r/ws?user=", 400),
        // Percent-escapes that are not UTF-8, in the room and in a name.
        ("/rooms/%ff/messages", 400),
        ("/rooms/%ff/events", 400),
        ("/rooms/r/long-poll?client=%ff", 400),
        // The long poll is answered before the router: its path is read the same way.
        ("/rooms/%ff/long-poll?client=c&timeout_ms=0", 400),
        ("/rooms/a%2Fb/long-poll?client=c&timeout_ms=0", 400),
        ("/rooms/r/long-poll/?client=c&timeout_ms=0", 404),
        ("/rooms/r/x/long-poll?client=c&timeout_ms=0", 404),
        ("/rooms/r/ws?user=%ff", 400),
        // One parameter given twice: which of the two was meant cannot be known.
        ("/rooms/r/messages?after=1&after=2", 400),
        ("/rooms/r/long-poll?client=c&client=d&timeout_ms=0", 400),
    ];
    for (path, status) in cases {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        let error = expect_error(response, status).await;
        if path.contains("%ff") {
            assert!(
                error.contains("UTF-8") || error.contains("room must"),
                "{path}: {error}"
            );
        }
        if path.contains("&after=") || path.contains("&client=") {
            assert!(error.contains("more than once"), "{path}: {error}");
        }
    }
    let response = server
        .http
        .delete(server.url("/rooms/r/messages"))
        .send()
        .await
        .unwrap();
    expect_error(response, 405).await;
    // A HEAD would take a long-poll client's queued messages and drop them.
    let response = server
        .http
        .head(server.url("/rooms/r/long-poll?client=c&timeout_ms=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    // Nor does any other method's refusal offer HEAD there.
    let response = server
        .http
        .post(server.url("/rooms/r/long-poll?client=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    expect_error(response, 405).await;
    // Still serving.
    assert_eq!(server.post("r", "u", "after errors").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn over_a_limit_is_429_or_503_and_others_are_unaffected() {
    let mut config = config();
    config.max_rooms = 1;
    config.max_clients_per_room = 1;
    config.max_connections = 1;
    let server = TestServer::with(config).await;
    assert_eq!(server.post("one", "u", "x").await, 1);
    assert!(refused_room(&server, "two").await.contains("rooms"));

    server
        .poll("/rooms/one/long-poll?client=a&timeout_ms=0")
        .await;
    let response = server
        .http
        .get(server.url("/rooms/one/long-poll?client=b&timeout_ms=0"))
        .send()
        .await
        .unwrap();
    assert!(expect_error(response, 429).await.contains("clients"));

    let mut events = server.sse("/rooms/one/events").await;
    let response = server
        .http
        .get(server.url("/rooms/one/events"))
        .send()
        .await
        .unwrap();
    assert!(expect_error(response, 503).await.contains("connections"));
    let response = server
        .ws_handshake("/rooms/one/ws", "dGhlIHNhbXBsZSBub25jZQ==")
        .await;
    expect_error(response, 503).await;

    // A long poll that will be held needs the slot; one answered at once does not.
    let response = server
        .http
        .get(server.url("/rooms/one/long-poll?client=a&timeout_ms=50"))
        .send()
        .await
        .unwrap();
    assert!(expect_error(response, 503).await.contains("connections"));
    let (status, body) = server
        .get_json("/rooms/one/long-poll?client=a&timeout_ms=0")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["last_id"], 1);

    // The stream that holds the slot still gets messages.
    assert_eq!(server.post("one", "u", "y").await, 2);
    assert_eq!(sse_next(&mut events).await["id"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_refused_request_leaves_no_room_or_client_behind() {
    let mut config = config();
    config.max_connections = 0;
    config.max_rooms = 1;
    config.max_clients_per_room = 1;
    let server = TestServer::with(config).await;
    for path in [
        "/rooms/a/events",
        "/rooms/a/long-poll?client=c&timeout_ms=50",
    ] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        expect_error(response, 503).await;
    }
    // Reading a room nobody has written to answers empty and makes nothing, so typos
    // cannot use up --max-rooms.
    let (status, body) = server.get_json("/rooms/a/messages?after=5").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"messages": [], "last_id": 0}));
    // Nor does a refused message.
    let refused = server
        .http
        .post(server.url("/rooms/a/messages"))
        .header("content-type", "application/json")
        .body(r#"{"user":"u","text":""}"#)
        .send()
        .await
        .unwrap();
    expect_error(refused, 400).await;
    let refused = server
        .http
        .post(server.url("/rooms/a/messages"))
        .body(r#"{"user":"u","text":"x"}"#)
        .send()
        .await
        .unwrap();
    expect_error(refused, 415).await;
    // Room "a" was never made, so the one room allowed can still be "b".
    assert_eq!(server.post("b", "u", "x").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn rooms_made_up_by_readers_do_not_use_up_the_room_limit() {
    let mut config = config();
    config.max_rooms = 2;
    config.client_idle_ms = 50;
    let server = TestServer::with(config).await;
    // Reading makes a room: long polls and a stream in names nobody writes to.
    for room in ["typo-1", "typo-2"] {
        server
            .poll(&format!("/rooms/{room}/long-poll?client=c&timeout_ms=0"))
            .await;
    }
    // Their queues expire; the rooms are empty and nobody holds them.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stream = server.sse("/rooms/typo-3/events").await;
    assert_eq!(server.post("real", "u", "first").await, 1);
    // While the stream is open its room is in use: both slots are taken.
    assert!(refused_room(&server, "another").await.contains("rooms"));
    // Once the stream has gone, its empty room is let go for a new one.
    drop(stream);
    server
        .wait_for_metric("lab_open_connections{transport=\"sse\"}", 0.0)
        .await;
    assert_eq!(server.post("another", "u", "x").await, 1);
    // The rooms with messages kept theirs.
    assert_eq!(server.poll("/rooms/real/messages?after=0").await.0, [1]);
    server.stop().await;
}
