//! `firewall`, `rate_limit` and `cors` through the real gateway: IPv4 and IPv6 clients, the
//! exact rate boundary with `Retry-After`, and CORS preflight and simple requests.

mod common;
use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

const HOST: &str = "test-env.service.tcloudbase.com";

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn gateway(listen: &str, plugins: &str, routes: &str, up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "{listen}" }}
server: {{ threads: 1 }}
instances: [{{ id: lhins-a, address: "{}" }}]
routes:
{routes}
plugins:
{plugins}
"#,
        up.addr()
    ))
}

const ANY_ROUTE: &str = "  - { domain: \"*\", path: /, instance: lhins-a }";

fn send_from(local: IpAddr, to: SocketAddr, req: &Req) -> Response {
    Conn::connect_from(local, to)
        .and_then(|mut c| c.send(req))
        .unwrap_or_else(|e| panic!("from {local} to {to}: {e}"))
}

fn has_v6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn firewall_allows_and_denies_v4_and_v6_clients_deny_winning() {
    let up = Upstream::start(Behavior::Echo);
    let plugins = r#"  - name: request_id
  - name: firewall
    allow: [127.0.0.0/8, "::1/128"]
    deny: [127.0.0.2/32]
  - name: routing
  - name: forwarded_for
    trusted_proxies: [127.0.0.3/32]
  - name: upstream_info"#;
    let gw = gateway("[::]:@HTTP_PORT@", plugins, ANY_ROUTE, &up);
    let at = |ip: IpAddr| SocketAddr::new(ip, gw.http.port());
    let req = Req::get("/x").host(HOST);
    assert_eq!(send_from(v4(1), at(v4(1)), &req).status, 200);
    assert_error(&send_from(v4(2), at(v4(1)), &req), 403, "ACCESS_DENIED");
    // Behind a trusted proxy the client is the X-Forwarded-For address (SPEC §6).
    let proxied = |client: &str| {
        send_from(
            v4(3),
            at(v4(1)),
            &Req::get("/x").host(HOST).header("X-Forwarded-For", client),
        )
    };
    assert_error(&proxied("127.0.0.2"), 403, "ACCESS_DENIED");
    assert_error(&proxied("203.0.113.5"), 403, "ACCESS_DENIED");
    assert_eq!(proxied("127.0.0.9").status, 200);
    let served = up.count();
    assert_eq!(served, 2, "denied requests never reach the instance");
    if has_v6() {
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(send_from(v6, at(v6), &req).status, 200);
    } else {
        eprintln!("no IPv6 loopback: v6 client not tried here");
    }

    // Only 127.0.0.1 allowed; ::1 denied.
    let plugins = r#"  - name: request_id
  - name: firewall
    allow: [127.0.0.1]
    deny: ["::1/128"]
  - name: routing
  - name: upstream_info"#;
    let gw = gateway("[::]:@HTTP_PORT@", plugins, ANY_ROUTE, &up);
    let at = |ip: IpAddr| SocketAddr::new(ip, gw.http.port());
    assert_eq!(send_from(v4(1), at(v4(1)), &req).status, 200);
    assert_error(&send_from(v4(4), at(v4(1)), &req), 403, "ACCESS_DENIED");
    if has_v6() {
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_error(&send_from(v6, at(v6), &req), 403, "ACCESS_DENIED");
    }
}

#[test]
fn firewall_settings_are_checked() {
    let yaml = |fw: &str| {
        format!(
            "env: e\nlisten: {{ http: \"@HTTP@\" }}\ninstances: [{{ id: a, address: \"127.0.0.1:1\" }}]\nroutes: [{{ domain: \"*\", path: /, instance: a }}]\nplugins:\n  - name: routing\n  - name: firewall\n{fw}\n"
        )
    };
    let (code, _, err) = check(&yaml("    deny: [10.0.0.0/33]"));
    assert_eq!(code, 1);
    assert!(err.contains("anygate.yaml:8:"), "{err}");
    let (code, _, err) = check(&yaml("    allow: []"));
    assert_eq!(code, 1);
    assert!(
        err.contains("anygate.yaml:8:12: plugin `firewall`"),
        "{err}"
    );
}

/// Sends `n` requests from `ip` on one connection; the statuses, the last response and how
/// long it took.
fn burst(gw: &Gateway, ip: IpAddr, path: &str, n: usize) -> (Vec<u16>, Response, Duration) {
    let mut conn = Conn::connect_from(ip, gw.http).unwrap();
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..n {
        let resp = conn.send(&Req::get(path).host(HOST)).unwrap();
        statuses.push(resp.status);
        last = Some(resp);
    }
    (statuses, last.expect("n > 0"), started.elapsed())
}

#[test]
fn rate_limit_admits_exactly_the_burst_then_429_with_retry_after() {
    let up = Upstream::start(Behavior::Echo);
    let plugins = r#"  - name: request_id
  - name: routing
  - name: rate_limit
    per_second: 3
    per_route: true
  - name: forwarded_for
  - name: upstream_info"#;
    let routes = "  - { domain: default, path: /a, instance: lhins-a }\n  - { domain: default, path: /b, instance: lhins-a }";
    let gw = gateway("@HTTP@", plugins, routes, &up);
    // Three requests per second, burst three: the fourth inside one token interval (1/3 s)
    // is refused. On a machine too busy to send four requests in 1/3 s, try again with a
    // fresh client address (a fresh bucket).
    let mut checked = false;
    for attempt in 0..5u8 {
        let ip = v4(10 + attempt);
        let (statuses, last, took) = burst(&gw, ip, "/a/x", 4);
        if took >= Duration::from_millis(300) {
            eprintln!("attempt {attempt}: 4 requests took {took:?}, retrying");
            continue;
        }
        assert_eq!(statuses, [200, 200, 200, 429], "took {took:?}");
        assert_error(&last, 429, "EXCEED_RATELIMIT");
        assert_eq!(last.header("Retry-After"), Some("1"));
        assert!(
            last.headers.iter().any(|(k, _)| k == "Retry-After"),
            "canonical wire case"
        );
        // Another route is another bucket; another client too.
        assert_eq!(burst(&gw, ip, "/b/x", 1).0, [200]);
        assert_eq!(burst(&gw, v4(20 + attempt), "/a/x", 1).0, [200]);
        // Retry-After is honest: after that long the client is admitted again.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(burst(&gw, ip, "/a/x", 1).0, [200]);
        checked = true;
        break;
    }
    assert!(checked, "never managed 4 requests within 300 ms");
}

#[test]
fn rate_limit_settings_are_checked() {
    let yaml = |chain: &str| {
        format!(
            "env: e\nlisten: {{ http: \"@HTTP@\" }}\ninstances: [{{ id: a, address: \"127.0.0.1:1\" }}]\nroutes: [{{ domain: \"*\", path: /, instance: a }}]\nplugins:\n{chain}\n"
        )
    };
    let (code, _, err) = check(&yaml(
        "  - name: rate_limit\n    per_second: 5\n    per_route: true\n  - name: routing",
    ));
    assert_eq!(code, 1);
    assert!(
        err.contains("anygate.yaml:8:16: plugin `rate_limit`: `per_route` needs"),
        "{err}"
    );
    let (code, _, err) = check(&yaml(
        "  - name: routing\n  - name: rate_limit\n    per_second: 0",
    ));
    assert_eq!(code, 1);
    assert!(err.contains("anygate.yaml:8:17:"), "{err}");
}

const CORS_PLUGINS: &str = r#"  - name: request_id
  - name: cors
    allow_origins: ["https://app.example.com"]
    allow_methods: [GET, POST, PUT]
    allow_credentials: true
    max_age: 10m
    domains:
      open.example.com: { allow_origins: ["*"], allow_credentials: false }
  - name: identity
    # No front is trusted here: every caller is anonymous, so /secure answers 401.
    mode: trusted_front
    trusted_fronts: [192.0.2.0/24]
  - name: routing
  - name: forwarded_for
  - name: upstream_info"#;

const CORS_ROUTES: &str = r#"  - { domain: "*", path: /, instance: lhins-a }
  - { domain: "*", path: /secure, instance: lhins-a, auth: required }"#;

#[test]
fn cors_preflight_is_answered_by_the_gateway() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway("@HTTP@", CORS_PLUGINS, CORS_ROUTES, &up);
    // A preflight for a route that needs a login: preflights carry no credentials.
    let preflight = |origin: &str, method: &str| {
        Req::new("OPTIONS", "/secure/items")
            .host("api.example.com")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method)
            .header(
                "Access-Control-Request-Headers",
                "content-type,authorization",
            )
    };
    let resp = send(gw.http, &preflight("https://app.example.com", "PUT")).unwrap();
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(
        resp.header("Access-Control-Allow-Origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        resp.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    assert_eq!(
        resp.header("Access-Control-Allow-Methods"),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        resp.header("Access-Control-Allow-Headers"),
        Some("content-type,authorization")
    );
    assert_eq!(resp.header("Access-Control-Max-Age"), Some("600"));
    let vary = resp.header_all("Vary").join(",");
    assert!(
        vary.contains("Origin") && vary.contains("Access-Control-Request-Method"),
        "{vary}"
    );
    assert!(resp.header("X-Cloudbase-Request-Id").is_some());
    assert!(resp.body.is_empty());

    let resp = send(gw.http, &preflight("https://evil.example.net", "PUT")).unwrap();
    assert_error(&resp, 403, "ACCESS_DENIED");
    assert!(resp.header("Access-Control-Allow-Origin").is_none());
    let resp = send(gw.http, &preflight("https://app.example.com", "DELETE")).unwrap();
    assert_error(&resp, 403, "ACCESS_DENIED");
    assert_eq!(up.count(), 0, "preflights never reach the instance");

    // `*` on one domain, without credentials.
    let resp = send(
        gw.http,
        &preflight("https://anyone.test", "POST").host("open.example.com"),
    )
    .unwrap();
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(resp.header("Access-Control-Allow-Credentials").is_none());
}

#[test]
fn cors_headers_on_simple_requests_and_errors() {
    let up = Upstream::start(Behavior::Headers(vec![
        ("Access-Control-Allow-Origin".into(), "*".into()),
        ("Vary".into(), "Accept-Encoding".into()),
    ]));
    let gw = gateway("@HTTP@", CORS_PLUGINS, CORS_ROUTES, &up);
    let get = |path: &str, origin: Option<&str>| {
        let mut req = Req::get(path).host("api.example.com");
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        send(gw.http, &req).unwrap()
    };
    let resp = get("/items", Some("https://app.example.com"));
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header_all("Access-Control-Allow-Origin"),
        ["https://app.example.com"],
        "the policy replaces the instance's own answer"
    );
    assert_eq!(
        resp.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    assert!(resp
        .header("Access-Control-Expose-Headers")
        .is_some_and(|h| h.contains("X-Cloudbase-Request-Id")));
    assert_eq!(resp.header_all("Vary"), ["Accept-Encoding", "Origin"]);
    // The instance still saw the Origin.
    assert_eq!(
        Seen::of(&resp).header("Origin"),
        Some("https://app.example.com")
    );

    // A foreign origin: served, but nothing lets a browser read it.
    let resp = get("/items", Some("https://evil.example.net"));
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Access-Control-Allow-Origin").is_none(),
        "{:?}",
        resp.headers
    );
    assert!(resp.header("Access-Control-Allow-Credentials").is_none());

    // Errors carry CORS headers too, so a page can read the JSON error.
    let resp = get("/secure/x", Some("https://app.example.com"));
    assert_error(&resp, 401, "UNAUTHENTICATED");
    assert_eq!(
        resp.header("Access-Control-Allow-Origin"),
        Some("https://app.example.com")
    );
}
