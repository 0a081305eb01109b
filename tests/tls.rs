//! The HTTPS listener through real clients: certificates by SNI (two domains, a wildcard, the
//! default, unknown names refused), HTTP/2 and HTTP/1.1 by ALPN, `force_https`, and broken
//! certificate files refused by `check`.

mod common;
use common::tls::{curl, handshake, TestCa};
use common::*;

fn ca() -> TestCa {
    let ca = TestCa::new();
    ca.issue("api", &["api.example.com"]);
    ca.issue("shop", &["shop.example.com"]);
    ca.issue("apps", &["*.apps.example.com"]);
    ca.issue("fallback", &["fallback.invalid"]);
    ca
}

fn yaml(ca: &TestCa, upstream: &Upstream, tls_extra: &str) -> String {
    let d = ca.dir().display();
    format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", https: "@HTTPS@" }}
server: {{ threads: 1 }}
domains:
  - name: api.example.com
    tls: {{ cert: "{d}/api.pem", key: "{d}/api.key" }}
    force_https: true
  - name: shop.example.com
    tls: {{ cert: "{d}/shop.pem", key: "{d}/shop.key" }}
  - name: "*.apps.example.com"
    tls: {{ cert: "{d}/apps.pem", key: "{d}/apps.key" }}
  - name: plain.example.com
tls:
  default: {{ cert: "{d}/fallback.pem", key: "{d}/fallback.key" }}
{tls_extra}
instances: [{{ id: lhins-a, address: "{}" }}]
routes:
  - {{ domain: "*", path: /, instance: lhins-a }}
"#,
        upstream.addr()
    )
}

#[test]
fn each_domain_gets_its_own_certificate_then_wildcard_then_default() {
    let ca = ca();
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&ca, &up, ""));
    let names = |sni: Option<&str>| {
        handshake(gw.https, sni, &[])
            .unwrap_or_else(|e| panic!("{sni:?}: {e}\n{}", gw.stderr()))
            .names
    };
    assert_eq!(names(Some("api.example.com")), ["api.example.com"]);
    assert_eq!(names(Some("shop.example.com")), ["shop.example.com"]);
    assert_eq!(names(Some("cart.apps.example.com")), ["*.apps.example.com"]);
    // One label only under a wildcard; unknown names and clients without SNI: the default.
    for sni in [
        Some("a.b.apps.example.com"),
        Some("plain.example.com"),
        Some("unknown.test"),
        None,
    ] {
        assert_eq!(names(sni), ["fallback.invalid"], "{sni:?}");
    }
}

#[test]
fn curl_verifies_the_certificate_and_gets_http2_or_http11() {
    let ca = ca();
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&ca, &up, ""));
    for host in [
        "api.example.com",
        "shop.example.com",
        "cart.apps.example.com",
    ] {
        let r = curl(gw.https, host, "/hello?x=1", &ca.ca_pem(), &[]);
        assert_eq!(r.exit, 0, "{host}: {}", r.stderr);
        assert_eq!((r.version.as_str(), r.status), ("2", 200), "{host}");
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(seen["target"], "/hello?x=1");
        let headers = seen["headers"].as_array().unwrap();
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
                .map(|h| h[1].as_str().unwrap().to_string())
        };
        assert_eq!(header("X-Forwarded-Proto").as_deref(), Some("https"));
        // The SPEC's response headers, once each, over HTTP/2 too (its writer takes the
        // header's parts, not the HTTP/1 wire form); the instance saw the same request id.
        let r = curl(
            gw.https,
            host,
            "/hello",
            &ca.ca_pem(),
            &["-D", "/dev/stderr"],
        );
        assert_eq!(
            (r.exit, r.version.as_str(), r.status),
            (0, "2", 200),
            "{}",
            r.stderr
        );
        let head = r.stderr.to_ascii_lowercase();
        for name in [
            "x-cloudbase-request-id: ",
            "x-cloudbase-upstream-status-code: 200\r\n",
            "x-cloudbase-upstream-timecost: ",
            "x-cloudbase-upstream-type: ",
        ] {
            assert_eq!(head.matches(name).count(), 1, "{name} in {head}");
        }
        let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let id = head
            .split("x-cloudbase-request-id: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .unwrap();
        let sent = seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| {
                h[0].as_str()
                    .unwrap()
                    .eq_ignore_ascii_case("x-cloudbase-request-id")
            })
            .map(|h| h[1].as_str().unwrap().to_ascii_lowercase());
        assert_eq!(sent.as_deref(), Some(id));
    }
    let r = curl(
        gw.https,
        "api.example.com",
        "/",
        &ca.ca_pem(),
        &["--http1.1"],
    );
    assert_eq!(
        (r.exit, r.version.as_str(), r.status),
        (0, "1.1", 200),
        "{}",
        r.stderr
    );
    // ALPN as seen by a client that offers both.
    let h = handshake(gw.https, Some("api.example.com"), &["h2", "http/1.1"]).unwrap();
    assert_eq!(h.alpn.as_deref(), Some("h2"));
    let h = handshake(gw.https, Some("api.example.com"), &["http/1.1"]).unwrap();
    assert_eq!(h.alpn.as_deref(), Some("http/1.1"));
    // A name whose certificate it is not: curl refuses the default certificate.
    let r = curl(gw.https, "plain.example.com", "/", &ca.ca_pem(), &[]);
    assert_ne!(
        r.exit, 0,
        "the default certificate does not name plain.example.com"
    );
}

#[test]
fn unknown_names_can_be_refused() {
    let ca = ca();
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&ca, &up, "  unknown_sni: refuse"));
    for sni in [Some("unknown.test"), Some("a.b.apps.example.com"), None] {
        let r = handshake(gw.https, sni, &[]);
        assert!(r.is_err(), "{sni:?} was answered: {r:?}");
    }
    assert_eq!(
        handshake(gw.https, Some("shop.example.com"), &[])
            .unwrap()
            .names,
        ["shop.example.com"]
    );
    let r = curl(gw.https, "api.example.com", "/", &ca.ca_pem(), &[]);
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.stderr);
}

#[test]
fn force_https_redirects_plain_http_with_308() {
    let ca = ca();
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&ca, &up, ""));
    let host = format!("API.example.com:{}", gw.http.port());
    let resp = send(gw.http, &Req::post("/p/q?x=1&y").host(&host).body("data")).unwrap();
    assert_eq!(resp.status, 308, "{}", resp.text());
    let location = format!("https://api.example.com:{}/p/q?x=1&y", gw.https.port());
    assert_eq!(resp.header("Location"), Some(location.as_str()));
    assert!(resp.header("X-Cloudbase-Request-Id").is_some());
    assert_eq!(up.count(), 0);
    // Other domains are served on plain HTTP.
    let resp = send(gw.http, &Req::get("/p").host("shop.example.com")).unwrap();
    assert_eq!(resp.status, 200);
    // Over HTTPS the domain is served.
    let r = curl(gw.https, "api.example.com", "/p", &ca.ca_pem(), &[]);
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.stderr);
}

#[test]
fn check_refuses_a_key_of_another_certificate_and_missing_files() {
    let ca = ca();
    let up = Upstream::start(Behavior::Echo);
    std::fs::copy(ca.dir().join("shop.key"), ca.dir().join("api.key")).unwrap();
    let (code, _out, err) = check(&yaml(&ca, &up, ""));
    assert_eq!(code, 1);
    assert!(
        err.contains("anygate.yaml:6:")
            && err.contains("api.key` does not belong to the certificate"),
        "{err}"
    );
    std::fs::remove_file(ca.dir().join("shop.pem")).unwrap();
    let (code, _out, err) = check(&yaml(&ca, &up, ""));
    assert_eq!(code, 1);
    assert!(
        err.contains("anygate.yaml:9:18: cannot read the certificate"),
        "{err}"
    );
}

/// Certificate files are re-read on every reload: SIGHUP reloads even an unchanged config.
#[test]
fn a_reload_swaps_certificates_for_new_connections_and_a_broken_one_keeps_the_old() {
    use std::time::{Duration, Instant};
    let ca = ca();
    ca.issue("api", &["api.example.com", "v1.example.com"]);
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&ca, &up, ""));
    let names = || handshake(gw.https, Some("api.example.com"), &[]).map(|h| h.names);
    assert_eq!(names().unwrap(), ["api.example.com", "v1.example.com"]);

    ca.issue("api", &["api.example.com", "v2.example.com"]);
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while names().ok().as_deref() != Some(&["api.example.com".into(), "v2.example.com".into()][..])
    {
        assert!(
            Instant::now() < deadline,
            "new certificate never served\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    std::fs::copy(ca.dir().join("shop.key"), ca.dir().join("api.key")).unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_output(
            "does not belong to the certificate",
            Duration::from_secs(10)
        ),
        "{}",
        gw.stderr()
    );
    assert_eq!(names().unwrap(), ["api.example.com", "v2.example.com"]);
    let r = curl(gw.https, "api.example.com", "/", &ca.ca_pem(), &[]);
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.stderr);
}
