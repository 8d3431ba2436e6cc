//! The least a fan-out costs on this machine: one process writes a message of the
//! lab's size to each of N loopback TCP sockets per period, a second reads them, each
//! on a core of its own, with no runtime, no HTTP, no room and no parsing. What this
//! pair takes per message and how late its last sockets get one are the floor under
//! the lab's figures at the same load: a server that writes one message per socket
//! per write cannot fan out faster than this writer, nor a client read sooner than
//! this reader.
//!
//!     cargo build --release -p loadgen --example write_floor
//!     ./target/release/examples/write_floor --users 10000 --rate 10
//!     ./target/release/examples/write_floor --users 1000 --rate 10 --long-poll
//!
//! A stream (WebSocket, SSE) is written each message as it comes. With `--long-poll`
//! the reader asks for each answer with a request of the loadgen's size and the writer
//! holds it: a message answers every held request at once, a socket that has not asked
//! again yet gets what came meanwhile in one answer when it does. The writer reads
//! the requests and answers in one `epoll` loop, as a server would, but parses nothing.
//!
//! Each message carries the time it was due (`CLOCK_MONOTONIC`, one clock for both
//! processes), so the latency printed is from the due time to the read, as the
//! loadgen measures from a message's due time: a pass that starts late counts its
//! lateness. Passes follow the schedule `--rate` sets; one that runs past the next
//! one's due time delays it, it does not skip it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use loadgen::cli::parse_duration;
use loadgen::machine::{CpuTime, CpuTimes, MachineCpu, cpu_time};
use serde_json::json;

#[path = "floor_epoll.rs"]
mod floor_epoll;
#[path = "floor_process.rs"]
mod floor_process;
use floor_epoll::{epoll_of, wait};
use floor_process::{now_ns, pin, report_of, start_other};

#[derive(Parser)]
struct Args {
    /// Sockets, each written one message a period.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Messages per second to every socket.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Bytes of each message: by default what the loadgen reads per delivery in the
    /// reference scenario, 196 for a WebSocket frame, 336 for a long poll's answer of
    /// one message (head and body).
    #[arg(long)]
    bytes: Option<usize>,
    /// Held requests answered by the messages instead of a stream.
    #[arg(long)]
    long_poll: bool,
    /// Passes before the counted window, in seconds.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    warmup: Duration,
    /// The counted window, in seconds.
    #[arg(long, default_value = "8", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 0)]
    writer_cpu: usize,
    #[arg(long, default_value_t = 1)]
    reader_cpu: usize,
    /// Also write the figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run as the reading process, connecting to this port.
    #[arg(long, hide = true)]
    reader_of: Option<u16>,
}

impl Args {
    /// Bytes of one message as written: an answer's own 4-byte count is part of the
    /// first.
    fn message_bytes(&self) -> usize {
        match (self.bytes, self.long_poll) {
            (Some(b), false) => b,
            (Some(b), true) => b.saturating_sub(COUNT),
            (None, false) => 196,
            (None, true) => 336 - COUNT,
        }
    }
}

/// Where a message's flag sits: after its due time.
const FLAG: usize = 8;
/// A message before the counted window.
const WARMUP: u8 = 0;
const COUNTED: u8 = 1;
/// The last message of the run.
const STOP: u8 = 2;
/// A long poll's request: the size of the loadgen's (path, query and host).
const REQUEST: usize = 140;
/// A long poll's answer starts with how many messages it carries (u32).
const COUNT: usize = 4;

fn main() {
    let args = Args::parse();
    let outcome = match args.reader_of {
        Some(port) => read(&args, port),
        None => write(&args),
    };
    if let Err(e) = outcome {
        eprintln!("write_floor: {e}");
        std::process::exit(1);
    }
}

/// One socket on the writing side, for a long poll: whether a request is held, the
/// messages that came while none was, and the bytes of a request not yet whole.
#[derive(Default)]
struct Held {
    waiting: bool,
    queued: Vec<(u64, u8)>,
    partial: usize,
}

/// Appends an answer of `messages` (due time and flag each) to `out`.
fn answer(out: &mut Vec<u8>, messages: &[(u64, u8)], size: usize) {
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for &(due, flag) in messages {
        let at = out.len();
        out.resize(at + size, b'x');
        out[at..at + FLAG].copy_from_slice(&due.to_le_bytes());
        out[at + FLAG] = flag;
    }
}

/// The writing process's sockets and what it has counted.
struct Writer {
    socks: Vec<TcpStream>,
    held: Vec<Held>,
    ep: OwnedFd,
    events: Vec<libc::epoll_event>,
    inbox: Vec<u8>,
    out: Vec<u8>,
    /// Bytes of one message.
    size: usize,
    long_poll: bool,
    /// Sockets that have not been written the last message yet.
    unfinished: usize,
    requests: u64,
    answers: u64,
    /// Writes the kernel did not take whole.
    blocked: u64,
}

impl Writer {
    /// Writes `out` to socket `i`; the last message finishes the socket.
    fn send(&mut self, i: usize, last: bool) {
        self.blocked += u64::from(!write_all(&self.socks[i], &self.out));
        self.answers += 1;
        self.unfinished -= usize::from(last);
    }

    /// One message, due at `due`, to every socket: written at once to a stream or a
    /// held request, queued for a socket that has not asked again yet.
    fn publish(&mut self, due: u64, flag: u8) {
        self.out.clear();
        if self.long_poll {
            answer(&mut self.out, &[(due, flag)], self.size);
        } else {
            self.out.extend_from_slice(&due.to_le_bytes());
            self.out.push(flag);
            self.out.resize(self.size, b'x');
        }
        for i in 0..self.socks.len() {
            if !self.long_poll || self.held[i].waiting {
                self.held[i].waiting = false;
                self.send(i, flag == STOP);
            } else {
                self.held[i].queued.push((due, flag));
            }
        }
    }

    /// Reads the requests that have come, waiting for the first at most `timeout_ms`:
    /// each is held, or answered at once with what came since the socket's last
    /// answer. How many sockets had something to read.
    fn serve(&mut self, timeout_ms: i32) -> Result<usize, String> {
        let n = wait(&self.ep, &mut self.events, timeout_ms)?;
        for e in 0..n {
            let i = self.events[e].u64 as usize;
            let got = match (&self.socks[i]).read(&mut self.inbox) {
                Ok(0) => return Err("the reader closed a socket early".into()),
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.to_string()),
            };
            self.held[i].partial += got;
            while self.held[i].partial >= REQUEST {
                self.held[i].partial -= REQUEST;
                self.requests += 1;
                let queued = std::mem::take(&mut self.held[i].queued);
                if queued.is_empty() {
                    self.held[i].waiting = true;
                    continue;
                }
                self.out.clear();
                answer(&mut self.out, &queued, self.size);
                self.send(i, queued.iter().any(|&(_, flag)| flag == STOP));
            }
        }
        Ok(n)
    }
}

/// The writing process: accepts the reader's sockets, writes the passes (and, for a
/// long poll, reads the requests), then reports both sides.
fn write(args: &Args) -> Result<(), String> {
    let size = args.message_bytes();
    if size < FLAG + 1 || args.rate <= 0.0 || args.users == 0 {
        return Err("--bytes must leave at least 9 per message, --rate and --users above 0".into());
    }
    pin(args.writer_cpu)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let reader = start_other("reader", &["--reader-of".into(), port.to_string()])?;
    let mut socks = Vec::with_capacity(args.users);
    while socks.len() < args.users {
        let (s, _) = listener.accept().map_err(|e| format!("accepting: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push(s);
    }
    let mut w = Writer {
        ep: epoll_of(socks.iter().map(|s| s.as_raw_fd()), libc::EPOLLIN)?,
        held: (0..socks.len()).map(|_| Held::default()).collect(),
        unfinished: socks.len(),
        socks,
        events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        inbox: vec![0u8; 64 * 1024],
        out: Vec::new(),
        size,
        long_poll: args.long_poll,
        requests: 0,
        answers: 0,
        blocked: 0,
    };

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let passes = ((args.warmup + args.duration).as_secs_f64() * args.rate).ceil() as u64;
    let counted_from = (args.warmup.as_secs_f64() * args.rate).ceil() as u64;
    let mut pass_ms = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let start = now_ns() + 200_000_000;
    // CPU, the machine's counters and answers when the counted passes begin and end.
    let mark = |w: &Writer| (cpu_time(), CpuTimes::read(), w.answers);
    let (mut from, mut to) = (mark(&w), mark(&w));
    // The passes, the last one the last message.
    for k in 0..=passes {
        let due = start + k * period.as_nanos() as u64;
        loop {
            let now = now_ns();
            // Requests are served while the message is not due; its last millisecond
            // (under `epoll_wait`'s grain) is slept through.
            let ms = (due.saturating_sub(now) / 1_000_000).min(i32::MAX as u64) as i32;
            if args.long_poll && ms > 0 {
                w.serve(ms)?;
            } else {
                std::thread::sleep(Duration::from_nanos(due.saturating_sub(now)));
                break;
            }
        }
        if k == counted_from {
            from = mark(&w);
        }
        if k == passes {
            to = mark(&w);
        }
        let flag = match k {
            k if k == passes => STOP,
            k if k >= counted_from => COUNTED,
            _ => WARMUP,
        };
        w.publish(due, flag);
        if (counted_from..passes).contains(&k) {
            pass_ms.saturating_record(((now_ns() - due) / 1000).max(1));
        }
    }
    // What is left of a long poll: the requests that ask for the last message.
    while w.unfinished > 0 {
        if w.serve(10_000)? == 0 {
            return Err(format!(
                "no request for 10 s with {} sockets unfinished",
                w.unfinished
            ));
        }
    }

    let read = report_of(reader, "reader")?;

    let messages = (passes - counted_from) as f64 * args.users as f64;
    let cpu = to.0 - from.0;
    let us = |a: f64| a / messages * 1e6;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let answers = (to.2 - from.2) as f64;
    let report = json!({
        "users": args.users,
        "rate": args.rate,
        "long_poll": args.long_poll,
        "message_bytes": size,
        "messages_per_s": args.users as f64 * args.rate,
        "writer_us_per_message": us(cpu.total()),
        "writer_sys_us_per_message": us(cpu.system),
        "answers_per_message": answers / messages,
        "requests": w.requests,
        "writes_not_taken": w.blocked,
        "steal_pct": MachineCpu::between(from.1, to.1).steal_pct,
        "pass_end_ms": {"p50": q(&pass_ms, 0.5), "p99": q(&pass_ms, 0.99), "max": pass_ms.max() as f64 / 1000.0},
        "reader": read,
    });
    println!(
        "{} sockets x {} msg/s{}, {} B: writer {:.2} µs a message (system {:.2}), a pass ends \
         {:.1} ms after its due time (p50; max {:.1}); reader {:.2} µs a message (system \
         {:.2}); latency from due p50 {:.1} ms, p99 {:.1}, max {:.1}; {} of {} messages \
         read, {} writes not taken; steal {:.1}%",
        args.users,
        args.rate,
        if args.long_poll { " (long poll)" } else { "" },
        size,
        us(cpu.total()),
        us(cpu.system),
        q(&pass_ms, 0.5),
        pass_ms.max() as f64 / 1000.0,
        read["us_per_message"].as_f64().unwrap_or(0.0),
        read["sys_us_per_message"].as_f64().unwrap_or(0.0),
        read["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        read["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        read["latency_ms"]["max"].as_f64().unwrap_or(0.0),
        read["messages"],
        messages as u64,
        w.blocked,
        report["steal_pct"].as_f64().unwrap_or(0.0),
    );
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{report:#}\n")).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One message to a socket that has room for it; `false` if it had none (a reader
/// this far behind is not what is measured, so the message is counted, not queued).
fn write_all(s: &TcpStream, message: &[u8]) -> bool {
    (&*s).write(message).is_ok_and(|n| n == message.len())
}

/// A socket the reader reads, and what it holds of a message or answer not yet whole.
struct Conn {
    stream: TcpStream,
    carry: Vec<u8>,
    done: bool,
}

/// What the reader counted.
struct Tally {
    latency: Histogram<u64>,
    messages: u64,
    /// CPU when the first counted message came, and when the first last one did.
    window: Option<CpuTime>,
    window_end: Option<CpuTime>,
}

impl Tally {
    /// Counts one message read at `now`; whether it was the last.
    fn message(&mut self, m: &[u8], now: u64) -> bool {
        let due = u64::from_le_bytes(m[..FLAG].try_into().expect("8 bytes"));
        match m[FLAG] {
            COUNTED => {
                self.window.get_or_insert_with(cpu_time);
                self.messages += 1;
                self.latency
                    .saturating_record((now.saturating_sub(due) / 1000).max(1));
                false
            }
            STOP => {
                self.window_end.get_or_insert_with(cpu_time);
                true
            }
            _ => false,
        }
    }
}

/// The reading process: connects (and, for a long poll, asks for the first answer),
/// reads every socket with one `epoll` loop until each has had its last message, and
/// prints its figures as one JSON line.
fn read(args: &Args, port: u16) -> Result<(), String> {
    pin(args.reader_cpu)?;
    let size = args.message_bytes();
    let request = vec![b'G'; REQUEST];
    let mut conns = Vec::with_capacity(args.users);
    for _ in 0..args.users {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        if args.long_poll {
            stream.write_all(&request).map_err(|e| e.to_string())?;
        }
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        conns.push(Conn {
            stream,
            carry: Vec::with_capacity(size + COUNT),
            done: false,
        });
    }
    let ep = epoll_of(conns.iter().map(|c| c.stream.as_raw_fd()), libc::EPOLLIN)?;

    let mut tally = Tally {
        latency: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        messages: 0,
        window: None,
        window_end: None,
    };
    let (mut reads, mut waits) = (0u64, 0u64);
    let mut left = conns.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while left > 0 {
        let n = wait(&ep, &mut events, 10_000)?;
        if n == 0 {
            return Err(format!(
                "nothing read for 10 s with {left} sockets unfinished"
            ));
        }
        waits += 1;
        for ev in &events[..n] {
            let c = &mut conns[ev.u64 as usize];
            let got = match (&c.stream).read(&mut buf) {
                Ok(0) if c.done => continue,
                Ok(0) => return Err("the writer closed a socket early".into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.to_string()),
            };
            reads += 1;
            let now = now_ns();
            c.carry.extend_from_slice(&buf[..got]);
            let mut used = 0;
            let mut stop = false;
            if args.long_poll {
                while let Some(count) = c.carry.get(used..used + COUNT) {
                    let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
                    let end = used + COUNT + count * size;
                    if c.carry.len() < end {
                        break;
                    }
                    for m in c.carry[used + COUNT..end].chunks(size) {
                        stop |= tally.message(m, now);
                    }
                    used = end;
                    if !stop {
                        // The next poll, as soon as the answer is in.
                        (&c.stream).write_all(&request).map_err(|e| e.to_string())?;
                    }
                }
            } else {
                for m in c.carry.chunks_exact(size) {
                    stop |= tally.message(m, now);
                    used += size;
                }
            }
            c.carry.drain(..used);
            if stop && !c.done {
                c.done = true;
                left -= 1;
            }
        }
    }
    let cpu = tally.window_end.unwrap_or_default() - tally.window.unwrap_or_default();
    let messages = tally.messages;
    let per = |a: f64| {
        if messages == 0 {
            0.0
        } else {
            a / messages as f64 * 1e6
        }
    };
    let q = |p: f64| tally.latency.value_at_quantile(p) as f64 / 1000.0;
    let report = json!({
        "messages": messages,
        "reads": reads,
        "epoll_waits": waits,
        "us_per_message": per(cpu.total()),
        "sys_us_per_message": per(cpu.system),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": tally.latency.max() as f64 / 1000.0},
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}").map_err(|e| e.to_string())
}
