//! HTTP/1.1 as raw clients send it: keep-alive, pipelining, `Connection: close`, and
//! the requests the lean path hands to hyper (chunked bodies, `Expect`, HTTP/1.0,
//! oversized or malformed heads), each answered as HTTP says.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::*;

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one answer with a `Content-Length` body.
async fn answer(reader: &mut BufReader<TcpStream>) -> Answer {
    read_answer(reader, true).await
}

/// Reads one answer, its body only if `with_body` (not for HEAD), within 5 s.
async fn read_answer(reader: &mut BufReader<TcpStream>, with_body: bool) -> Answer {
    tokio::time::timeout(Duration::from_secs(5), read_answer_now(reader, with_body))
        .await
        .expect("an answer within 5 s")
}

async fn read_answer_now(reader: &mut BufReader<TcpStream>, with_body: bool) -> Answer {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        assert!(n > 0, "connection closed before the answer; got {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    let length: usize = answer
        .header("content-length")
        .filter(|_| with_body)
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    answer.body = String::from_utf8(body).unwrap();
    answer
}

async fn connect(server: &TestServer) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(server.addr).await.unwrap())
}

async fn send(reader: &mut BufReader<TcpStream>, bytes: &str) {
    reader.get_mut().write_all(bytes.as_bytes()).await.unwrap();
}

/// True when the server closes the connection (EOF) within 5 s.
async fn closed(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest)).await,
        Ok(Ok(0))
    )
}

/// Asserts that the next answer is the read timeout's 408 with a JSON error, given no
/// earlier than `at_least` after `since`, and that the connection is then closed.
async fn assert_timed_out(
    conn: &mut BufReader<TcpStream>,
    since: std::time::Instant,
    at_least: Duration,
) {
    let late = answer(conn).await;
    let after = since.elapsed();
    assert!(after >= at_least, "answered after {after:?}");
    assert_eq!(late.status, 408, "{}", late.head);
    let error: serde_json::Value = serde_json::from_str(&late.body).unwrap();
    assert!(error["error"].is_string(), "{}", late.body);
    assert!(closed(conn).await, "the connection stays open");
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

fn post(room: &str, body: &str) -> String {
    format!(
        "POST /rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A POST whose body is sent in one chunk: the lean path hands it to hyper.
fn chunked_post(room: &str, body: &str) -> String {
    format!(
        "POST /rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

#[tokio::test]
async fn one_connection_carries_many_requests_and_pipelined_ones_answer_in_order() {
    let server = TestServer::start().await;
    let mut conn = connect(&server).await;
    send(&mut conn, &post("r", r#"{"user":"a","text":"one"}"#)).await;
    let first = answer(&mut conn).await;
    assert_eq!((first.status, first.body.as_str()), (201, r#"{"id":1}"#));
    assert!(first.header("date").is_some(), "{}", first.head);

    // Two posts and a poll in one write: three answers, in order.
    let pipelined = [
        post("r", r#"{"user":"a","text":"two"}"#),
        post("r", r#"{"user":"a","text":"three"}"#),
        "GET /rooms/r/messages?after=0 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
    ]
    .concat();
    send(&mut conn, &pipelined).await;
    assert_eq!(answer(&mut conn).await.body, r#"{"id":2}"#);
    assert_eq!(answer(&mut conn).await.body, r#"{"id":3}"#);
    let poll = answer(&mut conn).await;
    assert_eq!(poll.status, 200);
    let body: serde_json::Value = serde_json::from_str(&poll.body).unwrap();
    assert_eq!(ids(&body["messages"]), vec![1, 2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn a_body_sent_in_pieces_is_read_whole() {
    let server = TestServer::start().await;
    let mut conn = connect(&server).await;
    let request = post("r", r#"{"user":"a","text":"in pieces"}"#);
    let (head, body) = request.split_at(request.len() - 12);
    send(&mut conn, &head[..20]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut conn, &head[20..]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut conn, body).await;
    let answer = answer(&mut conn).await;
    assert_eq!((answer.status, answer.body.as_str()), (201, r#"{"id":1}"#));
    server.stop().await;
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = TestServer::start().await;
    let mut conn = connect(&server).await;
    send(
        &mut conn,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = answer(&mut conn).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        closed(&mut conn).await,
        "the server closes after the answer"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_http_1_1_request_without_one_valid_host_is_400() {
    let server = TestServer::start().await;
    for (head, status) in [
        ("GET /healthz HTTP/1.1\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1\r\nHost: a b@c\r\n\r\n", 400),
        ("GET /healthz HTTP/1.1\r\nHost: localhost:8080\r\n\r\n", 200),
        ("GET /healthz HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200),
        // HTTP/1.0 has no such rule (and goes through hyper).
        ("GET /healthz HTTP/1.0\r\n\r\n", 200),
        // Nor does the check depend on the path a request takes: a chunked body is
        // hyper's.
        (
            "POST /rooms/r/messages HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
    ] {
        let mut conn = connect(&server).await;
        send(&mut conn, head).await;
        let got = answer(&mut conn).await;
        assert_eq!(got.status, status, "{head:?}: {}", got.body);
        if status == 400 {
            assert!(got.body.contains("Host"), "{}", got.body);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn requests_the_lean_path_does_not_serve_are_answered_by_hyper() {
    let server = TestServer::start().await;

    // A chunked body, then a plain request on the same connection.
    let mut conn = connect(&server).await;
    send(
        &mut conn,
        &chunked_post("r", r#"{"user":"a","text":"chunked"}"#),
    )
    .await;
    assert_eq!(answer(&mut conn).await.body, r#"{"id":1}"#);
    send(&mut conn, HEALTHZ).await;
    assert_eq!(answer(&mut conn).await.body, "ok");

    // Expect: 100-continue gets its interim answer, then the real one.
    let mut conn = connect(&server).await;
    let body = r#"{"user":"a","text":"expected"}"#;
    send(
        &mut conn,
        &format!(
            "POST /rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        ),
    )
    .await;
    assert_eq!(answer(&mut conn).await.status, 100);
    send(&mut conn, body).await;
    assert_eq!(answer(&mut conn).await.body, r#"{"id":2}"#);

    // HTTP/1.0 and HEAD.
    let mut conn = connect(&server).await;
    send(&mut conn, "GET /healthz HTTP/1.0\r\n\r\n").await;
    let answer10 = answer(&mut conn).await;
    assert!(
        answer10.head.starts_with("HTTP/1.0 200"),
        "{}",
        answer10.head
    );
    assert_eq!(answer10.body, "ok");
    let mut conn = connect(&server).await;
    send(&mut conn, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = read_answer(&mut conn, false).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("2"));

    // A head no server could read is a JSON 400 and the connection is closed; a long
    // head (past the lean path's 16 KiB) is still served. The server serves on.
    for malformed in [
        "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        "GARBAGE\r\n\r\n",
        "POST /rooms/r/messages HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST /rooms/r/messages HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    ] {
        let mut conn = connect(&server).await;
        send(&mut conn, malformed).await;
        let refused = answer(&mut conn).await;
        assert_eq!(refused.status, 400, "{malformed:?}");
        let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert!(error["error"].is_string(), "{}", refused.body);
        assert!(
            closed(&mut conn).await,
            "{malformed:?} left the connection open"
        );
    }
    let mut conn = connect(&server).await;
    let big = "x".repeat(20_000);
    send(
        &mut conn,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(answer(&mut conn).await.body, "ok");
    let (status, _) = server.get_json("/rooms/r/messages?after=0").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_changes_nothing() {
    let server = TestServer::start().await;
    // Half a head, half a body: neither becomes a message.
    let mut conn = connect(&server).await;
    send(&mut conn, "POST /rooms/r/messages HTTP/1.1\r\nHost: x\r\n").await;
    drop(conn);
    let mut conn = connect(&server).await;
    let request = post("r", r#"{"user":"a","text":"cut short"}"#);
    send(&mut conn, &request[..request.len() - 5]).await;
    drop(conn);
    server.post("r", "a", "whole").await;
    let (status, body) = server.get_json("/rooms/r/messages?after=0").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body["messages"]), vec![1]);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_shuts_its_sending_side_still_gets_its_answers() {
    let server = TestServer::start().await;
    let mut conn = connect(&server).await;
    // A long poll held for a minute with a second request pipelined behind it, then the
    // client's end of the connection is shut for writing: the held poll is answered at
    // once, then the next request.
    send(
        &mut conn,
        "GET /rooms/r/long-poll?client=c&timeout_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.get_mut().shutdown().await.unwrap();
    let poll = tokio::time::timeout(Duration::from_secs(10), answer(&mut conn))
        .await
        .expect("the held poll is answered when the client shuts its side");
    assert_eq!(poll.status, 200);
    assert!(poll.body.contains("\"messages\":[]"), "{}", poll.body);
    assert_eq!(answer(&mut conn).await.body, "ok");
    assert!(closed(&mut conn).await, "then the server closes");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_a_held_poll_with_more_requests_behind_it_frees_its_slot() {
    let server = TestServer::start().await;
    let gauge = "lab_open_connections{transport=\"long_poll\"}";
    // A poll held for a minute with a request pipelined behind it (or a stray byte),
    // then the socket is closed: the client holds nothing, and neither may the server.
    for behind in ["GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "x"] {
        let mut conn = connect(&server).await;
        send(
            &mut conn,
            &format!(
                "GET /rooms/r/long-poll?client=c&timeout_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n{behind}"
            ),
        )
        .await;
        // Held, then let go once its client has closed.
        server.wait_for_metric(gauge, 1.0).await;
        drop(conn);
        server.wait_for_metric(gauge, 0.0).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_that_breaks_its_framing_is_400_not_413() {
    let server = TestServer::start().await;
    for chunks in [
        "zz\r\nabc\r\n0\r\n\r\n",
        "3\r\nabcXX0\r\n\r\n",
        "-1\r\nx\r\n0\r\n\r\n",
    ] {
        let mut conn = connect(&server).await;
        send(
            &mut conn,
            &format!(
                "POST /rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
            ),
        )
        .await;
        let refused = answer(&mut conn).await;
        assert_eq!(refused.status, 400, "{chunks:?}: {}", refused.body);
        assert!(refused.body.contains("\"error\""), "{}", refused.body);
    }
    // Nothing was published.
    assert_eq!(server.post("r", "u", "x").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_request_not_sent_within_the_read_timeout_is_answered_408_and_closed() {
    let mut config = config();
    config.read_timeout_ms = 300;
    let server = TestServer::with(config).await;
    let t0 = std::time::Instant::now();
    // Half a head; a head and half a body; a new connection that sends nothing.
    let mut half_head = connect(&server).await;
    send(
        &mut half_head,
        "GET /rooms/r/messages HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    let mut half_body = connect(&server).await;
    let request = post("r", r#"{"user":"a","text":"cut short"}"#);
    send(&mut half_body, &request[..request.len() - 5]).await;
    let mut silent = connect(&server).await;
    // A keep-alive connection that waits between two requests for longer than that.
    let mut idle = connect(&server).await;
    send(&mut idle, HEALTHZ).await;
    assert_eq!(answer(&mut idle).await.body, "ok");
    // Others are served meanwhile.
    assert_eq!(server.post("r", "b", "served").await, 1);

    for conn in [&mut half_head, &mut half_body, &mut silent] {
        assert_timed_out(conn, t0, Duration::from_millis(300)).await;
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut idle, HEALTHZ).await;
    assert_eq!(answer(&mut idle).await.body, "ok");
    // A later request on a kept-alive connection is timed too: its whole head, then
    // half its body.
    let t1 = std::time::Instant::now();
    send(&mut idle, &request[..request.len() - 5]).await;
    assert_timed_out(&mut idle, t1, Duration::from_millis(300)).await;
    // The cut-short message was never published.
    let (status, body) = server.get_json("/rooms/r/messages?after=0").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body["messages"]), vec![1]);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_served_by_hyper_is_closed_when_a_head_stalls() {
    let mut config = config();
    config.read_timeout_ms = 300;
    let server = TestServer::with(config).await;
    // A chunked body hands the connection to hyper; then half a head.
    let mut conn = connect(&server).await;
    send(
        &mut conn,
        &chunked_post("r", r#"{"user":"a","text":"chunked"}"#),
    )
    .await;
    assert_eq!(answer(&mut conn).await.body, r#"{"id":1}"#);
    send(&mut conn, "GET /healthz HTTP/1.1\r\n").await;
    assert!(
        closed(&mut conn).await,
        "a stalled head kept its connection"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_idle_for_the_idle_timeout_is_closed() {
    let mut config = config();
    config.idle_timeout_ms = 400;
    let server = TestServer::with(config).await;

    // A connection that asks again every 100 ms outlives several idle periods.
    let mut busy = connect(&server).await;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(1_000) {
        send(&mut busy, HEALTHZ).await;
        assert_eq!(answer(&mut busy).await.body, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A long poll held for longer than the idle timeout is not idle: it is answered,
    // and its connection serves the next request at once.
    let t1 = std::time::Instant::now();
    send(
        &mut busy,
        "GET /rooms/r/long-poll?client=c&timeout_ms=900 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let poll = answer(&mut busy).await;
    assert_eq!(poll.status, 200, "{}", poll.head);
    assert!(t1.elapsed() >= Duration::from_millis(850), "answered early");
    send(&mut busy, HEALTHZ).await;
    assert_eq!(answer(&mut busy).await.body, "ok");

    // Left idle, it is closed after the timeout, with nothing written.
    let t2 = std::time::Instant::now();
    assert!(closed(&mut busy).await, "an idle connection stayed open");
    let waited = t2.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "closed after {waited:?}"
    );
    // The server goes on serving new connections.
    let mut next = connect(&server).await;
    send(&mut next, HEALTHZ).await;
    assert_eq!(answer(&mut next).await.body, "ok");
    server.stop().await;
}

#[tokio::test]
async fn a_request_started_or_a_connection_opened_is_timed_by_the_read_timeout_not_the_idle_one() {
    let mut config = config();
    config.idle_timeout_ms = 200;
    config.read_timeout_ms = 700;
    let server = TestServer::with(config).await;
    // A new connection that sends nothing is owed a 408 at the read timeout: it has not
    // been served yet, so it is not idle.
    let t0 = std::time::Instant::now();
    let mut silent = connect(&server).await;
    // A kept-alive connection whose next request starts and then stalls: once its first
    // byte is in, the read timeout applies, not the idle one.
    let mut stalled = connect(&server).await;
    send(&mut stalled, HEALTHZ).await;
    assert_eq!(answer(&mut stalled).await.body, "ok");
    let t1 = std::time::Instant::now();
    send(&mut stalled, "GET /healthz HTTP/1.1\r\nHo").await;

    assert_timed_out(&mut stalled, t1, Duration::from_millis(650)).await;
    assert_timed_out(&mut silent, t0, Duration::from_millis(650)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_after_the_lean_path_handed_it_on_is_answered_408() {
    let mut config = config();
    config.read_timeout_ms = 300;
    let server = TestServer::with(config).await;
    let head = "POST /rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    // A chunked body cut mid-chunk, and a body behind `Expect` that never comes: both
    // are served by hyper, which times only the head.
    for stalled in [
        format!("{head}Transfer-Encoding: chunked\r\n\r\n1d\r\n{{\"use"),
        format!("{head}Content-Length: 30\r\nExpect: 100-continue\r\n\r\n{{\"user\""),
    ] {
        let mut conn = connect(&server).await;
        let since = std::time::Instant::now();
        send(&mut conn, &stalled).await;
        if stalled.contains("Expect") {
            let go_on = answer(&mut conn).await;
            assert_eq!(go_on.status, 100, "{}", go_on.head);
        }
        assert_timed_out(&mut conn, since, Duration::from_millis(300)).await;
    }
    // Nothing was published by either, and the room serves.
    assert_eq!(server.post("r", "u", "after").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let mut config = config();
    config.max_message_bytes = 10;
    let server = TestServer::with(config).await;
    let head = "POST /rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    for declared in [
        format!("{head}Content-Length: 100000\r\n\r\n"),
        format!("{head}Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n"),
    ] {
        let mut conn = connect(&server).await;
        send(&mut conn, &declared).await;
        let refused = answer(&mut conn).await;
        assert_eq!(refused.status, 413, "{}", refused.head);
        let error: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert!(error["error"].is_string(), "{}", refused.body);
    }
    assert_eq!(server.post("r", "u", "after").await, 1);
    server.stop().await;
}
