//! A server on an ephemeral port and the clients the tests talk to it with.

use std::net::SocketAddr;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use lab::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The defaults, on port 0.
pub fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub handle: JoinHandle<std::io::Result<()>>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(config()).await
    }

    pub async fn with(config: Config) -> Self {
        let listener = TcpListener::bind(config.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let handle = tokio::spawn(lab::run(listener, config, token.clone()));
        TestServer {
            addr,
            token,
            handle,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Posts a message and returns its id.
    pub async fn post(&self, room: &str, user: &str, text: &str) -> u64 {
        let response = self
            .http
            .post(self.url(&format!("/rooms/{room}/messages")))
            .json(&serde_json::json!({"user": user, "text": text, "client_ts": now_micros()}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"]
            .as_u64()
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Short-polls and returns the ids and the body.
    pub async fn poll(&self, path: &str) -> (Vec<u64>, Value) {
        let (status, body) = self.get_json(path).await;
        assert_eq!(status, 200, "{body}");
        (ids(&body["messages"]), body)
    }

    pub async fn ws(&self, path: &str) -> WsStream {
        let (ws, response) = tokio_tungstenite::connect_async(self.ws_url(path))
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        ws
    }

    pub async fn sse(&self, path: &str) -> impl Stream<Item = Event> + Unpin + use<> {
        self.sse_with(path, None).await
    }

    pub async fn sse_with(
        &self,
        path: &str,
        last_event_id: Option<u64>,
    ) -> impl Stream<Item = Event> + Unpin + use<> {
        let mut request = self.http.get(self.url(path));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Box::pin(
            response
                .bytes_stream()
                .eventsource()
                .map(|event| event.expect("well-formed SSE")),
        )
    }

    /// A value from /metrics, for a line that starts with `series`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(&self.http, &self.url("/metrics"), series).await
    }

    /// A WebSocket handshake for `path` with `key`, sent as a plain GET: the answer,
    /// whether `101` or a refusal.
    pub async fn ws_handshake(&self, path: &str, key: &str) -> reqwest::Response {
        handshake_headers(self.http.get(self.url(path)), key)
            .send()
            .await
            .unwrap()
    }

    /// Waits up to 5 s for a metric to reach `value`.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        for _ in 0..100 {
            if self.metric(series).await == value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{series} never reached {value}: {}",
            self.metric(series).await
        );
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("server stops within 5 s")
            .unwrap()
            .unwrap();
    }
}

pub fn ids(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

pub fn now_micros() -> i64 {
    lab::room::now_micros()
}

/// The next text frame, as JSON (pings and pongs skipped), within 5 s.
pub async fn ws_next(ws: &mut WsStream) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The ids of the next `n` message frames.
pub async fn ws_ids(ws: &mut WsStream, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = ws_next(ws).await;
        out.push(frame["id"].as_u64().expect("a message frame"));
    }
    out
}

/// The next `message` event's JSON, within 5 s (comments and other events skipped).
pub async fn sse_next(events: &mut (impl Stream<Item = Event> + Unpin)) -> Value {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event within 5 s")
            .expect("stream open");
        if event.event == "message" {
            let body: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(event.id, body["id"].to_string());
            return body;
        }
    }
}

pub async fn sse_ids(events: &mut (impl Stream<Item = Event> + Unpin), n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(sse_next(events).await["id"].as_u64().unwrap());
    }
    out
}

/// Long-polls `client` until `n` messages have arrived, passing `after` each time.
pub async fn long_poll_ids(
    server: &TestServer,
    room: &str,
    client: &str,
    after: u64,
    n: usize,
) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = after;
    while out.len() < n {
        let (got, body) = server
            .poll(&format!(
                "/rooms/{room}/long-poll?client={client}&after={after}&timeout_ms=5000"
            ))
            .await;
        assert!(
            !got.is_empty(),
            "long poll timed out with {} of {n}",
            out.len()
        );
        after = body["last_id"].as_u64().unwrap();
        out.extend(got);
    }
    out
}

/// The headers of a WebSocket handshake with `key`, on any request.
pub fn handshake_headers(request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
    request
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", key)
}

/// A connection to the server whose receive buffer is `bytes`: a reader with a small
/// window, which a server's writes fill quickly.
pub async fn with_receive_buffer_tcp(server: &TestServer, bytes: u32) -> tokio::net::TcpStream {
    receive_buffer_tcp(server.addr, bytes).await
}

/// A value from the /metrics at `url`, for a line that starts with `series`.
pub async fn metric_at(http: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {series}"))
}

/// A TCP connection to `addr` whose socket receive buffer is `bytes`.
pub async fn receive_buffer_tcp(addr: SocketAddr, bytes: u32) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The `lab` binary in a process of its own, on an ephemeral port: what a test reads of
/// its memory is the server's alone, not that of the tests running beside it in this
/// process. Killed when dropped.
pub struct ChildLab {
    pub child: std::process::Child,
    /// The URL it logged as the one to open.
    pub url: String,
    pub addr: SocketAddr,
}

impl ChildLab {
    pub fn start() -> ChildLab {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["--addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("a log line").unwrap();
            if let Some(at) = line.find("http://") {
                break line[at..].trim().to_owned();
            }
        };
        let addr = url["http://".len()..]
            .trim_end_matches('/')
            .parse()
            .unwrap();
        ChildLab { child, url, addr }
    }

    /// The server's resident memory, in bytes, as its own /metrics gives it.
    pub async fn rss_bytes(&self) -> f64 {
        metric_at(
            &reqwest::Client::new(),
            &format!("http://{}/metrics", self.addr),
            "process_resident_memory_bytes",
        )
        .await
    }
}

impl Drop for ChildLab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
