//! Whether a listening TCP port belongs to a given process (Linux `/proc`).
//!
//! Ports are picked free and released before the gateway binds them, so another process can
//! take one in between. Pingora then keeps retrying the bind for 30 s without exiting, while
//! a connect to the port succeeds (it reaches the other process): the harness checks that the
//! listener it talks to is its own gateway's.

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddr;

/// `Some(true)` when process `pid` holds the socket listening on `addr`'s port, `Some(false)`
/// when some other socket does (or none), `None` when `/proc` cannot tell (not Linux).
pub fn owns_listener(pid: u32, addr: SocketAddr) -> Option<bool> {
    // Both tables: a dual-stack `[::]` listener also takes IPv4 connections.
    let text = fs::read_to_string("/proc/net/tcp").ok()?
        + &fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let listening: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT (header lines do not parse); state 0A is
            // LISTEN; the inode is field 9.
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            (port == addr.port() && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect();
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mine: HashSet<u64> = fds
        .filter_map(|e| {
            let link = fs::read_link(e.ok()?.path()).ok()?;
            let s = link.to_str()?;
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    Some(listening.iter().any(|i| mine.contains(i)))
}
