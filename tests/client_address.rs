//! SPEC §6 client address through the real gateway: untrusted peers, trusted proxies walked
//! from the right, IPv6 clients, and spoofed forwarding headers.

mod common;
use common::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const HOST: &str = "test-env.service.tcloudbase.com";

fn start(trusted: &str, listen: &str) -> (Gateway, Upstream) {
    let up = Upstream::start(Behavior::Echo);
    let yaml = format!(
        r#"
env: test-env
listen: {{ http: "{listen}" }}
server: {{ threads: 1 }}
instances: [{{ id: lhins-a, address: "{}" }}]
routes: [{{ domain: "*", path: /, instance: lhins-a }}]
plugins:
  - name: request_id
  - name: routing
  - name: forwarded_for
    trusted_proxies: {trusted}
  - name: upstream_info
"#,
        up.addr()
    );
    (Gateway::start(&yaml), up)
}

fn from(local: IpAddr, gw: SocketAddr, req: &Req) -> Seen {
    let mut conn = Conn::connect_from(local, gw).expect("connect from a chosen local address");
    let resp = conn.send(req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    Seen::of(&resp)
}

const LOCAL1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LOCAL2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[test]
fn untrusted_peer_replaces_every_client_sent_forwarding_header() {
    let (gw, _up) = start("[127.0.0.2/32, 10.0.0.0/8]", "@HTTP@");
    let req = Req::get("/x")
        .host("Shop.Example.com:8443")
        .header("X-Forwarded-For", "1.2.3.4, 10.0.0.1")
        .header("X-Forwarded-For", "5.6.7.8")
        .header("x_forwarded_for", "9.9.9.9")
        .header("X-Real-IP", "1.2.3.4")
        .header("X_Real_Ip", "1.2.3.4")
        .header("Forwarded", "for=1.2.3.4;proto=https")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Port", "443")
        .header("x_forwarded_proto", "https");
    let seen = from(LOCAL1, gw.http, &req);
    assert_eq!(seen.header_all("X-Forwarded-For"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("X-Real-IP"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_all("X-Forwarded-Proto"), vec!["http"]);
    assert_eq!(
        seen.header_all("X-Forwarded-Host"),
        vec!["Shop.Example.com:8443"]
    );
    for gone in [
        "Forwarded",
        "X-Forwarded-Port",
        "x_forwarded_for",
        "X_Real_Ip",
        "x_forwarded_proto",
    ] {
        assert!(
            seen.header(gone).is_none(),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert!(
        !seen.names().iter().any(|n| n.contains('_')),
        "{:?}",
        seen.names()
    );
}

#[test]
fn trusted_proxy_chain_is_walked_from_the_right() {
    let (gw, _up) = start("[127.0.0.2/32, 10.0.0.0/8]", "@HTTP@");
    // The SPEC example, with 127.0.0.2 as the trusted peer.
    let req = Req::get("/x")
        .host(HOST)
        .header("X-Forwarded-For", "8.8.8.8, 9.9.9.9, 10.0.0.1")
        .header("X-Forwarded-Proto", "https");
    let seen = from(LOCAL2, gw.http, &req);
    assert_eq!(
        seen.header_all("X-Forwarded-For"),
        vec!["9.9.9.9, 10.0.0.1, 127.0.0.2"]
    );
    assert_eq!(seen.header("X-Real-IP"), Some("9.9.9.9"));
    // What the client used, as the trusted proxy reported it.
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
    assert_eq!(seen.header("X-Forwarded-Host"), Some(HOST));

    // Repeated headers are one list; v6 and v4-mapped entries come out canonical.
    let req = Req::get("/x")
        .host(HOST)
        .header("X-Forwarded-For", "7.7.7.7, [2001:db8::5]:443")
        .header("X-Forwarded-For", "::ffff:10.1.2.3");
    let seen = from(LOCAL2, gw.http, &req);
    assert_eq!(
        seen.header_all("X-Forwarded-For"),
        vec!["2001:db8::5, 10.1.2.3, 127.0.0.2"]
    );
    assert_eq!(seen.header("X-Real-IP"), Some("2001:db8::5"));

    // The same headers from an untrusted peer count for nothing.
    let seen = from(LOCAL1, gw.http, &req);
    assert_eq!(seen.header_all("X-Forwarded-For"), vec!["127.0.0.1"]);
    assert_eq!(seen.header("X-Real-IP"), Some("127.0.0.1"));
}

#[test]
fn trusted_proxy_with_no_header_is_the_client() {
    let (gw, _up) = start("[127.0.0.2/32]", "@HTTP@");
    let seen = from(LOCAL2, gw.http, &Req::get("/x").host(HOST));
    assert_eq!(seen.header_all("X-Forwarded-For"), vec!["127.0.0.2"]);
    assert_eq!(seen.header("X-Real-IP"), Some("127.0.0.2"));
}

#[test]
fn ipv6_client_is_written_without_brackets_or_port() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    }
    let (gw, _up) = start("[\"::1/128\"]", "[::]:@HTTP_PORT@");
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), gw.http.port());
    let req = Req::get("/x")
        .host("[::1]:8080")
        .header("X-Forwarded-For", "203.0.113.9, [2001:db8::1]");
    let seen = from(IpAddr::V6(Ipv6Addr::LOCALHOST), v6, &req);
    assert_eq!(seen.header_all("X-Forwarded-For"), vec!["2001:db8::1, ::1"]);
    assert_eq!(seen.header("X-Real-IP"), Some("2001:db8::1"));
    assert_eq!(seen.header("X-Forwarded-Host"), Some("[::1]:8080"));
    // An IPv4 client on the same dual-stack listener is written as IPv4, not ::ffff:.
    let seen = from(
        LOCAL1,
        SocketAddr::new(LOCAL1, gw.http.port()),
        &Req::get("/x").host(HOST),
    );
    assert_eq!(seen.header_all("X-Forwarded-For"), vec!["127.0.0.1"]);
}
