//! Where the load goes: `--target` URLs parsed into socket addresses, and the source
//! addresses connections are spread over.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use crate::error::LoadgenError;

/// A lab server to drive.
#[derive(Debug, Clone)]
pub struct Target {
    /// As given, for reports (`http://127.0.0.1:8080`).
    pub url: String,
    /// `host:port`, the `Host` header.
    pub authority: String,
    pub addr: SocketAddr,
    /// The server's process id, when it is a child of ours: its CPU and memory are
    /// then read from /proc, finer than its metrics.
    pub pid: Option<u32>,
}

impl Target {
    /// Parses `http://host:port` (a bare `host:port` is accepted too).
    pub fn parse(url: &str) -> Result<Target, LoadgenError> {
        let bad = |why: &str| LoadgenError::BadFlag(format!("--target {url}: {why}"));
        let rest = url.strip_prefix("http://").unwrap_or(url);
        if rest.contains("://") {
            return Err(bad("only http:// is supported"));
        }
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected http://host:port"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&e.to_string()))?
            .next()
            .ok_or_else(|| bad("the name has no address"))?;
        Ok(Target {
            url: format!("http://{authority}"),
            authority: authority.to_owned(),
            addr,
            pid: None,
        })
    }
}

/// Connections per source address above which a loopback run spreads over several.
const PER_SOURCE: usize = 5_000;

/// The source addresses for `connections` connections: those asked for, or for a big
/// loopback run 127.0.0.1 to 127.0.0.4 (the whole 127/8 is local), or none (the
/// kernel chooses).
pub fn source_addrs(asked: &[IpAddr], targets: &[Target], connections: usize) -> Vec<IpAddr> {
    if !asked.is_empty() {
        return asked.to_vec();
    }
    let loopback = targets
        .iter()
        .all(|t| t.addr.ip().is_loopback() && t.addr.is_ipv4());
    if loopback && connections > PER_SOURCE {
        (1..=4)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_rejects_others() {
        let t = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(
            Target::parse("127.0.0.1:9").unwrap().url,
            "http://127.0.0.1:9"
        );
        assert!(Target::parse("https://x:1").is_err());
        assert!(Target::parse("http://127.0.0.1:1/rooms").is_err());
    }

    #[test]
    fn big_loopback_runs_spread_over_four_sources() {
        let t = vec![Target::parse("http://127.0.0.1:1").unwrap()];
        assert!(source_addrs(&[], &t, 100).is_empty());
        assert_eq!(source_addrs(&[], &t, 10_000).len(), 4);
    }
}
