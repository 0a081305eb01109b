//! Limits and timeouts of the HTTP access entry: body limits by Content-Length and while a
//! chunked body streams (the instance never gets more than the limit), per-entry read
//! timeouts, the connect timeout, and oversized request headers.

mod common;
use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const HOST: &str = "test-env.service.tcloudbase.com";

fn gateway(instance: SocketAddr, extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 1 }}
{extra}
instances: [{{ id: lhins-a, address: "{instance}" }}]
routes: [{{ domain: default, path: /api, instance: lhins-a }}]
"#
    ))
}

fn sdk() -> Req {
    Req::get("/")
        .header("X-WX-SERVICE", "tcbanyservice")
        .header("X-Vm-Service", "lhins-a")
}

#[test]
fn http_body_limit_by_content_length() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "limits: { max_body: 1KB, max_sdk_body: 100KB }");
    let resp = send(
        gw.http,
        &Req::post("/api/x").host(HOST).body(vec![b'a'; 1024]),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(Seen::of(&resp).body.len(), 1024);
    let resp = send(
        gw.http,
        &Req::post("/api/x").host(HOST).body(vec![b'a'; 1025]),
    )
    .unwrap();
    assert_error(&resp, 413, "EXCEED_MAX_PAYLOAD_SIZE");
    assert_eq!(up.count(), 1, "refused before the instance saw it");
    // The SDK limit is its own: 1025 bytes is fine there.
    let resp = send(gw.http, &sdk().body(vec![b'a'; 1025])).unwrap();
    assert_eq!(resp.status, 200);
}

/// An instance that records every byte it receives on its first connection, until the peer
/// closes it (or 10 s pass).
fn recording_instance() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    (addr, rx)
}

#[test]
fn chunked_body_over_the_limit_is_cut_while_it_streams() {
    let (instance, received) = recording_instance();
    let gw = gateway(instance, "limits: { max_body: 1KB }");
    let mut conn = Conn::connect(gw.http).unwrap();
    // The head and 1200 bytes of a body that never ends: the answer must not wait for it.
    let mut raw =
        format!("POST /api/x HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for fill in [b'b', b'c'] {
        raw.extend_from_slice(b"258\r\n");
        raw.extend_from_slice(&[fill; 600]);
        raw.extend_from_slice(b"\r\n");
    }
    conn.write_raw(&raw).unwrap();
    let resp = conn.read_response(false).unwrap();
    assert_error(&resp, 413, "EXCEED_MAX_PAYLOAD_SIZE");
    drop(conn);
    // Whatever reached the instance is within the limit (the body is forwarded as it comes,
    // up to the piece that crosses the limit). No connection at all would be fine too.
    let bytes = received
        .recv_timeout(Duration::from_secs(12))
        .unwrap_or_default();
    let payload = bytes.iter().filter(|&&b| b == b'b' || b == b'c').count();
    assert!(payload <= 1024, "the instance got {payload} body bytes");
}

#[test]
fn read_timeout_is_per_entry() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(1500)));
    let gw = gateway(slow.addr(), "timeouts: { sdk: 300ms, http: 10s }");
    let started = Instant::now();
    assert_error(&send(gw.http, &sdk()).unwrap(), 504, "SERVICE_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        send(gw.http, &Req::get("/api/x").host(HOST))
            .unwrap()
            .status,
        200
    );

    let gw = gateway(slow.addr(), "timeouts: { sdk: 10s, http: 300ms }");
    let started = Instant::now();
    let resp = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_error(&resp, 504, "SERVICE_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(send(gw.http, &sdk()).unwrap().status, 200);
}

#[test]
fn connect_timeout_is_504() {
    use socket2::{Domain, Socket, Type};
    // A loopback listener that never accepts, with a backlog of 0: once its queue holds
    // one connection, Linux drops further SYNs, so a connect hangs.
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    if fillers.len() >= 3 {
        eprintln!("this kernel does not hold back connections to a full backlog: not tested");
        return;
    }
    let gw = gateway(addr, "timeouts: { connect: 300ms, http: 10s }");
    let started = Instant::now();
    let resp = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_error(&resp, 504, "SERVICE_TIMEOUT");
    assert_eq!(resp.header("X-Cloudbase-Upstream-Status-Code"), Some("-"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(fillers);
}

#[test]
fn oversized_request_headers_get_400_not_a_silent_close() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(up.addr(), "");
    // More header lines than the parser takes (Pingora: 256).
    let mut req = Req::get("/api/x").host(HOST);
    for i in 0..300 {
        req = req.header(&format!("X-Many-{i}"), "v");
    }
    let resp = send(gw.http, &req).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    // A header block over 1 MiB (Pingora's limit), sent whole.
    let big = "x".repeat(1100 * 1024);
    let mut conn = Conn::connect(gw.http).unwrap();
    let raw = format!("GET /api/x HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n");
    // The gateway may answer and close before it read everything: keep what it said.
    let _ = conn.write_raw(raw.as_bytes());
    let resp = conn.read_response(false);
    let status = resp.as_ref().map(|r| r.status).map_err(|e| e.to_string());
    assert!(
        matches!(status, Ok(400 | 431)),
        "{status:?}\n{}",
        gw.stderr()
    );
    assert_eq!(up.count(), 0);
    // Still serving.
    assert_eq!(
        send(gw.http, &Req::get("/api/x").host(HOST))
            .unwrap()
            .status,
        200
    );
}
