//! An upstream that answers `100 Continue` and then closes or goes silent: the client still
//! gets SPEC §8's 502/504 (the interim response is not "headers already sent"), and the
//! access log and metrics record that status, never 100.

use crate::common::prom::{scrape_until, Scrape};
use crate::common::*;
use crate::raw_upstream::{After100, RawUpstream};
use crate::HOST;
use std::io::Read;
use std::time::{Duration, Instant};

fn gateway(close: &RawUpstream, silent: &RawUpstream) -> Gateway {
    Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 1 }}
timeouts: {{ connect: 1s, http: 300ms, sdk: 300ms }}
instances:
  - {{ id: lhins-close, address: "{}" }}
  - {{ id: lhins-silent, address: "{}" }}
routes:
  - {{ domain: default, path: /close, instance: lhins-close }}
  - {{ domain: default, path: /silent, instance: lhins-silent }}
plugins:
  - name: request_id
  - name: routing
  - name: forwarded_for
  - name: upstream_info
  - name: metrics
  - name: access_log
"#,
        close.addr(),
        silent.addr()
    ))
}

/// The two ways a client sends a body: waiting for `100 Continue` first, or all at once
/// without `Expect`.
fn requests(path: &str) -> [(&'static str, Req); 2] {
    [
        (
            "with Expect",
            Req::post(path)
                .host(HOST)
                .header("Expect", "100-continue")
                .body(b"{\"a\":1}".to_vec()),
        ),
        (
            "without Expect",
            Req::post(path).host(HOST).body(b"{\"a\":1}".to_vec()),
        ),
    ]
}

/// Sends `req` the way a careful client does: the header, then (after the interim answer
/// when it asked for one, at once otherwise) the body.
fn send_expecting(gw: &Gateway, req: &Req, expect: bool) -> Response {
    let bytes = req.to_bytes();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(bytes.len());
    let mut conn = Conn::connect(gw.http).unwrap();
    conn.write_raw(&bytes[..split]).unwrap();
    if expect {
        let interim = read_header(&mut conn);
        assert!(interim.starts_with(b"HTTP/1.1 100 "), "{interim:?}");
    }
    conn.write_raw(&bytes[split..]).unwrap();
    conn.read_response(false)
        .unwrap_or_else(|e| panic!("{} {}: no final response: {e}", req.method(), req.target()))
}

/// Reads one response header, byte by byte (nothing past it is consumed).
fn read_header(conn: &mut Conn) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.stream().read(&mut byte).unwrap(), 1, "{got:?}");
        got.push(byte[0]);
    }
    got
}

#[test]
fn interim_100_then_close_or_silence_is_a_spec_error() {
    let close = RawUpstream::start(After100::Close);
    let silent = RawUpstream::start(After100::Silent);
    let gw = gateway(&close, &silent);
    let mut ids = Vec::new();
    for (path, status, code) in [
        ("/close/x", 502, "REQUEST_SERVICE_FAILED"),
        ("/silent/x", 504, "SERVICE_TIMEOUT"),
    ] {
        for (how, req) in requests(path) {
            let resp = send_expecting(&gw, &req, how == "with Expect");
            assert_eq!(resp.status, status, "{path} {how}: {}", resp.text());
            assert_error(&resp, status, code);
            assert_eq!(
                resp.header("X-Cloudbase-Upstream-Status-Code"),
                Some("-"),
                "{path} {how}"
            );
            ids.push((
                resp.header("X-Cloudbase-Request-Id").unwrap().to_string(),
                status,
            ));
        }
    }
    assert!(close.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    // A client that hangs up after the interim answer instead of sending its body.
    let mut conn = Conn::connect(gw.http).unwrap();
    conn.write_raw(
        format!(
            "POST /silent/x HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let got = read_header(&mut conn);
    assert!(got.starts_with(b"HTTP/1.1 100"), "{got:?}");
    drop(conn);
    // The access log has each request with the status the client got, never 100.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines: Vec<serde_json::Value> = loop {
        let lines: Vec<serde_json::Value> = gw
            .stdout()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() > ids.len() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for (id, status) in &ids {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no access-log line for {id}:\n{}", gw.stdout()));
        assert_eq!(line["status"], *status, "{line}");
    }
    assert_eq!(lines.len(), ids.len() + 1, "{}", gw.stdout());
    for line in &lines {
        assert_ne!(line["status"], 100, "{line}");
    }
    let count = |m: &Scrape, status: &str| -> f64 {
        m.find("anygate_requests_total", &[("code", status)])
            .iter()
            .map(|s| s.value)
            .sum()
    };
    let m = scrape_until(gw.admin, Duration::from_secs(10), "4 requests", |m| {
        m.sum("anygate_requests_total") >= 5.0
    });
    assert_eq!(
        count(&m, "100"),
        0.0,
        "status 100 in the metrics:\n{}",
        m.text
    );
    assert_eq!(count(&m, "502"), 2.0, "{}", m.text);
    assert_eq!(count(&m, "504"), 2.0, "{}", m.text);
}
