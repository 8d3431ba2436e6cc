//! The `epoll` set both floor examples (`reader_floor.rs`, `write_floor.rs`) read their
//! sockets with, each socket by its index.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An `epoll` set watching `socks` for `events` (`EPOLLIN`, with `EPOLLET` for
/// edge-triggered), each by its index.
pub fn epoll_of(socks: impl Iterator<Item = i32>, events: i32) -> Result<OwnedFd, String> {
    // SAFETY: epoll_create1 returns a new fd or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: `ep` is a new fd that nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for (i, fd) in socks.enumerate() {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` outlives the call; both fds are open.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(format!(
                "watching socket {i}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(ep)
}

/// How many of `events` are ready, waiting at most `timeout_ms` (-1: no limit); 0 when
/// a signal cut the wait short.
pub fn wait(
    ep: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> Result<usize, String> {
    // SAFETY: `events` has room for the count given.
    let n = unsafe {
        libc::epoll_wait(
            ep.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as i32,
            timeout_ms,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e.to_string())
        };
    }
    Ok(n as usize)
}
