//! The connection front through the real gateway: slow request headers are cut off at
//! `timeouts.client_header` (a thousand of them at once, while normal requests are served and
//! the memory they held comes back), idle keep-alive connections close at `timeouts.keepalive`,
//! oversized headers get the SPEC error, connection caps refuse cleanly, pipelined requests
//! are answered in order, and a graceful shutdown closes idle keep-alive connections at once
//! while requests in flight are answered.

mod common;
use common::prom::scrape;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const HOST: &str = "test-env.service.tcloudbase.com";

fn gateway(instance: SocketAddr, extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 1 }}
{extra}
instances: [{{ id: lhins-a, address: "{instance}" }}]
routes: [{{ domain: default, path: /api, instance: lhins-a }}]
"#
    ))
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether the peer closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
}

#[test]
fn a_thousand_slow_headers_are_cut_off_while_normal_requests_are_served() {
    const SLOW: usize = 1000;
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "timeouts: { client_header: 3s }");
    let ok = |gw: &Gateway| send(gw.http, &Req::get("/api/x").host(HOST)).map(|r| r.status);
    assert_eq!(ok(&gw).unwrap(), 200);
    let before = rss_kb(gw.pid());

    // Each slow client sends a request line and a first header line, then a line now and then:
    // the header never ends.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut s = TcpStream::connect(gw.http).expect("connect");
            let head = format!(
                "GET /api/slow-{i} HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: {}\r\n",
                "p".repeat(2000)
            );
            s.write_all(head.as_bytes()).expect("first bytes");
            s
        })
        .collect();
    let mut during = rss_kb(gw.pid());
    // A line every 500 ms keeps each one "active": only a deadline on the whole header cuts it.
    let mut served = 0;
    for round in 0..5 {
        for s in slow.iter_mut() {
            let _ = s.write_all(format!("X-Round: {round}\r\n").as_bytes());
        }
        for _ in 0..10 {
            assert_eq!(ok(&gw).unwrap(), 200, "a normal request during the attack");
            served += 1;
        }
        thread::sleep(Duration::from_millis(500));
        during = during.max(rss_kb(gw.pid()));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    // Every slow connection is closed by the gateway soon after its header deadline.
    let deadline = started + Duration::from_secs(3 + 10);
    let mut open = 0;
    for s in slow.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !closed_within(s, left.max(Duration::from_millis(10))) {
            open += 1;
        }
    }
    assert_eq!(open, 0, "slow connections still open after their deadline");
    assert!(served >= 10);
    assert_eq!(
        up.count(),
        served + 1,
        "no slow request reached the instance"
    );
    drop(slow);

    let s = scrape(gw.admin);
    assert_eq!(
        s.value(
            "anygate_client_connections_closed_total",
            &[("reason", "header_timeout")]
        ),
        SLOW as f64
    );
    // The memory the slow headers held comes back (allocator caches aside).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = rss_kb(gw.pid());
    while after > before + (during.saturating_sub(before)) / 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        after = rss_kb(gw.pid());
    }
    eprintln!("RSS: before {before} kB, with {SLOW} slow headers {during} kB, after {after} kB");
    assert!(
        during > before,
        "the slow headers held some memory ({before} -> {during} kB)"
    );
    assert!(
        after <= before + (during - before) / 2,
        "memory came back: before {before} kB, during {during} kB, after {after} kB"
    );
    assert_eq!(ok(&gw).unwrap(), 200);
}

#[test]
fn idle_keepalive_connections_close_and_busy_ones_stay() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "timeouts: { keepalive: 1s }");
    let mut idle = Conn::connect(gw.http).unwrap();
    assert_eq!(
        idle.send(&Req::get("/api/a").host(HOST)).unwrap().status,
        200
    );
    let mut busy = Conn::connect(gw.http).unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            busy.send(&Req::get("/api/b").host(HOST)).unwrap().status,
            200
        );
        thread::sleep(Duration::from_millis(300));
    }
    // The idle one was closed by the gateway (a new request on it fails)...
    assert!(idle.send(&Req::get("/api/a").host(HOST)).is_err());
    // ...the busy one still works.
    assert_eq!(
        busy.send(&Req::get("/api/b").host(HOST)).unwrap().status,
        200
    );
}

/// The end of a request decides the connection (`vendor/pingora-core/PATCHES.md`, "Sessions are
/// finished and released in place"): kept alive, it serves the next request; after a request
/// with `Connection: close`, or an HTTP/1.0 one without keep-alive, the gateway answers and
/// closes it; an HTTP/1.0 client asking for keep-alive keeps it.
#[test]
fn a_request_with_connection_close_is_answered_then_the_connection_closed() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "");
    let mut conn = Conn::connect(gw.http).unwrap();
    for path in ["/api/a", "/api/b"] {
        let resp = conn.send(&Req::get(path).host(HOST)).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_ne!(resp.header("Connection"), Some("close"));
    }
    let resp = conn.send(&Req::get("/api/c").host(HOST).close()).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        closed_within(
            &mut conn.stream().try_clone().unwrap(),
            Duration::from_secs(3)
        ),
        "the connection stayed open after Connection: close"
    );

    let mut old = TcpStream::connect(gw.http).unwrap();
    old.write_all(format!("GET /api/d HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    assert!(
        closed_within(&mut old, Duration::from_secs(3)),
        "an HTTP/1.0 connection without keep-alive stayed open"
    );

    let mut kept = Conn::connect(gw.http).unwrap();
    for path in ["/api/e", "/api/f"] {
        let raw = format!("GET {path} HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n");
        kept.write_raw(raw.as_bytes()).unwrap();
        let resp = kept.read_response(false).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(up.count(), 6);
}

#[test]
fn a_header_over_the_limit_gets_the_spec_error() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "limits: { max_header: 4KB }");
    let fits = Req::get("/api/x")
        .host(HOST)
        .header("X-Pad", &"a".repeat(3000));
    assert_eq!(send(gw.http, &fits).unwrap().status, 200);
    let big = Req::get("/api/x")
        .host(HOST)
        .header("X-Pad", &"a".repeat(5000));
    let resp = send(gw.http, &big).unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
    assert_eq!(resp.header("Connection"), Some("close"));
    assert!(resp.json()["message"].as_str().unwrap().contains("4096"));
    // Much bigger than the limit, sent whole: still answered, not reset.
    let mut conn = Conn::connect(gw.http).unwrap();
    let raw = format!(
        "GET /api/x HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
        "x".repeat(200_000)
    );
    let _ = conn.write_raw(raw.as_bytes());
    assert_error(&conn.read_response(false).unwrap(), 400, "INVALID_REQUEST");
    assert_eq!(up.count(), 1);
    let s = scrape(gw.admin);
    assert_eq!(
        s.value(
            "anygate_client_connections_closed_total",
            &[("reason", "header_too_large")]
        ),
        2.0
    );
}

#[test]
fn connection_caps_refuse_cleanly_and_forget_closed_connections() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(
        up.addr(),
        "limits: { max_connections: 4, max_connections_per_ip: 2 }",
    );
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let req = || Req::get("/api/x").host(HOST);
    let mut a1 = Conn::connect_from(local, gw.http).unwrap();
    let mut a2 = Conn::connect_from(local, gw.http).unwrap();
    assert_eq!(a1.send(&req()).unwrap().status, 200);
    assert_eq!(a2.send(&req()).unwrap().status, 200);
    // A third from the same address: the SPEC's rate-limit error, then the connection closes.
    let mut a3 = Conn::connect_from(local, gw.http).unwrap();
    let resp = a3.send(&req()).unwrap();
    assert_error(&resp, 429, "EXCEED_RATELIMIT");
    assert_eq!(resp.header("Retry-After"), Some("1"));
    assert!(a3.send(&req()).is_err(), "closed after the answer");
    // Another address still gets in, up to the total.
    let mut b1 = Conn::connect_from(other, gw.http).unwrap();
    let mut b2 = Conn::connect_from(other, gw.http).unwrap();
    assert_eq!(b1.send(&req()).unwrap().status, 200);
    assert_eq!(b2.send(&req()).unwrap().status, 200);
    let mut b3 = Conn::connect_from(other, gw.http).unwrap();
    assert_error(&b3.send(&req()).unwrap(), 429, "EXCEED_RATELIMIT");
    // Closing one makes room again.
    drop(a1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut a4 = Conn::connect_from(local, gw.http).unwrap();
        let status = a4.send(&req()).unwrap().status;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection was never forgotten"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a2.send(&req()).unwrap().status, 200);
    assert_eq!(b1.send(&req()).unwrap().status, 200);
    let s = scrape(gw.admin);
    for reason in ["max_connections_per_ip", "max_connections"] {
        assert!(
            s.value(
                "anygate_client_connections_closed_total",
                &[("reason", reason)]
            ) >= 1.0,
            "{reason} counted"
        );
    }
    assert!(s.value("anygate_client_connections", &[]) >= 3.0);
}

#[test]
fn pipelined_requests_get_the_first_answer_then_a_close_never_a_wrong_one() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "");
    let mut conn = Conn::connect(gw.http).unwrap();
    let mut raw = Vec::new();
    for i in 0..3 {
        raw.extend_from_slice(&Req::get(&format!("/api/p{i}")).host(HOST).to_bytes());
    }
    conn.write_raw(&raw).unwrap();
    // The first is answered; then the connection closes (RFC 9112 §9.3.2: the client retries
    // the others on a new connection). Whatever else comes must be a right answer.
    let first = conn.read_response(false).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(Seen::of(&first).path, "/p0");
    for want in ["/p1", "/p2"] {
        match conn.read_response(false) {
            Ok(resp) => assert_eq!(Seen::of(&resp).path, want),
            Err(_) => break,
        }
    }
    // A body sent with its header in one write is read as the body.
    let resp = send(gw.http, &Req::post("/api/body").host(HOST).body("hello")).unwrap();
    assert_eq!(Seen::of(&resp).body, "hello");
}

#[test]
fn bad_front_settings_are_config_errors() {
    let (code, _out, err) = check(
        r#"env: test-env
listen: { http: "127.0.0.1:8080" }
limits: { max_header: 10MB, max_connections: 0, max_connections_per_ip: 0 }
timeouts: { client_header: 0s, keepalive: 0s }
instances: [{ id: lhins-a, address: "127.0.0.1:80" }]
routes: [{ domain: default, path: /api, instance: lhins-a }]
"#,
    );
    assert_eq!(code, 1, "{err}");
    for key in [
        "max_header",
        "max_connections`",
        "max_connections_per_ip",
        "client_header",
        "keepalive",
    ] {
        assert!(err.contains(key), "{key} in {err}");
    }
    assert!(err.contains(":3:") && err.contains(":4:"), "{err}");
}

/// Reads one response to `GET` on `s` (header and a `Content-Length` body).
fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return got;
            }
        }
        let n = s.read(&mut buf).expect("reading the response");
        assert!(n > 0, "closed before the response: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_graceful_shutdown_closes_idle_keepalive_connections_while_requests_finish() {
    let fast = Upstream::start(Behavior::Echo);
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(2)));
    let mut gw = Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 1, grace_period: 6s, graceful_shutdown_timeout: 1s }}
timeouts: {{ keepalive: 60s }}
instances:
  - {{ id: lhins-a, address: "{}" }}
  - {{ id: lhins-slow, address: "{}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
  - {{ domain: default, path: /slow, instance: lhins-slow }}
"#,
        fast.addr(),
        slow.addr()
    ));
    // An idle keep-alive connection, its keep-alive timeout a minute away.
    let mut idle = TcpStream::connect(gw.http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(idle, "GET /api/a HTTP/1.1\r\nHost: {HOST}\r\n\r\n").unwrap();
    assert!(read_response(&mut idle).starts_with(b"HTTP/1.1 200"));
    // A request in flight, answered within the grace period.
    let http = gw.http;
    let in_flight = thread::spawn(move || {
        let mut c = Conn::connect(http).unwrap();
        c.send(&Req::get("/slow/x").host(HOST)).map(|r| r.status)
    });
    thread::sleep(Duration::from_millis(500));
    gw.signal("TERM");
    // Pingora broadcasts the shutdown at once and keeps the process for the grace period
    // (6 s), for requests in flight: the idle connection is closed by the shutdown, not at its
    // keep-alive timeout, and long before the process exits.
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)),
        "the idle connection was not closed by the shutdown"
    );
    assert!(gw.exit_status().is_none(), "the process exited first");
    let status = in_flight.join().unwrap();
    assert!(matches!(status, Ok(200)), "{status:?}\n{}", gw.stderr());
    assert!(gw.wait_exit(Duration::from_secs(30)).is_some());
}
