//! The least a fan-out costs on this machine: one process writes a message of the
//! lab's frame size to each of N loopback TCP sockets per period, a second reads them,
//! each on a core of its own, with no runtime, no HTTP, no room and no parsing. What
//! this pair takes per message and how late its last sockets get one are the floor
//! under the lab's WebSocket figures at the same load: a server that writes one
//! message per socket per write cannot fan out faster than this writer, nor a client
//! read sooner than this reader.
//!
//!     cargo build --release -p loadgen --example write_floor
//!     ./target/release/examples/write_floor --users 10000 --rate 10
//!
//! Each message carries the time it was due (`CLOCK_MONOTONIC`, one clock for both
//! processes), so the latency printed is from the due time to the read, as the
//! loadgen measures from a message's due time: a pass that starts late counts its
//! lateness. Passes follow the schedule `--rate` sets; one that runs past the next
//! one's due time delays it, it does not skip it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Sockets, each written one message a period.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Messages per second to every socket.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Bytes of each message: what the loadgen reads per WebSocket delivery in the
    /// reference scenario (frame and JSON, 196 bytes).
    #[arg(long, default_value_t = 196)]
    bytes: usize,
    /// Passes before the counted window, in seconds.
    #[arg(long, default_value = "2", value_parser = secs)]
    warmup: Duration,
    /// The counted window, in seconds.
    #[arg(long, default_value = "8", value_parser = secs)]
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

fn secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| e.to_string())
}

/// Where a message's flag sits: after its due time.
const FLAG: usize = 8;
/// A message before the counted window.
const WARMUP: u8 = 0;
const COUNTED: u8 = 1;
/// The last message of the run.
const STOP: u8 = 2;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User and system CPU seconds of this process.
fn own_cpu() -> (f64, f64) {
    // SAFETY: getrusage writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

/// The machine's steal and total jiffies so far (`/proc/stat`), for the share of
/// the window the hypervisor gave to others.
fn steal() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    (cpu.get(7).copied().unwrap_or(0), cpu.iter().take(8).sum())
}

fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only
    // touch the set they are given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(format!(
                "binding to core {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

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

/// The writing process: accepts the reader's sockets, writes the passes, then reports
/// both sides.
fn write(args: &Args) -> Result<(), String> {
    if args.bytes < FLAG + 1 || args.rate <= 0.0 || args.users == 0 {
        return Err("--bytes must be at least 9, --rate and --users above 0".into());
    }
    pin(args.writer_cpu)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut reader = Command::new(exe)
        .args(std::env::args().skip(1))
        .arg("--reader-of")
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the reader: {e}"))?;
    let mut socks = Vec::with_capacity(args.users);
    while socks.len() < args.users {
        let (s, _) = listener.accept().map_err(|e| format!("accepting: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push(s);
    }

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let passes = ((args.warmup + args.duration).as_secs_f64() * args.rate).ceil() as u64;
    let counted_from = (args.warmup.as_secs_f64() * args.rate).ceil() as u64;
    let mut message = vec![b'x'; args.bytes];
    let mut pass_ms = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut blocked = 0u64;
    let start = now_ns() + 200_000_000;
    let mut cpu0 = own_cpu();
    let mut steal0 = steal();
    for k in 0..passes {
        let due = start + k * period.as_nanos() as u64;
        let now = now_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        if k == counted_from {
            cpu0 = own_cpu();
            steal0 = steal();
        }
        message[..FLAG].copy_from_slice(&due.to_le_bytes());
        message[FLAG] = if k >= counted_from { COUNTED } else { WARMUP };
        for s in &socks {
            blocked += u64::from(!write_all(s, &message));
        }
        if k >= counted_from {
            pass_ms.saturating_record(((now_ns() - due) / 1000).max(1));
        }
    }
    let cpu1 = own_cpu();
    let steal1 = steal();
    message[FLAG] = STOP;
    for s in &socks {
        blocked += u64::from(!write_all(s, &message));
    }

    let mut line = String::new();
    BufReader::new(reader.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| format!("the reader's report: {e}"))?;
    let _ = reader.wait();
    let read: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("the reader's report {line:?}: {e}"))?;

    let writes = (passes - counted_from) as f64 * args.users as f64;
    let us = |a: f64| a / writes * 1e6;
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let report = json!({
        "users": args.users,
        "rate": args.rate,
        "bytes": args.bytes,
        "writes_per_s": args.users as f64 * args.rate,
        "writer_us_per_write": us(cpu1.0 - cpu0.0 + cpu1.1 - cpu0.1),
        "writer_sys_us_per_write": us(cpu1.1 - cpu0.1),
        "writes_not_taken": blocked,
        "steal_pct": (steal1.0 - steal0.0) as f64 * 100.0 / (steal1.1 - steal0.1).max(1) as f64,
        "pass_end_ms": {"p50": q(&pass_ms, 0.5), "p99": q(&pass_ms, 0.99), "max": pass_ms.max() as f64 / 1000.0},
        "reader": read,
    });
    println!(
        "{} sockets x {} msg/s, {} B: writer {:.2} µs a write (system {:.2}), a pass ends {:.1} ms \
         after its due time (p50; max {:.1}); reader {:.2} µs a message (system {:.2}); \
         latency from due p50 {:.1} ms, p99 {:.1}, max {:.1}; {} of {} messages read, {} writes not taken; \
         steal {:.1}%",
        args.users,
        args.rate,
        args.bytes,
        report["writer_us_per_write"].as_f64().unwrap_or(0.0),
        report["writer_sys_us_per_write"].as_f64().unwrap_or(0.0),
        q(&pass_ms, 0.5),
        pass_ms.max() as f64 / 1000.0,
        read["us_per_message"].as_f64().unwrap_or(0.0),
        read["sys_us_per_message"].as_f64().unwrap_or(0.0),
        read["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        read["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        read["latency_ms"]["max"].as_f64().unwrap_or(0.0),
        read["messages"],
        writes as u64,
        blocked,
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

/// A socket the reader reads, and the part of a message it holds.
struct Conn {
    stream: TcpStream,
    carry: Vec<u8>,
    done: bool,
}

/// The reading process: connects, reads every socket with one `epoll` loop until each
/// has had its last message, and prints its figures as one JSON line.
fn read(args: &Args, port: u16) -> Result<(), String> {
    pin(args.reader_cpu)?;
    let mut conns = Vec::with_capacity(args.users);
    for _ in 0..args.users {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        conns.push(Conn {
            stream,
            carry: Vec::with_capacity(args.bytes),
            done: false,
        });
    }
    // SAFETY: epoll_create1 with no flags; the fd is this function's for its life.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` outlives the call; the fd is open.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut messages, mut reads, mut waits) = (0u64, 0u64, 0u64);
    let mut window: Option<(f64, f64)> = None;
    let mut window_end: Option<(f64, f64)> = None;
    let mut left = conns.len();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let size = args.bytes;
    while left > 0 {
        // SAFETY: `events` has room for the count given.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10_000) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        if n == 0 {
            return Err(format!(
                "nothing read for 10 s with {left} sockets unfinished"
            ));
        }
        waits += 1;
        for ev in &events[..n as usize] {
            let c = &mut conns[ev.u64 as usize];
            let got = match (&c.stream).read(&mut buf) {
                Ok(0) => return Err("the writer closed a socket early".into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.to_string()),
            };
            reads += 1;
            let now = now_ns();
            let mut bytes = &buf[..got];
            let mut whole = |m: &[u8]| -> bool {
                let due = u64::from_le_bytes(m[..FLAG].try_into().expect("8 bytes"));
                match m[FLAG] {
                    COUNTED => {
                        if window.is_none() {
                            window = Some(own_cpu());
                        }
                        messages += 1;
                        latency.saturating_record((now.saturating_sub(due) / 1000).max(1));
                        false
                    }
                    STOP => true,
                    _ => false,
                }
            };
            let mut stop = false;
            if !c.carry.is_empty() {
                let take = (size - c.carry.len()).min(bytes.len());
                c.carry.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if c.carry.len() == size {
                    stop |= whole(&c.carry);
                    c.carry.clear();
                }
            }
            while bytes.len() >= size {
                stop |= whole(&bytes[..size]);
                bytes = &bytes[size..];
            }
            c.carry.extend_from_slice(bytes);
            if stop && !c.done {
                c.done = true;
                left -= 1;
                window_end.get_or_insert_with(own_cpu);
            }
        }
    }
    let (start, end) = (window.unwrap_or_default(), window_end.unwrap_or_default());
    let per = |a: f64| {
        if messages == 0 {
            0.0
        } else {
            a / messages as f64 * 1e6
        }
    };
    let q = |p: f64| latency.value_at_quantile(p) as f64 / 1000.0;
    let report = json!({
        "messages": messages,
        "reads": reads,
        "epoll_waits": waits,
        "us_per_message": per(end.0 - start.0 + end.1 - start.1),
        "sys_us_per_message": per(end.1 - start.1),
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": latency.max() as f64 / 1000.0},
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}").map_err(|e| e.to_string())
}
