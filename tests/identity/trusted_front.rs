//! `trusted_front` mode (the on-server deployment): the CloudBase network's `X-WX-*` headers
//! are kept, anyone else's are stripped. 127.0.0.1 is the front; 127.0.0.2 is another peer.

use super::*;
use std::net::{IpAddr, Ipv4Addr};

pub const TEMPLATE: &str = r#"
env: test-env
listen: { http: "@HTTP@" }
server: { threads: 1 }
instances:
  - { id: lhins-a, address: "@UP@" }
routes:
  - { domain: "*", path: /api, instance: lhins-a }
  - { domain: "*", path: /private, instance: lhins-a, auth: required }
plugins:
  - name: request_id
  - name: identity
    mode: trusted_front
    trusted_fronts: [127.0.0.1/32]
  - name: routing
  - name: forwarded_for
  - name: upstream_info
"#;

const FRONT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn from(ip: IpAddr, gw: &Gateway, req: &Req) -> Response {
    Conn::connect_from(ip, gw.http).unwrap().send(req).unwrap()
}

/// What CloudBase sends for a user of the environment's own app.
fn as_cloudbase(req: Req) -> Req {
    req.header("X-WX-OPENID", "o-from-cloudbase")
        .header("X-WX-APPID", OWNER)
        .header("X-WX-UNIONID", "u-from-cloudbase")
        .header("X-WX-ENV", "cloudbase-env")
        .header("X-WX-SOURCE", "wx_client")
        .header("X-WX-PLATFORM", "android")
}

#[test]
fn the_fronts_identity_headers_are_kept() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(TEMPLATE, &up, &[]);
    let resp = from(FRONT, &gw, &as_cloudbase(Req::get("/api/me").host(HOST)));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last();
    for (k, v) in [
        ("X-WX-OPENID", "o-from-cloudbase"),
        ("X-WX-APPID", OWNER),
        ("X-WX-UNIONID", "u-from-cloudbase"),
        ("X-WX-ENV", "cloudbase-env"),
        ("X-WX-SOURCE", "wx_client"),
        ("X-WX-PLATFORM", "android"),
    ] {
        assert_eq!(seen.header_all(k), [v], "{k}");
    }
    // `_` forms are a client's passed along by the front: stripped even from it.
    let req = as_cloudbase(Req::get("/api/me").host(HOST))
        .header("X_WX_OPENID", "spoof-underscore")
        .header("x-wx_openid", "spoof-mixed");
    assert_eq!(from(FRONT, &gw, &req).status, 200);
    let seen = up.last();
    assert_eq!(seen.header_all("X-WX-OPENID"), ["o-from-cloudbase"]);
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains("spoof")),
        "{:?}",
        seen.headers
    );
    // Without an X-WX-ENV of its own, the front's request gets the configured one.
    let resp = from(
        FRONT,
        &gw,
        &Req::get("/api/me").host(HOST).header("X-WX-OPENID", "o-x"),
    );
    assert_eq!(resp.status, 200);
    let seen = up.last();
    assert_eq!(seen.header("X-WX-ENV"), Some("test-env"));
    assert_eq!(wx_names(&seen), ["x-wx-env", "x-wx-openid"]);
}

#[test]
fn the_same_headers_from_another_peer_are_stripped() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(TEMPLATE, &up, &[]);
    let resp = from(OTHER, &gw, &as_cloudbase(Req::get("/api/me").host(HOST)));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = up.last();
    assert_eq!(wx_names(&seen), ["x-wx-env"]);
    assert_eq!(seen.header("X-WX-ENV"), Some("test-env"));
}

#[test]
fn auth_required_accepts_the_users_the_front_vouches_for() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(TEMPLATE, &up, &[]);
    let req = as_cloudbase(Req::get("/private/x").host(HOST));
    assert_eq!(from(FRONT, &gw, &req).status, 200);
    assert_eq!(up.last().header("X-WX-OPENID"), Some("o-from-cloudbase"));
    // A resource-sharing caller the front vouches for counts too.
    let shared = Req::get("/private/x")
        .host(HOST)
        .header("X-WX-FROM-OPENID", "o-shared")
        .header("X-WX-FROM-APPID", SHARED)
        .header("X-WX-APPID", OWNER);
    assert_eq!(from(FRONT, &gw, &shared).status, 200);
    // The front sent no user: anonymous.
    let anonymous = from(FRONT, &gw, &Req::get("/private/x").host(HOST));
    assert_error(&anonymous, 401, "UNAUTHENTICATED");
    // Another peer cannot claim a user.
    assert_error(&from(OTHER, &gw, &req), 401, "UNAUTHENTICATED");
    assert_eq!(up.count(), 2);
}
