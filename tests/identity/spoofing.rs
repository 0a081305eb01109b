//! Every spoofing variant, in every mode: no client-sent identity header reaches an instance.

use super::*;
use std::net::{IpAddr, Ipv4Addr};

/// Headers a client may try, every value marked `spoof` so a leak is easy to see. Repeated
/// names are sent as repeated header lines.
const SPOOFS: &[(&str, &str)] = &[
    ("X-WX-OPENID", "spoof-openid"),
    ("X-WX-OPENID", "spoof-openid-repeated"),
    ("x-wx-openid", "spoof-lower"),
    ("X_WX_OPENID", "spoof-underscore"),
    ("x-wx_openid", "spoof-mixed"),
    ("X-Wx-OpenId", "spoof-case"),
    ("X-WX-APPID", "spoof-appid"),
    ("X-WX-UNIONID", "spoof-unionid"),
    ("X-WX-ENV", "spoof-env"),
    ("X-WX-SOURCE", "spoof-source"),
    ("X-WX-PLATFORM", "spoof-platform"),
    ("X-WX-FROM-OPENID", "spoof-from-openid"),
    ("X-WX-FROM-APPID", "spoof-from-appid"),
    ("X_WX_FROM_UNIONID", "spoof-from-unionid"),
    ("X-WX-Anything-New", "spoof-new"),
    ("X-Cloudbase-Request-Id", "spoof-request-id"),
    ("x_cloudbase_upstream_type", "spoof-cloudbase"),
    ("X-Original-Forwarded-For", "spoof-original-ff"),
    ("X-AnyService-Authorization", "spoof-origin"),
    ("X_ANYSERVICE_AUTHORIZATION", "spoof-origin-underscore"),
];

fn spoofed(mut req: Req) -> Req {
    for (k, v) in SPOOFS {
        req = req.header(k, v);
    }
    req
}

fn http_req(target: &str) -> Req {
    spoofed(Req::get(target).host(HOST))
}

fn sdk_req(target: &str) -> Req {
    spoofed(
        Req::post(target)
            .header("X-WX-SERVICE", "tcbanyservice")
            .header("X-Vm-Service", "lhins-a")
            .body("{}"),
    )
}

/// Asserts that no spoofed value reached the instance, and which `x-wx-*` names did.
fn assert_clean(r: &Received, wx: &[&str], what: &str) {
    for (k, v) in &r.headers {
        assert!(
            !v.to_ascii_lowercase().contains("spoof"),
            "{what}: `{k}: {v}` reached the instance; all: {:?}",
            r.headers
        );
    }
    assert_eq!(wx_names(r), wx, "{what}: {:?}", r.headers);
    for (name, _) in SPOOFS {
        if !name.to_ascii_lowercase().starts_with("x-wx-") {
            assert!(
                !r.has_header(name) || name.eq_ignore_ascii_case("x-cloudbase-request-id"),
                "{what}: {name} present"
            );
        }
    }
}

fn send_from(ip: IpAddr, gw: &Gateway, req: &Req) -> Response {
    Conn::connect_from(ip, gw.http).unwrap().send(req).unwrap()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[test]
fn none_mode_the_default_edge_chain_strips_everything_and_sets_the_env() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(
        "env: test-env\nlisten: { http: \"@HTTP@\" }\nserver: { threads: 1 }\ninstances: [{ id: lhins-a, address: \"@UP@\" }]\nroutes: [{ domain: default, path: /api, instance: lhins-a }]\n",
        &up,
        &[],
    );
    for (what, req) in [("http", http_req("/api/x")), ("sdk", sdk_req("/api/x"))] {
        let resp = send(gw.http, &req).unwrap();
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let seen = up.last();
        assert_clean(&seen, &["x-wx-env"], what);
        assert_eq!(seen.header("X-WX-ENV"), Some("test-env"));
        // The request id is anygate's own, not the client's.
        assert_eq!(
            seen.header("X-Cloudbase-Request-Id"),
            resp.header("X-Cloudbase-Request-Id")
        );
    }
}

#[test]
fn a_chain_without_identity_still_strips_everything() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(
        "env: test-env\nlisten: { http: \"@HTTP@\" }\nserver: { threads: 1 }\ninstances: [{ id: lhins-a, address: \"@UP@\" }]\nroutes: [{ domain: default, path: /api, instance: lhins-a }]\nplugins:\n  - name: routing\n",
        &up,
        &[],
    );
    for (what, req) in [("http", http_req("/api/x")), ("sdk", sdk_req("/api/x"))] {
        assert_eq!(send(gw.http, &req).unwrap().status, 200, "{what}");
        assert_clean(&up.last(), &[], what);
    }
}

#[test]
fn session_mode_strips_everything_with_and_without_a_valid_token() {
    let s = start_session(closed_port(), KEY1);
    let token = forge(KEY1, OWNER, "o-real", now() - 10, now() + 600);
    let bearer = format!("Bearer {token}");
    for (what, req, wx) in [
        ("http anonymous", http_req("/api/x"), &["x-wx-env"][..]),
        ("sdk anonymous", sdk_req("/api/x"), &["x-wx-env"][..]),
        (
            "http with token",
            http_req("/api/x").header("Authorization", &bearer),
            &["x-wx-appid", "x-wx-env", "x-wx-openid"][..],
        ),
        (
            "sdk with token",
            sdk_req("/api/x").header("Authorization", &bearer),
            &["x-wx-appid", "x-wx-env", "x-wx-openid"][..],
        ),
    ] {
        let resp = send(s.gw.http, &req).unwrap();
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let seen = s.up.last();
        assert_clean(&seen, wx, what);
        if what.ends_with("token") {
            assert_eq!(seen.header_all("X-WX-OPENID"), ["o-real"], "{what}");
            assert_eq!(seen.header_all("X-WX-APPID"), [OWNER], "{what}");
        }
    }
    // A shared app's token: the spoofed X-WX-OPENID does not come back either.
    let shared = forge(KEY1, SHARED, "o-shared", now() - 10, now() + 600);
    let req = http_req("/api/x").header("Authorization", &format!("Bearer {shared}"));
    assert_eq!(send(s.gw.http, &req).unwrap().status, 200);
    assert_clean(
        &s.up.last(),
        &[
            "x-wx-appid",
            "x-wx-env",
            "x-wx-from-appid",
            "x-wx-from-openid",
        ],
        "shared token",
    );
}

#[test]
fn trusted_front_mode_strips_everything_from_other_peers() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(super::trusted_front::TEMPLATE, &up, &[]);
    for (what, req) in [("http", http_req("/api/x")), ("sdk", sdk_req("/api/x"))] {
        let resp = send_from(OTHER, &gw, &req);
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        assert_clean(&up.last(), &["x-wx-env"], what);
    }
    // From the trusted front, only its X-WX-* survive: never X-Cloudbase-*,
    // X-Original-Forwarded-For or X-AnyService-Authorization.
    let resp = send_from(LOCAL, &gw, &http_req("/api/x"));
    assert_eq!(resp.status, 200);
    let seen = up.last();
    for (k, v) in &seen.headers {
        let k = k.to_ascii_lowercase().replace('_', "-");
        if v.contains("spoof") {
            assert!(k.starts_with("x-wx-"), "`{k}: {v}` passed from the front");
        }
    }
    assert_eq!(
        seen.header("X-Cloudbase-Request-Id"),
        resp.header("X-Cloudbase-Request-Id")
    );
}

#[test]
fn the_origin_secret_goes_to_its_instance_only_and_replaces_the_clients() {
    let s = start_session(closed_port(), KEY1);
    for req in [http_req("/origin/x"), Req::get("/origin/x").host(HOST)] {
        assert_eq!(send(s.gw.http, &req).unwrap().status, 200);
        let seen = s.up.last();
        assert_eq!(
            seen.header_all("X-AnyService-Authorization"),
            [ORIGIN_SECRET]
        );
        assert!(seen
            .headers
            .iter()
            .any(|(k, _)| k == "X-AnyService-Authorization"));
    }
    // An SDK call to that instance gets it too.
    let sdk = Req::get("/x")
        .header("X-WX-SERVICE", "tcbanyservice")
        .header("X-Vm-Service", "lhins-s");
    assert_eq!(send(s.gw.http, &sdk).unwrap().status, 200);
    assert_eq!(
        s.up.last().header_all("X-AnyService-Authorization"),
        [ORIGIN_SECRET]
    );
    // An instance without one gets none.
    assert_eq!(send(s.gw.http, &http_req("/api/x")).unwrap().status, 200);
    assert!(!s.up.last().has_header("X-AnyService-Authorization"));
}
