//! Hop-by-hop fields (RFC 9110 §7.6.1) stop at the gateway, every other field reaches the
//! instance under the name and case the client sent, and `Content-Length` frames a body with or
//! without leading zeros and surrounding spaces. The proxy skips its removals when a request
//! carries no hop-by-hop field, and reads a plain `Content-Length` on a short path
//! (`vendor/pingora-proxy`, `vendor/pingora-core`): these pin what both paths must do. A
//! refused length gets the SPEC's error (the proxy's `answer_invalid_request` hook).

use crate::common::*;
use crate::HOST;

fn gateway(up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 1 }}
instances:
  - {{ id: lhins-a, address: "{}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
plugins:
  - name: request_id
  - name: identity
    mode: none
  - name: routing
  - name: forwarded_for
  - name: upstream_info
"#,
        up.addr()
    ))
}

const HOP_BY_HOP: [&str; 9] = [
    "Keep-Alive",
    "Proxy-Connection",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Upgrade",
    "HTTP2-Settings",
    "Transfer-Encoding",
    "Connection",
];

#[test]
fn hop_by_hop_fields_and_nominated_ones_stop_at_the_gateway() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(&up);
    let req = Req::get("/api/h")
        .host(HOST)
        .header("Connection", "keep-alive, X-Nominated")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("TE", "trailers")
        .header("Trailer", "X-T")
        .header("Proxy-Authorization", "Basic YTpi")
        .header("Upgrade", "h2c")
        .header("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")
        .header("X-Nominated", "secret")
        .header("X-Kept", "yes");
    let resp = send(gw.http, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last();
    for name in HOP_BY_HOP.iter().chain(&["X-Nominated"]) {
        assert!(
            !seen.has_header(name),
            "{name} reached the instance: {seen:?}"
        );
    }
    assert_eq!(seen.header_all("X-Kept"), ["yes"]);
    assert_eq!(seen.header_all("Host"), [HOST]);
}

#[test]
fn without_hop_by_hop_fields_every_field_arrives_in_its_case() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(&up);
    let req = Req::get("/api/plain")
        .host(HOST)
        .header("User-Agent", "Mozilla/5.0 MicroMessenger/8.0")
        .header("X-Custom-Case", "a")
        .header("x-lower-case", "b")
        .header("X-Twice", "1")
        .header("X-Twice", "2")
        .header("Accept", "*/*");
    let resp = send(gw.http, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last();
    let names: Vec<&str> = seen.headers.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "Host",
        "User-Agent",
        "X-Custom-Case",
        "x-lower-case",
        "X-Twice",
        "Accept",
    ] {
        assert!(
            names.contains(&name),
            "{name} missing or re-cased: {names:?}"
        );
    }
    assert_eq!(seen.header_all("X-Twice"), ["1", "2"]);
    for name in HOP_BY_HOP {
        assert!(!seen.has_header(name), "{name} appeared: {seen:?}");
    }
}

#[test]
fn content_length_frames_the_body_in_each_accepted_spelling() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(&up);
    for (value, body) in [
        ("5", "hello"),
        ("05", "hello"),
        ("0", ""),
        (" 5", "hello"),
        ("5 ", "hello"),
    ] {
        up.clear();
        let req = Req::post("/api/body")
            .host(HOST)
            .header("Content-Length", value)
            .body(body);
        let resp = send(gw.http, &req).unwrap();
        assert_eq!(
            resp.status,
            200,
            "Content-Length {value:?}: {}",
            resp.text()
        );
        let seen = up.last();
        assert_eq!(seen.text(), body, "Content-Length {value:?}");
    }
    // Conflicting or malformed lengths are refused before anything reaches the instance.
    for value in ["5, 6", "+5", "5a", "18446744073709551616"] {
        up.clear();
        let req = Req::post("/api/body")
            .host(HOST)
            .header("Content-Length", value)
            .body("hello")
            .close();
        let resp = send(gw.http, &req).unwrap();
        assert_eq!(
            resp.status,
            400,
            "Content-Length {value:?}: {}",
            resp.text()
        );
        assert_error(&resp, 400, "INVALID_REQUEST");
        assert_eq!(
            up.count(),
            0,
            "Content-Length {value:?} reached the instance"
        );
    }
}

/// Identical `Content-Length` values, in one list or on repeated lines, frame the body as one
/// length (RFC 9110 §8.6 lets a recipient take them as the single value). The instance gets that
/// length once, as a plain number: instances that refuse a list or a repeated field (Node's
/// llhttp and Go's net/http do) never see one.
#[test]
fn identical_content_lengths_reach_the_instance_as_one() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(&up);
    for values in [&["5, 5"][..], &["5", "5"], &["5,5", " 5 "], &["05", "5"]] {
        up.clear();
        let mut req = Req::post("/api/body").host(HOST).body("hello");
        for v in values {
            req = req.header("Content-Length", v);
        }
        let resp = send(gw.http, &req).unwrap();
        assert_eq!(
            resp.status,
            200,
            "Content-Length {values:?}: {:?} {}",
            resp.headers,
            resp.text()
        );
        let seen = up.last();
        assert_eq!(seen.text(), "hello", "Content-Length {values:?}");
        assert_eq!(
            seen.header_all("Content-Length"),
            ["5"],
            "Content-Length {values:?}"
        );
    }
}
