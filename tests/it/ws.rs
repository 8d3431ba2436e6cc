//! WebSocket: receiving, sending over the socket, bad frames, close codes, pings.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::common::*;

async fn open_websockets(server: &TestServer) -> f64 {
    server
        .metric("lab_open_connections{transport=\"ws\"}")
        .await
}

async fn close_code(ws: &mut WsStream) -> CloseCode {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => return close.code,
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error before close: {e}"),
        }
    }
}

#[tokio::test]
async fn a_posted_message_arrives_as_one_text_frame() {
    let server = TestServer::start().await;
    server.post("r", "u", "before").await;
    let mut ws = server.ws("/rooms/r/ws").await;
    server.post("r", "alice", "hi").await;
    let m = ws_next(&mut ws).await;
    assert_eq!(m["id"], 2, "starts with new messages only");
    assert_eq!(m["user"], "alice");
    assert_eq!(m["text"], "hi");
    server.stop().await;
}

#[tokio::test]
async fn a_frame_sent_on_the_socket_is_published_as_the_sockets_user() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/rooms/r/ws?user=bob").await;
    ws.send(Message::text(r#"{"text":"from ws","client_ts":42}"#))
        .await
        .unwrap();
    let m = ws_next(&mut ws).await;
    assert_eq!(m["id"], 1);
    assert_eq!(m["user"], "bob");
    assert_eq!(m["text"], "from ws");
    assert_eq!(m["client_ts"], 42);
    let (ids, _) = server.poll("/rooms/r/messages").await;
    assert_eq!(ids, vec![1]);
    server.stop().await;
}

#[tokio::test]
async fn bad_frames_get_an_error_frame_and_the_socket_stays_open() {
    let mut config = config();
    config.max_message_bytes = 8;
    let server = TestServer::with(config).await;
    let mut ws = server.ws("/rooms/r/ws?user=bob").await;
    for bad in [
        "not json",
        r#"{"client_ts":1}"#,
        r#"{"text":"ok","client_ts":"soon"}"#,
        r#"{"text":"ok","client_ts":1.5}"#,
        r#"{"text":""}"#,
        r#"{"text":"nine bytes"}"#,
    ] {
        ws.send(Message::text(bad)).await.unwrap();
        let reply = ws_next(&mut ws).await;
        assert!(reply["error"].is_string(), "{bad}: {reply}");
        assert!(reply.get("id").is_none());
    }
    ws.send(Message::text(r#"{"text":"fine"}"#)).await.unwrap();
    assert_eq!(ws_next(&mut ws).await["text"], "fine");
    server.stop().await;
}

#[tokio::test]
async fn a_socket_without_user_receives_but_cannot_send() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/rooms/r/ws").await;
    ws.send(Message::text(r#"{"text":"hi"}"#)).await.unwrap();
    assert!(ws_next(&mut ws).await["error"].is_string());
    let (ids, _) = server.poll("/rooms/r/messages").await;
    assert!(ids.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/rooms/r/ws?user=u").await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Unsupported);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/rooms/r/ws?user=u").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x7b], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Invalid);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_that_breaks_the_framing_rules_closes_with_1002() {
    let server = TestServer::start().await;
    let reserved = Frame::message(vec![b'x'], OpCode::Data(Data::Reserved(3)), true);
    let header = FrameHeader {
        rsv1: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let reserved_bit = Frame::from_payload(header, vec![b'x'].into());
    for frame in [reserved, reserved_bit] {
        let mut ws = server.ws("/rooms/r/ws?user=u").await;
        ws.send(Message::Frame(frame)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, CloseCode::Protocol);
    }
    assert_eq!(server.post("r", "u", "still here").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_handshake_whose_key_is_not_16_bytes_of_base64_is_400() {
    let mut config = config();
    config.max_rooms = 1;
    let server = TestServer::with(config).await;
    for key in [
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25*ZQ==",
        "dGhlIHNhbXBsZSBub25jZSEh",
    ] {
        let response = server.ws_handshake("/rooms/r/ws", key).await;
        assert_eq!(response.status(), 400, "{key}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("Sec-WebSocket-Key"),
            "{body}"
        );
    }
    // Refused before the room was made: the only room the server may make is free.
    assert_eq!(server.post("other", "u", "x").await, 1);
    // The RFC's own example key is taken (in the room that exists).
    let taken = server
        .ws_handshake("/rooms/other/ws", "dGhlIHNhbXBsZSBub25jZQ==")
        .await;
    assert_eq!(taken.status(), 101);
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_is_not_a_websocket_handshake_is_400_saying_why() {
    let server = TestServer::start().await;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let handshake = |connection: &'static str, upgrade: &'static str, version: &'static str| {
        server
            .http
            .get(server.url("/rooms/r/ws"))
            .header("connection", connection)
            .header("upgrade", upgrade)
            .header("sec-websocket-version", version)
            .header("sec-websocket-key", key)
            .send()
    };
    for (connection, upgrade, version, why) in [
        (
            "keep-alive",
            "websocket",
            "13",
            "`Connection` does not include `upgrade`",
        ),
        (
            "upgrade",
            "h2c",
            "13",
            "`Upgrade` does not include `websocket`",
        ),
        (
            "upgrade",
            "websocket",
            "8",
            "`Sec-WebSocket-Version` is not 13",
        ),
    ] {
        let refused = handshake(connection, upgrade, version).await.unwrap();
        assert_eq!(refused.status(), 400, "{connection} {upgrade} {version}");
        // RFC 6455 4.2.2: a version the server does not speak is answered with the
        // one it does.
        let named = refused.headers().get("sec-websocket-version");
        assert_eq!(named.is_some(), version != "13", "{version}: {named:?}");
        if let Some(named) = named {
            assert_eq!(named, "13");
        }
        let body: serde_json::Value = refused.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("not a WebSocket upgrade") && error.ends_with(why),
            "{error}"
        );
    }
    // Header values are token lists, in any case.
    let taken = handshake("keep-alive, Upgrade", "WebSocket", "13")
        .await
        .unwrap();
    assert_eq!(taken.status(), 101);
    // A plain GET is no handshake either, nor is a HEAD that asks for one (the route
    // takes HEAD with GET).
    assert_eq!(server.get_json("/rooms/r/ws").await.0, 400);
    let open = "lab_open_connections{transport=\"ws\"}";
    let before = server.metric(open).await;
    let head = handshake_headers(server.http.head(server.url("/rooms/r/ws")), key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 400);
    assert_eq!(server.metric(open).await, before, "no socket was opened");
    server.stop().await;
}

#[tokio::test]
async fn frames_sent_with_the_handshake_are_read_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The handshake and the first frames in one write: they arrive before the server
    // has answered, so they are read with the request, 12 KB of them: more than one
    // read of the request takes.
    let mut bytes = raw_handshake("/rooms/r/ws?user=early");
    let texts: Vec<String> = (1..=4)
        .map(|i| format!("{i}{}", "x".repeat(2999)))
        .collect();
    for text in &texts {
        let payload = format!(r#"{{"text":"{text}"}}"#);
        let mask = [1, 2, 3, 4];
        bytes.extend([0x81, 0x80 | 126]);
        bytes.extend((payload.len() as u16).to_be_bytes());
        bytes.extend(mask);
        bytes.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
    tcp.write_all(&bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut published = Vec::new();
    for _ in 0..100 {
        let (ids, page) = server.poll("/rooms/r/messages").await;
        published = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["user"].as_str().unwrap().to_owned(),
                    m["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if ids.len() == texts.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Vec<_> = texts
        .iter()
        .map(|t| ("early".to_owned(), t.clone()))
        .collect();
    assert_eq!(published, sent);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_over_16_times_the_message_limit_closes_with_1009() {
    let mut config = config();
    config.max_message_bytes = 64;
    let server = TestServer::with(config).await;
    let mut ws = server.ws("/rooms/r/ws?user=u").await;
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(64 * 16 + 1));
    ws.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Size);
    // Nobody else is affected.
    assert_eq!(server.post("r", "u", "still here").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn idle_sockets_are_pinged() {
    let mut config = config();
    config.ws_ping_ms = 100;
    let server = TestServer::with(config).await;
    let mut ws = server.ws("/rooms/r/ws").await;
    let frame = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(frame, Message::Ping(_)), "{frame:?}");
    // Reading lets tungstenite answer the pings, so the socket stays open.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
    while tokio::time::Instant::now() < deadline {
        if let Ok(next) = tokio::time::timeout_at(deadline, ws.next()).await {
            assert!(matches!(next, Some(Ok(Message::Ping(_)))), "{next:?}");
        }
    }
    assert_eq!(open_websockets(&server).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_catches_up_on_a_backlog_is_not_closed_for_the_pings_it_missed() {
    let mut config = config();
    config.ws_ping_ms = 200;
    config.history = 20_000;
    let server = TestServer::with(config).await;
    // 5 MB behind the reader, which reads about 5 MB a second: its pings wait behind
    // a second of messages queued for it, five ping periods.
    let text = "x".repeat(1000);
    for _ in 0..100 {
        futures_util::future::join_all((0..50).map(|_| server.post("r", "u", &text))).await;
    }
    let mut ws = with_receive_buffer(&server, "/rooms/r/ws?after=0", 64 * 1024).await;
    let mut got = 0;
    let mut until = None;
    loop {
        let wait = until.unwrap_or(tokio::time::Instant::now() + Duration::from_secs(20));
        let Ok(next) = tokio::time::timeout_at(wait, ws.next()).await else {
            break;
        };
        match next {
            Some(Ok(Message::Text(_))) => {
                got += 1;
                if got % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if got == 5000 {
                    // Caught up; reading on answers the pings.
                    until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("after {got} messages: {other:?}"),
        }
    }
    assert_eq!(got, 5000);
    assert_eq!(open_websockets(&server).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_reads_a_busy_room_but_never_answers_pings_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = config();
    config.ws_ping_ms = 100;
    let server = TestServer::with(config).await;
    // A raw socket: it reads what comes, slowly through a small window, and never
    // writes a pong.
    let mut stream = with_receive_buffer_tcp(&server, 4096).await;
    stream
        .write_all(&raw_handshake("/rooms/r/ws"))
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    server
        .wait_for_metric("lab_open_connections{transport=\"ws\"}", 1.0)
        .await;
    // About 50 KB a second into the room: always something on its way to the peer,
    // and less than it reads, so its pings reach it.
    let text = "x".repeat(1000);
    let talk = async {
        loop {
            server.post("r", "u", &text).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = talk => {}
        () = server.wait_for_metric("lab_open_connections{transport=\"ws\"}", 0.0) => {}
    }
    reader.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let mut config = config();
    config.ws_ping_ms = 100;
    let server = TestServer::with(config).await;
    // A socket nobody reads never answers a ping.
    let _silent = server.ws("/rooms/r/ws").await;
    server
        .wait_for_metric("lab_open_connections{transport=\"ws\"}", 1.0)
        .await;
    server
        .wait_for_metric("lab_open_connections{transport=\"ws\"}", 0.0)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_while_owed_replies_is_let_go_after_the_write_limit() {
    let mut config = config();
    // Writes are given two ping periods: 200 ms.
    config.ws_ping_ms = 100;
    let server = TestServer::with(config).await;
    let (mut tx, _never_read) = never_reading(&server, "/rooms/r/ws?user=u").await;
    // Frames that each get an error frame back, until the server stops taking them.
    let flood = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < until {
            let sent = tokio::time::timeout_at(until, tx.send(Message::text("not json"))).await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
    });
    // The session of a peer that does not read its replies is closed.
    server
        .wait_for_metric("lab_open_connections{transport=\"ws\"}", 0.0)
        .await;
    flood.abort();
    // The room is unaffected.
    assert_eq!(server.post("r", "u", "after").await, 1);
    server.stop().await;
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket to `path` with a 4 KiB receive buffer, split: the caller keeps the
/// reading half and never reads it, so the server's writes soon cannot proceed.
async fn never_reading(
    server: &TestServer,
    path: &str,
) -> (SplitSink<RawWs, Message>, SplitStream<RawWs>) {
    with_receive_buffer(server, path, 4096).await.split()
}

/// A WebSocket to `path` whose socket receive buffer is `bytes`: what the reader has
/// not read stays on the server's side.
async fn with_receive_buffer(server: &TestServer, path: &str, bytes: u32) -> RawWs {
    let stream = with_receive_buffer_tcp(server, bytes).await;
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(path), stream)
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn a_peer_that_pings_without_reading_costs_the_server_bounded_memory() {
    let lab = ChildLab::start();
    let stream = receive_buffer_tcp(lab.addr, 4096).await;
    let url = format!("ws://{}/rooms/r/ws", lab.addr);
    let (ws, _) = tokio_tungstenite::client_async(url.clone(), stream)
        .await
        .unwrap();
    let (mut tx, _never_read) = ws.split();
    let before = lab.rss_bytes().await;
    // 400,000 pings of 125 bytes: 50 MB of pongs owed to a peer that reads none.
    let payload = bytes::Bytes::from(vec![b'p'; 125]);
    let flood = async {
        for i in 0..400_000u32 {
            tx.feed(Message::Ping(payload.clone())).await?;
            if i % 1000 == 0 {
                tx.flush().await?;
            }
        }
        tx.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(20), flood).await;
    // Let the server read what is on the way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = lab.rss_bytes().await - before;
    assert!(
        grown < (20 << 20) as f64,
        "the server's memory grew by {:.0} MiB",
        grown / (1 << 20) as f64
    );
    // Others are served.
    let (mut reader, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let posted = reqwest::Client::new()
        .post(format!("http://{}/rooms/r/messages", lab.addr))
        .json(&serde_json::json!({"user": "u", "text": "still here", "client_ts": now_micros()}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let id = posted.json::<serde_json::Value>().await.unwrap()["id"].clone();
    assert_eq!(ws_next(&mut reader).await["id"], id);
}

/// A WebSocket handshake for `path`, as bytes to write on a bare connection.
fn raw_handshake(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_fall_behind_the_fan_out_and_catch_up_get_every_message_once_in_order() {
    let server = std::sync::Arc::new(TestServer::start().await);
    const EACH: usize = 400;
    const SENDERS: usize = 4;
    // Readers that keep up, and readers with a small window that read in spurts:
    // the room's fan-out hands these back and takes them up again, many times over.
    let mut readers = Vec::new();
    for _ in 0..8 {
        readers.push((server.ws("/rooms/r/ws").await, false));
    }
    for _ in 0..4 {
        let stream = with_receive_buffer_tcp(&server, 8 * 1024).await;
        let plain = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (ws, _) = tokio_tungstenite::client_async(server.ws_url("/rooms/r/ws"), plain)
            .await
            .unwrap();
        readers.push((ws, true));
    }
    let text = "y".repeat(4000);
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (server, text) = (server.clone(), text.clone());
            tokio::spawn(async move {
                if s % 2 == 0 {
                    for _ in 0..EACH {
                        server.post("r", "u", &text).await;
                    }
                } else {
                    // A sender's socket is a reader too: what comes to it is drained.
                    let (mut tx, mut rx) = server.ws("/rooms/r/ws?user=w").await.split();
                    let drain = tokio::spawn(async move { while rx.next().await.is_some() {} });
                    let frame = serde_json::json!({ "text": text }).to_string();
                    for _ in 0..EACH {
                        tx.send(Message::text(frame.clone())).await.unwrap();
                    }
                    tx.close().await.unwrap();
                    drain.await.unwrap();
                }
            })
        })
        .collect();
    let total = (EACH * SENDERS) as u64;
    let reads = readers.into_iter().map(|(mut ws, slow)| async move {
        let mut ids = Vec::new();
        while ids.len() < total as usize {
            ids.push(ws_next(&mut ws).await["id"].as_u64().unwrap());
            if slow && ids.len() % 25 == 0 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        (ws, ids)
    });
    let mut got = futures_util::future::join_all(reads).await;
    for sender in senders {
        sender.await.unwrap();
    }
    let expected: Vec<u64> = (1..=total).collect();
    for (i, (_, ids)) in got.iter().enumerate() {
        let first_wrong = ids.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            first_wrong.is_none(),
            "reader {i}: wrong from index {first_wrong:?}"
        );
    }
    // The readers that were handed back are served after catching up: the next
    // message reaches every reader, once.
    let next = server.post("r", "u", "after").await;
    for (ws, _) in &mut got {
        assert_eq!(ws_next(ws).await["id"], next);
    }
}

#[tokio::test]
async fn a_reader_handed_back_is_served_from_the_queue_where_history_holds_less() {
    // History keeps 50 messages, the queue 1024 (the default). The reader keeps up
    // with 1,500 small messages (the fan-out writes them; its own queue is not read
    // meanwhile), then pauses while 1,000 messages of 4,000 bytes go by (more than the
    // kernel's buffers and the outbox hold): handed back by the fan-out, it must get
    // them all from the queue, as an SSE reader does, not a gap from history.
    let mut config = config();
    config.history = 50;
    let server = TestServer::with(config).await;
    let mut ws = with_receive_buffer(&server, "/rooms/r/ws", 4096).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        futures_util::future::join_all((0..50).map(|_| server.post("r", "u", "s"))).await;
        for _ in 0..50 {
            ids.push(next_message_id(&mut ws, ids.len()).await);
        }
    }
    let text = "m".repeat(4000);
    for _ in 0..20 {
        futures_util::future::join_all((0..50).map(|_| server.post("r", "u", &text))).await;
    }
    while ids.len() < 2500 {
        ids.push(next_message_id(&mut ws, ids.len()).await);
    }
    assert_eq!(ids, (1..=2500).collect::<Vec<u64>>());
    server.stop().await;
}

/// The next message's id, within 5 s; a gap notice fails the test.
async fn next_message_id(ws: &mut RawWs, had: usize) -> u64 {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(value["gap"].is_null(), "after {had} messages: {value}");
            return value["id"].as_u64().unwrap();
        }
    }
}

#[tokio::test]
async fn a_session_catching_up_on_a_long_history_is_closed_at_shutdown() {
    let mut config = config();
    config.history = 20_000;
    let server = TestServer::with(config).await;
    let text = "h".repeat(4000);
    for _ in 0..60 {
        futures_util::future::join_all((0..50).map(|_| server.post("r", "u", &text))).await;
    }
    // 12 MB behind, read slowly: the session is catching up when the server stops,
    // and stops catching up then (the kernel's buffers still hold a few MB).
    let mut ws = with_receive_buffer(&server, "/rooms/r/ws?after=0", 16 * 1024).await;
    let mut messages = 0;
    while messages < 100 {
        ws.next().await.unwrap().unwrap();
        messages += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.token.cancel();
    let close = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s");
        match frame {
            Some(Ok(Message::Text(_))) => messages += 1,
            Some(Ok(Message::Close(close))) => break close,
            other => panic!("after {messages} messages: {other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::Away);
    assert!(
        messages < 2500,
        "closed only after {messages} of 3000 messages"
    );
}
