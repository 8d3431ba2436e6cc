//! The server's configuration: every limit is a flag with a `LAB_*` environment
//! variable and a default that suits a laptop demo and a 10,000-connection run alike.
//! Every count and period must be at least 1: a zero would not mean "unlimited" or
//! "off" but a server that refuses everything, spins, panics or (`--history 0`) never
//! answers a poll with a message, so it is refused at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::RangedU64ValueParser;

use crate::http1::Timeouts;
use crate::room::RoomLimits;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "lab",
    version,
    about = "The transport lab server: one chat room, four transports"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LAB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Largest message text, in bytes of UTF-8.
    #[arg(long, env = "LAB_MAX_MESSAGE_BYTES", default_value_t = 4096, value_parser = at_least_one::<u32>())]
    pub max_message_bytes: u32,

    /// Messages kept per room for resume and refill.
    #[arg(long, env = "LAB_HISTORY", default_value_t = 10_000, value_parser = at_least_one::<usize>())]
    pub history: usize,

    /// Bytes all rooms' histories may hold together; past it, the room holding most
    /// lets go of its oldest messages.
    #[arg(long, env = "LAB_MAX_HISTORY_BYTES", default_value_t = 1 << 30, value_parser = at_least_one::<usize>())]
    pub max_history_bytes: usize,

    /// Messages a live subscriber may fall behind before it is refilled from history
    /// (rounded up to a power of two: the broadcast ring's size).
    #[arg(long, env = "LAB_QUEUE_CAPACITY", default_value_t = 1024, value_parser = at_least_one::<u32>())]
    pub queue_capacity: u32,

    /// A long-poll client's queue is dropped after this long without a poll.
    #[arg(long, env = "LAB_CLIENT_IDLE_MS", default_value_t = 60_000, value_parser = at_least_one::<u64>())]
    pub client_idle_ms: u64,

    /// Open SSE streams, WebSockets and held long polls, all transports together.
    #[arg(long, env = "LAB_MAX_CONNECTIONS", default_value_t = 19_000, value_parser = at_least_one::<usize>())]
    pub max_connections: usize,

    /// Rooms the server will create (at the limit, empty rooms nobody reads are let go first).
    #[arg(long, env = "LAB_MAX_ROOMS", default_value_t = 1000, value_parser = at_least_one::<usize>())]
    pub max_rooms: usize,

    /// Long-poll client queues per room.
    #[arg(long, env = "LAB_MAX_CLIENTS_PER_ROOM", default_value_t = 20_000, value_parser = at_least_one::<usize>())]
    pub max_clients_per_room: usize,

    /// How often an idle SSE stream gets a `: keep-alive` comment.
    #[arg(long, env = "LAB_SSE_KEEPALIVE_MS", default_value_t = 15_000, value_parser = at_least_one::<u64>())]
    pub sse_keepalive_ms: u64,

    /// How often a WebSocket is pinged; one that has not answered by the next ping is
    /// closed, unless its TCP is still taking in what was written before the ping (then
    /// it has until one period after it has the ping).
    #[arg(long, env = "LAB_WS_PING_MS", default_value_t = 20_000, value_parser = at_least_one::<u64>())]
    pub ws_ping_ms: u64,

    /// How long a write of an HTTP answer or SSE stream may make no progress before
    /// the connection is closed (a reader that stopped reading holds nothing longer).
    #[arg(long, env = "LAB_WRITE_TIMEOUT_MS", default_value_t = 30_000, value_parser = at_least_one::<u64>())]
    pub write_timeout_ms: u64,

    /// How long a client has to send a whole request, head and body, counted from its
    /// first byte (a new connection's first request: from the accept). Late requests
    /// are answered 408 and their connection closed.
    #[arg(long, env = "LAB_READ_TIMEOUT_MS", default_value_t = 30_000, value_parser = at_least_one::<u64>())]
    pub read_timeout_ms: u64,

    /// How long a keep-alive connection may wait between two requests before it is
    /// closed (a client that went away without closing does not hold its socket for
    /// ever). A request in flight, a held long poll or an open stream is not idle.
    #[arg(long, env = "LAB_IDLE_TIMEOUT_MS", default_value_t = 120_000, value_parser = at_least_one::<u64>())]
    pub idle_timeout_ms: u64,

    /// Worker threads of the async runtime; 1 runs everything on one thread, which
    /// leaves the other core to a load generator on the same machine.
    #[arg(long, env = "LAB_THREADS", default_value_t = 1, value_parser = at_least_one::<usize>())]
    pub threads: usize,

    /// Tasks the runtime runs before it looks for new socket events and timers, when
    /// tasks are ready all along. A message wakes every held long poll at once; the
    /// answers go out before the requests that come back meanwhile are read, rather
    /// than one in every 61 (tokio's default), so the last answer of a pass is not
    /// held up by the next round of requests.
    #[arg(long, env = "LAB_EVENT_INTERVAL", default_value_t = 1000, value_parser = at_least_one::<u32>())]
    pub event_interval: u32,

    /// Where the load generator writes its runs; the page shows the newest.
    #[arg(long, env = "LAB_RESULTS_DIR", default_value = "results/runs")]
    pub results_dir: PathBuf,

    /// Largest results file the page is served (a run's JSON is tens of kilobytes);
    /// a larger newest file is answered with an error, not read into memory.
    #[arg(long, env = "LAB_MAX_RESULTS_BYTES", default_value_t = 16 << 20, value_parser = at_least_one::<u64>())]
    pub max_results_bytes: u64,
}

/// The parser of every count and period flag: a whole number, 1 or more.
fn at_least_one<T>() -> RangedU64ValueParser<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
    <T as TryFrom<u64>>::Error: std::error::Error + Send + Sync + 'static,
{
    RangedU64ValueParser::new().range(1..)
}

impl Default for Config {
    /// The defaults above, ignoring the command line (environment variables still apply).
    fn default() -> Self {
        Config::parse_from(["lab"])
    }
}

impl Config {
    pub fn room_limits(&self) -> RoomLimits {
        RoomLimits {
            history: self.history,
            queue_capacity: self.queue_capacity as usize,
            client_idle: Duration::from_millis(self.client_idle_ms),
            max_rooms: self.max_rooms,
            max_clients_per_room: self.max_clients_per_room,
            max_history_bytes: self.max_history_bytes,
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            write: Duration::from_millis(self.write_timeout_ms),
            read: Duration::from_millis(self.read_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes as usize
    }
}
