//! The admin listener (SPEC §10): `/healthz`, `/readyz` before and after a config is loaded
//! and while draining, `/metrics`, and that none of it is on the public listener.

mod common;
use common::gateway::{run_anygate, wait_listening};
use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const HOST: &str = "test-env.service.tcloudbase.com";
const WAIT: Duration = Duration::from_secs(10);

fn yaml(up: &Upstream, listen: &str) -> String {
    format!(
        "env: test-env\nlisten: {listen}\nserver: {{ threads: 1, grace_period: 5s, graceful_shutdown_timeout: 1s }}\ninstances:\n  - {{ id: lhins-a, address: \"{}\" }}\nroutes:\n  - {{ domain: default, path: /api, instance: lhins-a }}\n",
        up.addr()
    )
}

fn with_admin(up: &Upstream) -> Gateway {
    Gateway::start(&yaml(up, "{ http: \"@HTTP@\", admin: \"@ADMIN@\" }"))
}

#[test]
fn health_readiness_and_metrics_once_loaded() {
    let up = Upstream::start(Behavior::Echo);
    let gw = with_admin(&up);
    let health = get(gw.admin, "localhost", "/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let ready = get(gw.admin, "localhost", "/readyz");
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    assert_eq!(ready.header("Cache-Control"), Some("no-store"));

    let metrics = get(gw.admin, "localhost", "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(metrics.text().contains("anygate_config_generation 1"));

    let head = send(gw.admin, &Req::head("/metrics").host("localhost")).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let unknown = get(gw.admin, "localhost", "/metrics/extra");
    assert_eq!(unknown.status, 404);
    assert_eq!(get(gw.admin, "localhost", "/nope").status, 404);
    assert_eq!(get(gw.admin, "localhost", "/").status, 200, "the console");
    let post = send(gw.admin, &Req::post("/metrics").host("localhost").body("x")).unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
}

#[test]
fn admin_paths_are_not_on_the_public_listener() {
    let up = Upstream::start(Behavior::Echo);
    let gw = with_admin(&up);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let resp = send(gw.http, &Req::get(path).host(HOST)).unwrap();
        assert_error(&resp, 404, "INVALID_PATH");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn readyz_is_503_while_draining() {
    let up = Upstream::start(Behavior::Echo);
    let mut gw = with_admin(&up);
    let mut conn = Conn::connect(gw.admin).unwrap();
    let ready = conn.send(&Req::get("/readyz").host("localhost")).unwrap();
    assert_eq!(ready.status, 200);

    // SIGTERM: Pingora stops accepting and drains; a load balancer polling /readyz on a
    // kept-alive connection now learns to send nothing more.
    gw.signal("TERM");
    assert!(
        gw.wait_output("Graceful shutdown started", WAIT),
        "{}",
        gw.stderr()
    );
    let draining = conn.send(&Req::get("/readyz").host("localhost")).unwrap();
    assert_eq!(draining.status, 503, "{}", draining.text());
    assert_eq!(draining.text(), "not ready: shutting down\n");
    assert_eq!(draining.header("Connection"), Some("close"));
    assert!(gw.wait_exit(WAIT).is_some(), "exits after its grace period");
}

#[test]
fn not_ready_before_a_config_is_loaded() {
    // A config that does not load: the process never opens its admin listener (nothing
    // reports ready) and exits with the error.
    let dir = tempfile::tempdir().unwrap();
    let admin = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let path = dir.path().join("anygate.yaml");
    std::fs::write(
        &path,
        format!(
            "env: test-env\nlisten: {{ http: \"127.0.0.1:1\", admin: \"{admin}\" }}\nbogus: 1\n"
        ),
    )
    .unwrap();
    let (code, _out, err) = run_anygate(&["run".as_ref(), "-c".as_ref(), path.as_os_str()], WAIT);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("anygate.yaml:3:1: unknown key `bogus`"),
        "{err}"
    );
    assert!(TcpStream::connect_timeout(&admin, Duration::from_millis(500)).is_err());
}

#[test]
fn without_listen_admin_there_is_no_admin_listener() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&up, "{ http: \"@HTTP@\" }"));
    assert!(gw.wait_output("no admin listener", WAIT), "{}", gw.stderr());
    assert!(TcpStream::connect_timeout(&gw.admin, Duration::from_millis(500)).is_err());
    // The public listener still serves.
    assert_eq!(
        send(gw.http, &Req::get("/api/x").host(HOST))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn a_non_loopback_admin_address_is_warned_about() {
    let up = Upstream::start(Behavior::Echo);
    let port = free_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // SPEC §12: a non-loopback admin address needs `admin.token_env`.
    let config = yaml(
        &up,
        &format!("{{ http: \"@HTTP@\", admin: \"0.0.0.0:{port}\" }}"),
    ) + "admin: { token_env: ADMIN_TOKEN }\n";
    let token = "a-token-of-enough-length";
    let gw = Gateway::start_with(&config, &[("ADMIN_TOKEN", token)]);
    assert!(
        gw.wait_output("is not on a loopback address", WAIT),
        "{}",
        gw.stderr()
    );
    // Scraped over loopback only.
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    assert!(wait_listening(local, WAIT));
    assert_eq!(get(local, "localhost", "/healthz").status, 200);
    assert_eq!(get(local, "localhost", "/metrics").status, 401);
    let scrape = send(
        local,
        &Req::get("/metrics")
            .host("localhost")
            .header("Authorization", &format!("Bearer {token}")),
    )
    .unwrap();
    assert_eq!(scrape.status, 200);
}

#[test]
fn the_harness_knows_whose_listener_a_port_is() {
    // What lets `Gateway::start` notice that a picked port was taken by someone else.
    let me = std::process::id();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    assert_eq!(common::owner::owns_listener(me, addr), Some(true));
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let mut echo = Process::spawn(&["echo", "--listen", &other.to_string()]);
    echo.wait_listening(other);
    assert_eq!(common::owner::owns_listener(me, other), Some(false));
    drop(held);
    assert_eq!(common::owner::owns_listener(me, addr), Some(false));
    // A dual-stack listener counts for IPv4 connections too.
    if let Ok(v6) = std::net::TcpListener::bind("[::]:0") {
        let port = v6.local_addr().unwrap().port();
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert_eq!(common::owner::owns_listener(me, v4), Some(true));
    }
}
