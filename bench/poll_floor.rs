//! The least short polling costs each side on this machine: one process answers
//! requests on N loopback TCP sockets with an answer of the lab's size, a second asks
//! on each socket once an interval, each socket at its own phase of the interval (as
//! the loadgen's users do), each process on a core of its own, with no runtime, no
//! HTTP, no room and no parsing. What each side spends per request is the floor under
//! the lab's and the loadgen's figures at the same load: the asking side sleeps until
//! its next poll is due and again until the answer comes, the answering side only
//! until a request comes, and no client or server can spend less than this pair.
//!
//!     cargo build --release -p loadgen --example poll_floor
//!     ./target/release/examples/poll_floor --users 1000 --interval 1s
//!
//! The asking side waits with `epoll_wait`, whose timeout has tokio's grain (whole
//! milliseconds, rounded up), so its wake-ups for due polls are the loadgen's.
//!
//! With `--read-at-tick` the asking side does not wait for answers; it reads each at
//! its next wake-up for due polls, the answer's time taken from the kernel's receive
//! stamp. The answering side then never wakes the other core, and the difference in
//! its CPU per request is what making that wake-up costs here:
//!
//!     ./target/release/examples/poll_floor --users 1000 --interval 1s --read-at-tick

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
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
use floor_process::{clock_ns, now_ns, pin, report_of, start_other, timespec_ns};

#[derive(Parser)]
struct Args {
    /// Sockets, each asking once an interval.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// How often each socket asks.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Bytes of a request: the loadgen's short poll (request line and headers).
    #[arg(long, default_value_t = 100)]
    request_bytes: usize,
    /// Bytes of an answer: the lab's to a short poll at 1,000 users, 10 msg/s and a 1 s
    /// interval (head and ten messages).
    #[arg(long, default_value_t = 1800)]
    answer_bytes: usize,
    /// The asking side's timer grain: a due poll goes out at the next multiple of this
    /// on the clock (tokio's timer: 1 ms).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    grain: Duration,
    /// The asking side does not wait for answers: it reads them when it wakes for due
    /// polls, each answer's time taken from its socket's kernel receive stamp. The
    /// answering side then never wakes the asking one, which shows what a wake-up of
    /// the other core costs the side that makes it.
    #[arg(long)]
    read_at_tick: bool,
    /// Polls before the counted window.
    #[arg(long, default_value = "2", value_parser = parse_duration)]
    warmup: Duration,
    /// The counted window.
    #[arg(long, default_value = "8", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Also write the figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run as the asking process: connect to this port, start polling at `--start-ns`.
    #[arg(long, hide = true)]
    client_of: Option<u16>,
    #[arg(long, hide = true)]
    start_ns: Option<u64>,
}

/// Whole milliseconds until `due`, rounded up as tokio's timer rounds: never early.
fn ms_until(due: u64, now: u64) -> i32 {
    due.saturating_sub(now)
        .div_ceil(1_000_000)
        .min(i32::MAX as u64) as i32
}

/// The counted window, on the clock both processes read: from the end of the warmup
/// to the end of the run.
struct Window {
    from: u64,
    to: u64,
}

impl Window {
    fn of(args: &Args, start: u64) -> Window {
        let from = start + args.warmup.as_nanos() as u64;
        Window {
            from,
            to: from + args.duration.as_nanos() as u64,
        }
    }
}

/// CPU and a count read when the window opens and when it closes, each at the first
/// look at the clock after the edge: both sides wake at least once a millisecond
/// around it.
#[derive(Default)]
struct Marks {
    from: Option<(CpuTime, u64, u64)>,
    to: Option<(CpuTime, u64, u64)>,
    machine: (Option<CpuTimes>, Option<CpuTimes>),
}

impl Marks {
    fn look(&mut self, w: &Window, now: u64, count: u64, waits: u64) {
        if now >= w.from && self.from.is_none() {
            self.from = Some((cpu_time(), count, waits));
            self.machine.0 = CpuTimes::read();
        }
        if now >= w.to && self.to.is_none() {
            self.to = Some((cpu_time(), count, waits));
            self.machine.1 = CpuTimes::read();
        }
    }

    /// CPU, count and waits within the window.
    fn counted(&self) -> Counted {
        let (a, b) = (self.from.unwrap_or_default(), self.to.unwrap_or_default());
        Counted {
            cpu: b.0 - a.0,
            requests: b.1 - a.1,
            waits: b.2 - a.2,
        }
    }

    /// The share of the machine's CPU time the hypervisor took within the window.
    fn steal_pct(&self) -> Option<f64> {
        MachineCpu::between(self.machine.0, self.machine.1).steal_pct
    }

    /// The next edge not yet passed, so that a wait ends at it.
    fn next_edge(&self, w: &Window) -> Option<u64> {
        match (&self.from, &self.to) {
            (None, _) => Some(w.from),
            (Some(_), None) => Some(w.to),
            _ => None,
        }
    }
}

/// One side's CPU, requests and waits within the window.
struct Counted {
    cpu: CpuTime,
    requests: u64,
    waits: u64,
}

impl Counted {
    /// `seconds` of CPU per request, in microseconds.
    fn us(&self, seconds: f64) -> f64 {
        self.per_request(seconds * 1e6)
    }

    fn per_request(&self, v: f64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            v / self.requests as f64
        }
    }
}

fn main() {
    let args = Args::parse();
    let outcome = match args.client_of {
        Some(port) => ask(&args, port),
        None => answer(&args),
    };
    if let Err(e) = outcome {
        eprintln!("poll_floor: {e}");
        std::process::exit(1);
    }
}

/// The answering process: accepts the asking side's sockets, answers every whole
/// request with the answer's bytes until every socket is closed, then reports both
/// sides.
fn answer(args: &Args) -> Result<(), String> {
    if args.users == 0 || args.request_bytes == 0 || args.interval.is_zero() {
        return Err("--users, --request-bytes and --interval must be above 0".into());
    }
    pin(args.server_cpu)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let start = now_ns() + 500_000_000 + args.users as u64 * 200_000;
    let client = start_other(
        "asking side",
        &[
            "--client-of".into(),
            port.to_string(),
            "--start-ns".into(),
            start.to_string(),
        ],
    )?;
    let mut socks = Vec::with_capacity(args.users);
    while socks.len() < args.users {
        let (s, _) = listener.accept().map_err(|e| format!("accepting: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push((s, 0usize));
    }
    let ep = epoll_of(socks.iter().map(|s| s.0.as_raw_fd()), libc::EPOLLIN)?;
    let reply = vec![b'a'; args.answer_bytes];
    let window = Window::of(args, start);
    let mut marks = Marks::default();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut inbox = vec![0u8; 64 * 1024];
    let (mut answered, mut waits, mut short_writes) = (0u64, 0u64, 0u64);
    let mut open = socks.len();
    while open > 0 {
        let timeout = marks
            .next_edge(&window)
            .map_or(-1, |e| ms_until(e, now_ns()));
        let n = wait(&ep, &mut events, timeout)?;
        waits += 1;
        marks.look(&window, now_ns(), answered, waits);
        for ev in &events[..n] {
            let (s, partial) = &mut socks[ev.u64 as usize];
            let got = match (&*s).read(&mut inbox) {
                Ok(0) => {
                    // SAFETY: the fd is open and in the set; a closed socket stays
                    // readable, so it leaves the set.
                    unsafe {
                        libc::epoll_ctl(
                            ep.as_raw_fd(),
                            libc::EPOLL_CTL_DEL,
                            s.as_raw_fd(),
                            std::ptr::null_mut(),
                        )
                    };
                    open -= 1;
                    continue;
                }
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.to_string()),
            };
            *partial += got;
            while *partial >= args.request_bytes {
                *partial -= args.request_bytes;
                short_writes += u64::from((&*s).write(&reply).map_or(true, |n| n < reply.len()));
                answered += 1;
            }
        }
    }

    let asked = report_of(client, "asking side")?;
    let c = marks.counted();
    let client_us = asked["us_per_request"].as_f64().unwrap_or(0.0);
    let report = json!({
        "users": args.users,
        "interval_s": args.interval.as_secs_f64(),
        "request_bytes": args.request_bytes,
        "answer_bytes": args.answer_bytes,
        "grain_ms": args.grain.as_secs_f64() * 1e3,
        "read_at_tick": args.read_at_tick,
        "requests_per_s": c.requests as f64 / args.duration.as_secs_f64(),
        "server_us_per_request": c.us(c.cpu.total()),
        "server_sys_us_per_request": c.us(c.cpu.system),
        "server_waits_per_request": c.per_request(c.waits as f64),
        "answers_not_taken_whole": short_writes,
        "client_over_server": client_us / c.us(c.cpu.total()),
        "steal_pct": marks.steal_pct(),
        "client": asked,
    });
    println!(
        "{} sockets, one request each every {:?} ({:.0} requests/s): server {:.2} µs a \
         request (system {:.2}, {:.2} waits), client {:.2} µs (system {:.2}, {:.2} waits): \
         client/server {:.2}; round trip p50 {:.0} µs, p99 {:.0}; steal {:.1}%",
        args.users,
        args.interval,
        report["requests_per_s"].as_f64().unwrap_or(0.0),
        c.us(c.cpu.total()),
        c.us(c.cpu.system),
        report["server_waits_per_request"].as_f64().unwrap_or(0.0),
        client_us,
        asked["sys_us_per_request"].as_f64().unwrap_or(0.0),
        asked["waits_per_request"].as_f64().unwrap_or(0.0),
        report["client_over_server"].as_f64().unwrap_or(0.0),
        asked["round_trip_us"]["p50"].as_f64().unwrap_or(0.0),
        asked["round_trip_us"]["p99"].as_f64().unwrap_or(0.0),
        marks.steal_pct().unwrap_or(0.0),
    );
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{report:#}\n")).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The asking process: connects, then sends each socket's request at its phase of
/// every interval (socket `i` at `start + i * interval / users`, then each interval
/// after), reads the answers, and after the window closes every socket and prints its
/// figures as one JSON line.
fn ask(args: &Args, port: u16) -> Result<(), String> {
    pin(args.client_cpu)?;
    let start = args.start_ns.ok_or("--client-of needs --start-ns")?;
    let mut socks = Vec::with_capacity(args.users);
    for _ in 0..args.users {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        // Bytes of the answer still to come, and when its request went.
        socks.push((s, 0usize, 0u64));
    }
    // Read at ticks: no socket in the set, whose waits are then the timer's alone.
    let ep = epoll_of(
        socks
            .iter()
            .map(|s| s.0.as_raw_fd())
            .filter(|_| !args.read_at_tick),
        libc::EPOLLIN,
    )?;
    if args.read_at_tick {
        for s in &socks {
            stamp_arrivals(&s.0)?;
        }
    }
    // Read at ticks: the sockets whose answer has not all come.
    let mut owing: Vec<usize> = Vec::new();
    let request = vec![b'G'; args.request_bytes];
    let step = args.interval.as_nanos() as u64 / args.users as u64;
    let grain = (args.grain.as_nanos() as u64).max(1);
    let window = Window::of(args, start);
    let end = window.to + 1_000_000;
    let mut marks = Marks::default();
    let mut round_trip = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut inbox = vec![0u8; 64 * 1024];
    let (mut next, mut sent, mut waits, mut late) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let now = now_ns();
        // Every poll now due goes out.
        let mut due = start + next * step;
        while due <= now && due < end {
            let (s, owed, at) = &mut socks[(next % args.users as u64) as usize];
            if *owed > 0 {
                // The last answer has not come: this poll is skipped, not queued.
                late += 1;
            } else {
                (&*s).write_all(&request).map_err(|e| e.to_string())?;
                (*owed, *at) = (args.answer_bytes, now);
                sent += 1;
                owing.push((next % args.users as u64) as usize);
            }
            next += 1;
            due = start + next * step;
        }
        marks.look(&window, now, sent, waits);
        if now >= end && socks.iter().all(|s| s.1 == 0) {
            break;
        }
        let mut wake = if due < end {
            due.div_ceil(grain) * grain
        } else {
            now + 1_000_000
        };
        if let Some(edge) = marks.next_edge(&window) {
            wake = wake.min(edge);
        }
        let n = wait(&ep, &mut events, ms_until(wake, now))?;
        waits += 1;
        if args.read_at_tick {
            // The kernel's receive stamps are on `CLOCK_REALTIME`.
            let offset = clock_ns(libc::CLOCK_REALTIME) as i64 - now_ns() as i64;
            let mut i = 0;
            while i < owing.len() {
                let (s, owed, at) = &mut socks[owing[i]];
                let (got, stamp) = match recv_stamped(s, &mut inbox) {
                    Ok((0, _)) => return Err("the server closed a socket".into()),
                    Ok(read) => read,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (0, 0),
                    Err(e) => return Err(e.to_string()),
                };
                *owed = owed.saturating_sub(got);
                if got > 0 && *owed == 0 {
                    if stamp == 0 {
                        return Err("an answer came without its receive stamp".into());
                    }
                    let came = (stamp as i64 - offset) as u64;
                    round_trip.saturating_record((came.saturating_sub(*at) / 1000).max(1));
                    owing.swap_remove(i);
                } else {
                    i += 1;
                }
            }
        }
        for ev in &events[..n] {
            let (s, owed, at) = &mut socks[ev.u64 as usize];
            let got = match (&*s).read(&mut inbox) {
                Ok(0) => return Err("the server closed a socket".into()),
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.to_string()),
            };
            *owed = owed.saturating_sub(got);
            if *owed == 0 {
                round_trip.saturating_record(((now_ns() - *at) / 1000).max(1));
            }
        }
    }
    drop(socks);
    let c = marks.counted();
    let q = |p: f64| round_trip.value_at_quantile(p) as f64;
    let report = json!({
        "requests": c.requests,
        "skipped_late": late,
        "us_per_request": c.us(c.cpu.total()),
        "sys_us_per_request": c.us(c.cpu.system),
        "waits_per_request": c.per_request(c.waits as f64),
        "round_trip_us": {"p50": q(0.5), "p99": q(0.99), "max": round_trip.max() as f64},
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}").map_err(|e| e.to_string())
}

/// Has the kernel stamp each segment `s` receives with the time it came
/// (`SO_TIMESTAMPNS`), for [`recv_stamped`].
fn stamp_arrivals(s: &TcpStream) -> Result<(), String> {
    let on: libc::c_int = 1;
    // SAFETY: the option's value is an int that outlives the call; the fd is open.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(format!(
            "SO_TIMESTAMPNS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Reads what `s` holds without waiting, with the kernel's receive stamp of the last
/// segment read (`CLOCK_REALTIME`, nanoseconds).
fn recv_stamped(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, u64)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = 0;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = timespec_ns(&ts);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}
