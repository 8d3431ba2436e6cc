//! An in-process lab server on an ephemeral port, short scenarios, and a proxy that
//! makes a server misbehave.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use loadgen::{Mix, RunResult, Scenario, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A lab server on `127.0.0.1:0`, on its own thread; stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub target: Target,
    token: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        Server::with(lab::Config::default())
    }

    /// A server with `config`, on an ephemeral port whatever `config.addr` says.
    pub fn with(config: lab::Config) -> Server {
        let config = lab::Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let token = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let shutdown = token.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.addr).await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                lab::run(listener, config, shutdown).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Server {
            addr,
            target: Target::parse(&addr.to_string()).unwrap(),
            token,
            thread: Some(thread),
        }
    }

    /// Runs `sc` against this server.
    pub fn run(&self, sc: &Scenario) -> Vec<RunResult> {
        loadgen::run(std::slice::from_ref(&self.target), sc).unwrap()
    }

    /// Runs `sc` against this server, which must end in an error; its message.
    pub fn run_err(&self, sc: &Scenario) -> String {
        loadgen::run(std::slice::from_ref(&self.target), sc)
            .unwrap_err()
            .to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A 1.5 s counted window after 0.3 s of warm-up, 40 messages per second.
pub fn short(mix: Mix, users: usize, room: &str) -> Scenario {
    let mut sc = Scenario::new(mix, users, room);
    sc.duration = Duration::from_millis(1500);
    sc.warmup = Duration::from_millis(300);
    sc.rate = 40.0;
    sc.senders = users.min(5);
    sc.poll_interval = Duration::from_millis(200);
    sc.long_poll_timeout = Duration::from_secs(2);
    sc.drain_timeout = Duration::from_secs(3);
    sc.threads = 2;
    sc
}

/// Index of the transport named `name`.
pub fn transport(name: &str) -> usize {
    loadgen::transport::Transport::index(name).unwrap()
}

/// Runs a loadgen executable with `args` plus `--json <temp file>`; its standard output
/// and the JSON it wrote.
pub fn run_binary(exe: &std::path::Path, args: &[&str]) -> (String, serde_json::Value) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json = std::env::temp_dir().join(format!("loadgen-{}-{n}.json", std::process::id()));
    let json_arg = json.to_str().unwrap();
    let args: Vec<&str> = args.iter().copied().chain(["--json", json_arg]).collect();
    let stdout = run_ok(exe, &args);
    let doc = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    (stdout, doc)
}

/// Runs a loadgen executable with `args`, which must succeed; its standard output.
pub fn run_ok(exe: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a chunk of what a client sends is a request the proxy swallows.
pub type Swallow = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;
/// Changes a chunk of what the server sends, in place, on its way to the client.
pub type Tamper = Arc<dyn Fn(&mut [u8]) + Send + Sync>;

/// A proxy in front of `upstream`, on its own thread for the rest of the test
/// process. It relays both ways, passing what the server sends through `tamper`,
/// until the client sends a request `swallow` picks: from then on what that client
/// sends goes nowhere and no answer comes.
pub fn proxy(upstream: SocketAddr, swallow: Swallow, tamper: Tamper) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (client, _) = listener.accept().await.unwrap();
                tokio::spawn(relay(client, upstream, swallow.clone(), tamper.clone()));
            }
        });
    });
    rx.recv().unwrap()
}

async fn relay(client: TcpStream, upstream: SocketAddr, swallow: Swallow, tamper: Tamper) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
            tamper(&mut buf[..n]);
            if to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if swallow(&buf[..n]) {
            // Held open, read and dropped, until the client goes.
            while matches!(from_client.read(&mut buf).await, Ok(n) if n > 0) {}
            return;
        }
        if to_server.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Whether `what` occurs in `chunk`.
pub fn has(chunk: &[u8], what: &str) -> bool {
    chunk.windows(what.len()).any(|w| w == what.as_bytes())
}
