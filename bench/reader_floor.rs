//! A bare WebSocket reader's CPU per delivery on this machine: N subscribers read by
//! one thread with no async runtime and no accounting beyond each message's latency,
//! so that the loadgen's CPU per delivery can be set against what a client with next
//! to no user space spends, not against the server's alone. It is not a strict lower
//! bound: the kernel's part of a client's CPU depends on how often it sleeps and is
//! woken, and a busier client (the loadgen) may pay less of it.
//!
//! It connects `--users` WebSockets to a running lab, reads them with one `epoll`
//! loop (or, built with `--features uring`, with io_uring receives and no `epoll` at
//! all), and over the measured window prints its own CPU (`getrusage`) and, given
//! `--server-pid`, the server's (`/proc/<pid>/stat`), each per delivery it read.
//! Something else sends the messages: `bench/reader_floor.py` runs the lab, this and
//! the loadgen's senders together.
//!
//! Per message it does what a measuring client must at the least: checks the frame's
//! header and that text is UTF-8, and records the time since the message's
//! `client_ts` in an HDR histogram. That latency is not printed: the senders are
//! another process, whose clock (wall time at its start plus a monotonic offset, as
//! the loadgen keeps it) may stand a few milliseconds off this one's. The loadgen also
//! parses the whole message, tracks ids and reconnects, which is what sits between
//! this reader's user time and its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use loadgen::cli::parse_duration;
use loadgen::machine::{CpuTime, cpu_time, process_usage};

#[path = "floor_epoll.rs"]
mod floor_epoll;
use floor_epoll::{epoll_of, wait};

#[derive(Parser)]
struct Args {
    /// The lab's address.
    #[arg(long)]
    target: String,
    #[arg(long)]
    room: String,
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Reading before the window starts.
    #[arg(long, default_value = "4", value_parser = parse_duration)]
    warmup: Duration,
    /// The measured window.
    #[arg(long, default_value = "8", value_parser = parse_duration)]
    duration: Duration,
    /// The lab's pid, for its CPU over the same window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Read with io_uring instead of epoll (built with `--features uring`).
    #[arg(long)]
    uring: bool,
}

/// The server's CPU so far, from /proc.
fn process_cpu(pid: u32) -> Option<CpuTime> {
    process_usage(pid).map(|(cpu, _rss)| cpu)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One subscriber: its socket and the bytes read but not yet used.
struct Sub {
    stream: TcpStream,
    buf: Box<[u8; 4096]>,
    len: usize,
}

/// What the reader counted.
struct Tally {
    deliveries: u64,
    reads: u64,
    /// `epoll_wait` or io_uring waits.
    waits: u64,
    latency: Histogram<u64>,
}

impl Sub {
    fn connect(target: &str, room: &str) -> std::io::Result<Sub> {
        let mut stream = TcpStream::connect(target)?;
        stream.set_nodelay(true)?;
        write!(
            stream,
            "GET /rooms/{room}/ws?after=0 HTTP/1.1\r\nhost: {target}\r\nconnection: upgrade\r\n\
             upgrade: websocket\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )?;
        // A server that never answers fails the run instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut b)?;
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(std::io::Error::other(format!(
                "no upgrade: {}",
                String::from_utf8_lossy(&head)
            )));
        }
        stream.set_nonblocking(true)?;
        Ok(Sub {
            stream,
            buf: Box::new([0; 4096]),
            len: 0,
        })
    }

    /// Takes every whole frame out of the buffer after `n` more bytes came.
    fn frames(&mut self, n: usize, tally: &mut Tally) -> Result<(), String> {
        self.len += n;
        let now = now_us();
        let b = &self.buf[..self.len];
        let mut p = 0;
        while b.len() - p >= 2 {
            if b[p] & 0x70 != 0 || b[p + 1] & 0x80 != 0 {
                return Err("reserved bits or a masked frame".into());
            }
            let (head, len) = match b[p + 1] & 0x7f {
                126 if b.len() - p >= 4 => (4, u16::from_be_bytes([b[p + 2], b[p + 3]]) as usize),
                126 => break,
                127 => return Err("a frame over 64 KiB".into()),
                n => (2, n as usize),
            };
            if head + len > self.buf.len() {
                return Err(format!("a frame of {len} bytes, over this reader's buffer"));
            }
            if b.len() - p < head + len {
                break;
            }
            let payload = &b[p + head..p + head + len];
            match b[p] & 0x8f {
                0x81 => {
                    std::str::from_utf8(payload).map_err(|_| "text is not UTF-8")?;
                    let ts = client_ts(payload).ok_or("a message without client_ts")?;
                    tally.deliveries += 1;
                    tally
                        .latency
                        .saturating_record(now.saturating_sub(ts).max(1));
                }
                // A ping is answered at once, so that a long run keeps its subscribers.
                0x89 => pong(&mut self.stream, payload)?,
                0x8a => {}
                0x88 => return Err("the server closed the connection".into()),
                op => return Err(format!("an unexpected frame (first byte {op:#04x})")),
            }
            p += head + len;
        }
        self.buf.copy_within(p..self.len, 0);
        self.len -= p;
        Ok(())
    }
}

/// Sends a masked pong carrying the ping's payload (control payloads are at most 125
/// bytes, and a zero mask leaves them as they are).
fn pong(stream: &mut TcpStream, payload: &[u8]) -> Result<(), String> {
    let mut frame = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    stream
        .write_all(&frame)
        .map_err(|e| format!("answering a ping: {e}"))
}

fn client_ts(json: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"client_ts\":";
    let at = memchr::memmem::find(json, KEY)? + KEY.len();
    let digits: Vec<u8> = json[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Reads until `end`, calling `mark` before each wait (it notes the window's start).
type Loop = fn(&mut [Sub], &mut Tally, Instant, &mut dyn FnMut(&Tally)) -> Result<(), String>;

fn epoll_loop(
    subs: &mut [Sub],
    tally: &mut Tally,
    end: Instant,
    mark: &mut dyn FnMut(&Tally),
) -> Result<(), String> {
    let ep = epoll_of(
        subs.iter().map(|s| s.stream.as_raw_fd()),
        libc::EPOLLIN | libc::EPOLLET,
    )?;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    while Instant::now() < end {
        mark(tally);
        let k = wait(&ep, &mut events, 100)?;
        tally.waits += 1;
        for e in &events[..k] {
            let i = e.u64 as usize;
            let s = &mut subs[i];
            // Edge-triggered: read until a read comes back short.
            loop {
                let room = &mut s.buf[s.len..];
                let want = room.len();
                let n =
                    unsafe { libc::recv(s.stream.as_raw_fd(), room.as_mut_ptr().cast(), want, 0) };
                tally.reads += 1;
                if n == 0 {
                    return Err(format!("subscriber {i}: the server closed the connection"));
                }
                if n < 0 {
                    let err = std::io::Error::last_os_error();
                    match err.kind() {
                        std::io::ErrorKind::WouldBlock => break,
                        std::io::ErrorKind::Interrupted => continue,
                        _ => return Err(format!("subscriber {i}: {err}")),
                    }
                }
                s.frames(n as usize, tally)
                    .map_err(|e| format!("subscriber {i}: {e}"))?;
                if (n as usize) < want {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(feature = "uring")]
fn uring_loop(
    subs: &mut [Sub],
    tally: &mut Tally,
    end: Instant,
    mark: &mut dyn FnMut(&Tally),
) -> Result<(), String> {
    use io_uring::{IoUring, opcode, types};
    let e = |e: std::io::Error| e.to_string();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(2 * subs.len().next_power_of_two() as u32)
        .build(subs.len().next_power_of_two().min(4096) as u32)
        .map_err(e)?;
    let arm = |ring: &mut IoUring, i: usize, s: &mut Sub| -> Result<(), String> {
        let room = &mut s.buf[s.len..];
        let sqe = opcode::Recv::new(
            types::Fd(s.stream.as_raw_fd()),
            room.as_mut_ptr(),
            room.len() as u32,
        )
        .build()
        .user_data(i as u64);
        if ring.submission().is_full() {
            ring.submit().map_err(e)?;
        }
        // SAFETY: the buffer lives in `subs`, which outlives the ring's use of it: a
        // receive is re-armed only after its completion was taken.
        unsafe { ring.submission().push(&sqe) }.map_err(|e| e.to_string())
    };
    for (i, s) in subs.iter_mut().enumerate() {
        arm(&mut ring, i, s)?;
    }
    let mut done = Vec::with_capacity(4096);
    while Instant::now() < end {
        mark(tally);
        let ts = types::Timespec::new().nsec(100_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        // A wait that times out (ETIME) or is interrupted is a wait like any other.
        if let Err(err) = ring.submitter().submit_with_args(1, &args)
            && !matches!(err.raw_os_error(), Some(libc::ETIME | libc::EINTR))
        {
            return Err(format!("waiting on the ring: {err}"));
        }
        tally.waits += 1;
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for &(i, n) in &done {
            tally.reads += 1;
            if n <= 0 {
                return Err(format!("subscriber {i}: receive answered {n}"));
            }
            subs[i]
                .frames(n as usize, tally)
                .map_err(|e| format!("subscriber {i}: {e}"))?;
            arm(&mut ring, i, &mut subs[i])?;
        }
    }
    // The ring is dropped (and its receives cancelled) before the buffers.
    drop(ring);
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.users == 0 {
        return Err("--users must be at least 1".into());
    }
    let run: Loop = if args.uring {
        #[cfg(feature = "uring")]
        {
            uring_loop
        }
        #[cfg(not(feature = "uring"))]
        return Err("--uring needs a build with --features uring".into());
    } else {
        epoll_loop
    };
    // As many descriptors as the hard limit allows: 10,000 subscribers need more than
    // the usual soft limit.
    // SAFETY: get/setrlimit write and read the struct they are given.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
    let mut subs = (0..args.users)
        .map(|_| Sub::connect(&args.target, &args.room))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("connecting: {e}"))?;
    // The senders start on this line (bench/reader_floor.py waits for it).
    eprintln!("connected {}", subs.len());
    let mut tally = Tally {
        deliveries: 0,
        reads: 0,
        waits: 0,
        latency: Histogram::new(3).expect("3 significant figures"),
    };
    let start = Instant::now();
    let window = start + args.warmup;
    let mut at_start = None;
    let server = args.server_pid;
    let mut mark = |t: &Tally| {
        if at_start.is_none() && Instant::now() >= window {
            at_start = Some((
                cpu_time(),
                server.and_then(process_cpu),
                t.deliveries,
                t.reads,
                t.waits,
            ));
        }
    };
    run(&mut subs, &mut tally, window + args.duration, &mut mark)?;
    let (cpu0, srv0, d0, r0, w0) = at_start.ok_or("the run ended before its window")?;
    let cpu1 = cpu_time();
    let d = (tally.deliveries - d0) as f64;
    if d == 0.0 {
        return Err("nothing was delivered in the window".into());
    }
    let per = |s: f64| s / d * 1e6;
    let server = match (srv0, server.and_then(process_cpu)) {
        (Some(a), Some(b)) => format!("{:.3},{:.3}", per((b - a).total()), per((b - a).system)),
        _ => ",".into(),
    };
    println!(
        "reader,deliveries,reads,waits,reader_us_per_delivery,reader_system_us_per_delivery,\
         server_us_per_reader_delivery,server_system_us_per_reader_delivery"
    );
    println!(
        "{},{d},{},{},{:.3},{:.3},{server}",
        if args.uring { "io_uring" } else { "epoll" },
        tally.reads - r0,
        tally.waits - w0,
        per((cpu1 - cpu0).total()),
        per((cpu1 - cpu0).system),
    );
    Ok(())
}
