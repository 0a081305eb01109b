//! SPEC §7 response headers and §8 errors through the real gateway: every error code reachable
//! from the core chain, upstream failures, and hostile input.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::Duration;

const HOST: &str = "test-env.service.tcloudbase.com";

fn gateway(extra_instances: &[(&str, String)], timeouts: &str) -> (Gateway, Upstream) {
    let up = Upstream::start(Behavior::Echo);
    let mut instances = format!("  - {{ id: lhins-a, address: \"{}\" }}\n", up.addr());
    let mut routes = String::from("  - { domain: default, path: /api, instance: lhins-a }\n");
    for (id, addr) in extra_instances {
        instances.push_str(&format!("  - {{ id: {id}, address: \"{addr}\" }}\n"));
        routes.push_str(&format!(
            "  - {{ domain: default, path: /{id}, instance: {id} }}\n"
        ));
    }
    let yaml = format!(
        "env: test-env\nlisten: {{ http: \"@HTTP@\" }}\nserver: {{ threads: 1 }}\n{timeouts}\ninstances:\n{instances}routes:\n{routes}"
    );
    (Gateway::start(&yaml), up)
}

fn sdk(id: &str) -> Req {
    Req::get("/")
        .header("X-WX-SERVICE", "tcbanyservice")
        .header("X-Vm-Service", id)
}

#[test]
fn success_carries_every_spec_header_once() {
    let (gw, _up) = gateway(&[], "");
    let resp = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(resp.status, 200);
    for h in SPEC_HEADERS {
        assert_eq!(resp.header_all(h).len(), 1, "{h}: {:?}", resp.headers);
    }
    assert_eq!(resp.header("X-Cloudbase-Upstream-Status-Code"), Some("200"));
    assert_eq!(resp.header("X-Cloudbase-Upstream-Type"), Some("Lighthouse"));
    assert!(resp
        .header("X-Cloudbase-Upstream-Timecost")
        .unwrap()
        .parse::<u64>()
        .is_ok());
    // The same request id went upstream.
    let seen = Seen::of(&resp);
    assert_eq!(
        seen.header("X-Cloudbase-Request-Id"),
        resp.header("X-Cloudbase-Request-Id")
    );
}

#[test]
fn upstream_status_is_reported_not_replaced() {
    let (gw, up) = gateway(&[], "");
    up.set_behavior(Behavior::Status(503));
    let resp = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("X-Cloudbase-Upstream-Status-Code"), Some("503"));
    assert_eq!(resp.json()["status"], 503, "the upstream's own body");
}

#[test]
fn request_ids_are_unique_and_time_ordered() {
    let (gw, _up) = gateway(&[], "");
    let mut conn = Conn::connect(gw.http).unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let req = if i % 2 == 0 {
            Req::get("/api/x").host(HOST)
        } else {
            Req::get("/nope").host(HOST)
        };
        let resp = conn.send(&req).unwrap();
        ids.push(resp.header("X-Cloudbase-Request-Id").unwrap().to_string());
        if i % 5 == 4 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    for pair in ids.windows(2) {
        // UUIDv7: the first 48 bits are milliseconds, so ids never go back in time.
        assert!(
            pair[0][..13] <= pair[1][..13],
            "{} then {}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn refused_connection_is_502_with_dashes() {
    let closed = closed_port();
    let (gw, _up) = gateway(&[("lhins-down", closed.to_string())], "");
    for req in [Req::get("/lhins-down/x").host(HOST), sdk("lhins-down")] {
        let resp = send(gw.http, &req).unwrap();
        assert_error(&resp, 502, "REQUEST_SERVICE_FAILED");
        assert_eq!(resp.header("X-Cloudbase-Upstream-Status-Code"), Some("-"));
        assert_eq!(resp.header("X-Cloudbase-Upstream-Timecost"), Some("-"));
        assert_eq!(resp.header("X-Cloudbase-Upstream-Type"), Some("Lighthouse"));
    }
}

#[test]
fn upstream_that_hangs_up_or_sends_garbage_is_502() {
    let close = Upstream::start(Behavior::Close);
    let garbage = Upstream::start(Behavior::Garbage);
    let (gw, _up) = gateway(
        &[
            ("lhins-close", close.addr().to_string()),
            ("lhins-garbage", garbage.addr().to_string()),
        ],
        "",
    );
    for id in ["lhins-close", "lhins-garbage"] {
        let resp = send(gw.http, &Req::get(&format!("/{id}/x")).host(HOST)).unwrap();
        assert_error(&resp, 502, "REQUEST_SERVICE_FAILED");
        assert_eq!(
            resp.header("X-Cloudbase-Upstream-Status-Code"),
            Some("-"),
            "{id}"
        );
    }
    assert!(close.count() >= 1 && garbage.count() >= 1);
}

#[test]
fn slow_upstream_is_504_after_the_configured_timeout() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(3)));
    let (gw, _up) = gateway(
        &[("lhins-slow", slow.addr().to_string())],
        "timeouts: { connect: 1s, sdk: 300ms, http: 300ms }",
    );
    for req in [Req::get("/lhins-slow/x").host(HOST), sdk("lhins-slow")] {
        let started = std::time::Instant::now();
        let resp = send(gw.http, &req).unwrap();
        assert_error(&resp, 504, "SERVICE_TIMEOUT");
        assert_eq!(resp.header("X-Cloudbase-Upstream-Status-Code"), Some("-"));
        assert_eq!(resp.header("X-Cloudbase-Upstream-Timecost"), Some("-"));
        // Answered on the timeout, not when the upstream finally replied.
        assert!(
            started.elapsed() < Duration::from_millis(2900),
            "{:?}",
            started.elapsed()
        );
    }
}

/// SDK calls and HTTP access each get their own read timeout (SPEC §3 `timeouts`): an
/// instance keeps one upstream peer for each, built when the config is compiled.
#[test]
fn sdk_and_http_access_each_get_their_own_read_timeout() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(1)));
    for (timeouts, http_status, sdk_status) in [
        ("timeouts: { connect: 1s, sdk: 200ms, http: 10s }", 200, 504),
        ("timeouts: { connect: 1s, sdk: 10s, http: 200ms }", 504, 200),
    ] {
        let (gw, _up) = gateway(&[("lhins-slow", slow.addr().to_string())], timeouts);
        let http = send(gw.http, &Req::get("/lhins-slow/x").host(HOST)).unwrap();
        assert_eq!(http.status, http_status, "HTTP access with {timeouts}");
        let sdk = send(gw.http, &sdk("lhins-slow")).unwrap();
        assert_eq!(sdk.status, sdk_status, "SDK call with {timeouts}");
    }
}

#[test]
fn upstream_cannot_forge_cloudbase_headers() {
    let (gw, up) = gateway(&[], "");
    up.set_behavior(Behavior::Headers(vec![
        ("X-Cloudbase-Request-Id".into(), "forged".into()),
        ("x-cloudbase-upstream-status-code".into(), "999".into()),
        ("X-CLOUDBASE-UPSTREAM-TYPE".into(), "Forged".into()),
        ("X_Cloudbase_Upstream_Timecost".into(), "0".into()),
        ("X-Cloudbase-Other".into(), "x".into()),
    ]));
    let resp = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(resp.status, 200);
    assert_ne!(resp.header("X-Cloudbase-Request-Id"), Some("forged"));
    assert_eq!(
        resp.header_all("X-Cloudbase-Upstream-Status-Code"),
        vec!["200"]
    );
    assert_eq!(
        resp.header_all("X-Cloudbase-Upstream-Type"),
        vec!["Lighthouse"]
    );
    assert_eq!(resp.header_all("X-Cloudbase-Upstream-Timecost").len(), 1);
    assert!(
        resp.header("X_Cloudbase_Upstream_Timecost").is_none(),
        "{:?}",
        resp.headers
    );
    assert!(resp.header("X-Cloudbase-Other").is_none());
}

#[test]
fn client_cannot_send_headers_anygate_owns() {
    let (gw, _up) = gateway(&[], "");
    let req = Req::get("/api/x")
        .host(HOST)
        .header("X-WX-OPENID", "spoofed")
        .header("x-wx-openid", "spoofed2")
        .header("X_WX_OPENID", "spoofed3")
        .header("x-wx_appid", "spoofed4")
        .header("X-Cloudbase-Request-Id", "spoofed5")
        .header("X-Original-Forwarded-For", "1.1.1.1")
        .header("X_AnyService_Authorization", "secret")
        .header("X-Keep-Me", "yes");
    let resp = send(gw.http, &req).unwrap();
    let seen = Seen::of(&resp);
    for name in seen.names() {
        let n = name.replace('_', "-");
        assert!(
            !((n.starts_with("x-wx-") && name != "x-wx-env")
                || n == "x-original-forwarded-for"
                || n == "x-anyservice-authorization"),
            "{name} reached the upstream"
        );
    }
    assert_ne!(seen.header("X-Cloudbase-Request-Id"), Some("spoofed5"));
    assert_eq!(seen.header("X-Keep-Me"), Some("yes"));
    // The edge chain's identity (none mode) sets the environment, nothing else.
    assert_eq!(seen.header_all("X-WX-ENV"), ["test-env"]);
}

#[test]
fn error_bodies_are_json_for_every_reachable_code() {
    let (gw, _up) = gateway(&[], "");
    assert_error(
        &send(gw.http, &sdk("missing")).unwrap(),
        404,
        "SERVICE_NOT_FOUND",
    );
    assert_error(
        &send(gw.http, &Req::get("/").host("nowhere.example")).unwrap(),
        404,
        "INVALID_HOST",
    );
    assert_error(
        &send(gw.http, &Req::get("/zzz").host(HOST)).unwrap(),
        404,
        "INVALID_PATH",
    );
    assert_error(
        &send(gw.http, &Req::get("/api/%G0").host(HOST)).unwrap(),
        400,
        "INVALID_REQUEST",
    );
    let big = vec![b'x'; 100 * 1024 + 1];
    let resp = send(gw.http, &sdk("lhins-a").body(big)).unwrap();
    assert_error(&resp, 413, "EXCEED_MAX_PAYLOAD_SIZE");
}

#[test]
fn head_error_has_headers_but_no_body() {
    let (gw, _up) = gateway(&[], "");
    let mut conn = Conn::connect(gw.http).unwrap();
    let resp = conn.send(&Req::head("/zzz").host(HOST)).unwrap();
    assert_eq!(resp.status, 404);
    assert!(resp.body.is_empty());
    assert!(resp.header("X-Cloudbase-Request-Id").is_some());
    // The connection is still in step: the next answer is a whole response.
    let resp = conn.send(&Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(resp.status, 200);
}

#[test]
fn missing_or_repeated_host_is_invalid_request() {
    let (gw, up) = gateway(&[], "");
    let resp = send(gw.http, &Req::get("/api/x").no_host()).unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
    // Pingora's HTTP/1 parser itself refuses a repeated Host; the answer is still the SPEC's.
    let resp = send(
        gw.http,
        &Req::get("/api/x")
            .host(HOST)
            .header("Host", "other.example"),
    )
    .unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
    // HTTP/1.0 may omit Host: it then only matches `*` (none here).
    let resp = send(gw.http, &Req::get("/api/x").no_host().version("HTTP/1.0")).unwrap();
    assert_error(&resp, 404, "INVALID_HOST");
    assert_eq!(up.count(), 0);
}

#[test]
fn sdk_body_limit_applies_to_declared_and_chunked_bodies() {
    let (gw, up) = gateway(&[], "limits: { max_sdk_body: 1KB }");
    // At the limit: forwarded whole.
    let resp = send(gw.http, &sdk("lhins-a").body(vec![b'a'; 1024])).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(Seen::of(&resp).body.len(), 1024);
    // Over, with Content-Length: refused before the upstream sees anything.
    let resp = send(gw.http, &sdk("lhins-a").body(vec![b'a'; 1025])).unwrap();
    assert_error(&resp, 413, "EXCEED_MAX_PAYLOAD_SIZE");
    // Over, chunked: refused once the count passes the limit.
    let chunks = vec![vec![b'b'; 600], vec![b'c'; 600]];
    let resp = send(gw.http, &sdk("lhins-a").chunked_body(chunks)).unwrap();
    assert_error(&resp, 413, "EXCEED_MAX_PAYLOAD_SIZE");
    assert_eq!(
        up.requests().iter().filter(|r| r.body.len() > 1024).count(),
        0
    );
}

#[test]
fn garbage_from_the_client_gets_an_answer_not_a_crash() {
    let (gw, _up) = gateway(&[], "");
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET /api HTTP/1.1\r\nHost: test-env.service.tcloudbase.com\r\nContent-Length: -1\r\n\r\n",
        b"GET /api HTTP/1.1\r\nHost: test-env.service.tcloudbase.com\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        // Refused by Pingora's parser before the chain runs: a bare 400, then close.
        let resp = send_raw(gw.http, raw).unwrap_or_else(|e| panic!("{raw:?}: no answer: {e}"));
        assert_eq!(resp.status, 400, "{raw:?}");
    }
    // Still serving.
    let resp = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(resp.status, 200);
}

/// Requests Pingora's HTTP/1 parser refuses before any plugin runs (request-smuggling forms,
/// unparseable lines) get the SPEC's JSON error and headers, through the vendored proxy's
/// `answer_invalid_request` hook, and nothing reaches the instance.
#[test]
fn requests_the_parser_refuses_get_the_spec_error() {
    let (gw, up) = gateway(&[], "");
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String)> = vec![
        (
            "conflicting Content-Length",
            format!("POST /api/x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5, 6\r\n\r\nhello"),
        ),
        (
            "Content-Length with a sign",
            format!("POST /api/x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: +5\r\n\r\nhello"),
        ),
        (
            "repeated Host",
            format!("GET /api/x HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example\r\n\r\n"),
        ),
        (
            "Host contradicting the URL",
            format!("GET http://{HOST}/api/x HTTP/1.1\r\nHost: other.example\r\n\r\n"),
        ),
        (
            "a header line without a colon",
            format!("GET /api/x HTTP/1.1\r\nHost: {HOST}\r\nno colon here\r\n\r\n"),
        ),
        (
            "Transfer-Encoding not chunked last",
            format!(
                "POST /api/x HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "300 header lines",
            format!("GET /api/x HTTP/1.1\r\nHost: {HOST}\r\n{many_headers}\r\n"),
        ),
    ];
    for (what, raw) in cases {
        let resp = send_raw(gw.http, raw.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resp.status, 400, "{what}: {}", resp.text());
        assert_error(&resp, 400, "INVALID_REQUEST");
        assert!(
            resp.json()["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("malformed request")),
            "{what}: {}",
            resp.text()
        );
        assert_eq!(resp.header("Connection"), Some("close"), "{what}");
    }
    assert_eq!(up.count(), 0, "a refused request reached the instance");
}
