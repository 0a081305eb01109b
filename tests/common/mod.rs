//! Integration-test harness for anygate: a tiny blocking HTTP/1.1 client
//! ([`http`]), an in-process fake upstream ([`upstream`]) and a launcher for
//! the real gateway binary ([`gateway`]). Std only, plus `serde_json`,
//! `tempfile` and `socket2` (to bind a client socket before connecting).
#![allow(dead_code, unused_imports)]

pub mod gateway;
pub mod http;
pub mod upstream;

pub use gateway::{
    anygate_bin, check, check_file, check_file_with_env, check_strict_with_env, check_with_env,
    free_port, free_ports, Gateway,
};
pub use http::{get, send, send_raw, Conn, Req, Response};
pub use upstream::{closed_port, Behavior, Received, Upstream};
pub mod seen;
pub use seen::Seen;

/// The four SPEC §7 response headers.
pub const SPEC_HEADERS: [&str; 4] = [
    "X-Cloudbase-Request-Id",
    "X-Cloudbase-Upstream-Status-Code",
    "X-Cloudbase-Upstream-Timecost",
    "X-Cloudbase-Upstream-Type",
];

/// Asserts a SPEC §8 error: status, JSON `code`, `requestId` equal to the response header,
/// and each §7 header present exactly once.
pub fn assert_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "status; body: {}", resp.text());
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["code"], code, "body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    let id = resp
        .header("X-Cloudbase-Request-Id")
        .expect("request id header");
    assert_eq!(
        body["requestId"], id,
        "requestId in body matches the header"
    );
    for h in SPEC_HEADERS {
        assert_eq!(
            resp.header_all(h).len(),
            1,
            "{h} exactly once in {:?}",
            resp.headers
        );
    }
}
pub mod process;
pub use process::Process;
pub mod load;
pub mod owner;
pub mod prom;
pub use load::{Load, LoadReport};
pub mod tls;
