//! SPEC §14 streams through the real gateway: real redis-server, redis-cli and
//! redis-benchmark through a stream, large transfers, the allowlist, limits, timeouts,
//! half-close, PROXY v2, reload and graceful upgrade, and `check`'s errors.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod check;
mod redis;
mod reload;
mod transfer;
mod upstream;

use common::gateway::Gateway;
use common::prom::{scrape, Scrape};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The part of every config that is not streams; `@STREAMS@` is replaced by the streams.
const BASE: &str = r#"
env: test-env
listen: { http: "@HTTP@", admin: "@ADMIN@" }
server:
  threads: 2
  grace_period: GRACE
  graceful_shutdown_timeout: 1s
  upgrade_sock: "@DIR@/upgrade.sock"
  pid_file: "@DIR@/anygate.pid"
instances:
  - { id: up-a, address: "UP_A" }
  - { id: up-b, address: "UP_B" }
routes:
  - { domain: "*", path: /, instance: up-a }
streams:
@STREAMS@
"#;

/// A free port on `ip`, not yet bound.
pub fn port_on(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind :0");
    l.local_addr().expect("local addr")
}

/// A gateway config: instance `up-a` at `a`, `up-b` at `b` (their ports are only used by
/// HTTP routes: streams name their own), the given `streams:` items and grace period.
pub fn config(a: SocketAddr, b: SocketAddr, streams: &str, grace: &str) -> String {
    BASE.replace("UP_A", &a.to_string())
        .replace("UP_B", &b.to_string())
        .replace("GRACE", grace)
        .replace("@STREAMS@", streams)
}

/// Starts the gateway and waits until it holds every stream listener in `listens`.
pub fn start(config: &str, listens: &[SocketAddr]) -> Gateway {
    let gw = Gateway::start(config);
    for addr in listens {
        wait_listening(&gw, *addr);
    }
    gw
}

/// Polls /proc (bounded) until the gateway process holds a listener on `addr`'s port.
pub fn wait_listening(gw: &Gateway, addr: SocketAddr) {
    let deadline = Instant::now() + DEADLINE;
    while common::owner::owns_listener(gw.pid(), addr) != Some(true) {
        assert!(
            Instant::now() < deadline,
            "stream listener {addr} never came up:\n{}",
            gw.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP connection to `to` from the loopback address `from` (port chosen by the system).
pub fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().expect("source address");
    let domain = socket2::Domain::for_address(to);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::new(from, 0).into())
        .expect("bind the client address");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Writes `msg` and reads back exactly as many bytes (through an echoing instance).
pub fn echo(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Whether the gateway closed `s` (end of stream or reset) without sending anything, within
/// the read timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Waits (bounded) until the gateway's output contains `needle` `n` times; returns the output.
pub fn wait_log(gw: &Gateway, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = gw.stderr();
        if out.matches(needle).count() >= n {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {n} time(s):\n{out}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The stream's counter for `result`.
pub fn connections(s: &Scrape, stream: &str, result: &str) -> f64 {
    s.value(
        "anygate_stream_connections_total",
        &[("stream", stream), ("result", result)],
    )
}

/// Scrapes until `done` holds (bounded).
pub fn scrape_until(gw: &Gateway, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    common::prom::scrape_until(gw.admin, DEADLINE, what, done)
}

pub fn metrics(gw: &Gateway) -> Scrape {
    scrape(gw.admin)
}

pub fn localhost() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
