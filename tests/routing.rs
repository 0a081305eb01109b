//! SPEC §4 routing through the real gateway: SDK calls, HTTP access by host and trigger path,
//! prefix strip, passthrough, and the query kept byte for byte.

mod common;
use common::*;

const HOST: &str = "test-env.service.tcloudbase.com";

const TEMPLATE: &str = r#"
env: test-env
listen: { http: "@HTTP@" }
server: { threads: 1 }
domains:
  - name: api.example.com
instances:
  - { id: lhins-a, address: "UP_A" }
  - { id: lhins-b, address: "UP_B", upstream_type: CVM }
routes:
  - { domain: default, path: /api, instance: lhins-a }
  - { domain: default, path: /api/v2, instance: lhins-b }
  - { domain: default, path: /keep, instance: lhins-b, passthrough: true }
  - { domain: api.example.com, path: /, instance: lhins-b }
  - { domain: "*", path: /any, instance: lhins-a }
"#;

struct Env {
    gw: Gateway,
    a: Upstream,
    b: Upstream,
}

fn start() -> Env {
    let a = Upstream::start(Behavior::Echo);
    let b = Upstream::start(Behavior::Echo);
    let yaml = TEMPLATE
        .replace("UP_A", &a.addr().to_string())
        .replace("UP_B", &b.addr().to_string());
    Env {
        gw: Gateway::start(&yaml),
        a,
        b,
    }
}

fn sdk(target: &str, id_header: &str, id: &str) -> Req {
    Req::get(target)
        .header("X-WX-SERVICE", "tcbanyservice")
        .header(id_header, id)
}

#[test]
fn sdk_call_by_x_vm_service_keeps_method_path_query_and_body() {
    let env = start();
    let req = Req::post("/api/user/info?userId=123&x=%2F")
        .header("X-WX-SERVICE", "tcbanyservice")
        .header("X-Vm-Service", "lhins-a")
        .header("Content-Type", "application/json")
        .body(r#"{"userId":123}"#);
    let resp = send(env.gw.http, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = Seen::of(&resp);
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/api/user/info?userId=123&x=%2F");
    assert_eq!(seen.body, r#"{"userId":123}"#);
    assert_eq!(seen.header("X-Vm-Service"), Some("lhins-a"));
    assert_eq!((env.a.count(), env.b.count()), (1, 0));
    assert_eq!(resp.header("X-Cloudbase-Upstream-Status-Code"), Some("200"));
    assert_eq!(resp.header("X-Cloudbase-Upstream-Type"), Some("Lighthouse"));
    let cost: u64 = resp
        .header("X-Cloudbase-Upstream-Timecost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost < 10_000);
}

#[test]
fn sdk_call_by_x_anyservice_name() {
    let env = start();
    let resp = send(env.gw.http, &sdk("/x", "X-AnyService-Name", "lhins-b")).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(Seen::of(&resp).target, "/x");
    assert_eq!((env.a.count(), env.b.count()), (0, 1));
    assert_eq!(resp.header("X-Cloudbase-Upstream-Type"), Some("CVM"));
}

#[test]
fn sdk_call_ignores_host_and_trigger_paths() {
    let env = start();
    // Even with a host and path that HTTP access would route elsewhere.
    let req = sdk("/api/v2/zzz", "X-Vm-Service", "lhins-a").host("api.example.com");
    let resp = send(env.gw.http, &req).unwrap();
    assert_eq!(Seen::of(&resp).target, "/api/v2/zzz");
    assert_eq!((env.a.count(), env.b.count()), (1, 0));
}

#[test]
fn sdk_call_errors_are_service_not_found() {
    let env = start();
    let cases = [
        sdk("/", "X-Vm-Service", "lhins-nope"),
        sdk("/", "X-AnyService-Name", "lhins-nope"),
        Req::get("/").header("X-WX-SERVICE", "tcbanyservice"),
        Req::get("/")
            .header("X-WX-SERVICE", "tcbanyservice")
            .header("X-Vm-Service", ""),
        Req::get("/")
            .header("X-WX-SERVICE", "other")
            .header("X-Vm-Service", "lhins-a"),
    ];
    for req in &cases {
        let resp = send(env.gw.http, req).unwrap();
        assert_error(&resp, 404, "SERVICE_NOT_FOUND");
    }
    assert_eq!(env.a.count() + env.b.count(), 0);
}

#[test]
fn prefix_is_stripped_and_query_kept_byte_for_byte() {
    let env = start();
    for (target, want) in [
        ("/api/user?x=1", "/user?x=1"),
        ("/api", "/"),
        ("/api/", "/"),
        ("/api?", "/?"),
        ("/api/a/b/?q=%zz&&x=%20+y", "/a/b/?q=%zz&&x=%20+y"),
        ("/api?a=/api&b=1", "/?a=/api&b=1"),
    ] {
        let resp = send(env.gw.http, &Req::get(target).host(HOST)).unwrap();
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        assert_eq!(Seen::of(&resp).target, want, "{target}");
    }
    assert_eq!(env.b.count(), 0);
}

#[test]
fn longest_trigger_path_wins() {
    let env = start();
    let resp = send(env.gw.http, &Req::get("/api/v2/items?id=7").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/items?id=7");
    assert_eq!((env.a.count(), env.b.count()), (0, 1));
    let resp = send(env.gw.http, &Req::get("/api/v23").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/v23");
    assert_eq!((env.a.count(), env.b.count()), (1, 1));
}

#[test]
fn trigger_paths_match_on_segment_boundaries_only() {
    let env = start();
    for target in ["/apix", "/apix/y", "/ap", "/keepx", "/"] {
        let resp = send(env.gw.http, &Req::get(target).host(HOST)).unwrap();
        assert_error(&resp, 404, "INVALID_PATH");
    }
    assert_eq!(env.a.count() + env.b.count(), 0);
}

#[test]
fn passthrough_keeps_the_trigger_prefix() {
    let env = start();
    let resp = send(env.gw.http, &Req::get("/keep/a/b?c=d").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/keep/a/b?c=d");
    let resp = send(env.gw.http, &Req::get("/keep").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/keep");
    assert_eq!(env.b.count(), 2);
}

#[test]
fn host_port_and_case_are_ignored() {
    let env = start();
    for host in [
        "TEST-ENV.Service.TCloudbase.COM",
        "test-env.service.tcloudbase.com:8080",
        "Test-Env.Service.Tcloudbase.Com:443",
        "test-env.service.tcloudbase.com.",
    ] {
        let resp = send(env.gw.http, &Req::get("/api/u").host(host)).unwrap();
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
        assert_eq!(Seen::of(&resp).target, "/u", "{host}");
        // The upstream sees the Host the client sent.
        assert_eq!(Seen::of(&resp).header("Host"), Some(host));
    }
    assert_eq!(env.a.count(), 4);
    let resp = send(
        env.gw.http,
        &Req::get("/anything").host("API.EXAMPLE.com:9000"),
    )
    .unwrap();
    assert_eq!(Seen::of(&resp).target, "/anything");
    assert_eq!(env.b.count(), 1);
}

#[test]
fn exact_custom_domain_then_default_then_wildcard() {
    let env = start();
    // custom domain: its own routes only
    let resp = send(env.gw.http, &Req::get("/any/x").host("api.example.com")).unwrap();
    assert_eq!(
        Seen::of(&resp).target,
        "/any/x",
        "custom domain `/` route, not `*` /any"
    );
    assert_eq!((env.a.count(), env.b.count()), (0, 1));
    // default domain: its own routes, `*` is not consulted
    let resp = send(env.gw.http, &Req::get("/any/x").host(HOST)).unwrap();
    assert_error(&resp, 404, "INVALID_PATH");
    // any other host: `*`
    let resp = send(
        env.gw.http,
        &Req::get("/any/x?k=v").host("whatever.example.org"),
    )
    .unwrap();
    assert_eq!(Seen::of(&resp).target, "/x?k=v");
    assert_eq!((env.a.count(), env.b.count()), (1, 1));
    let resp = send(
        env.gw.http,
        &Req::get("/other").host("whatever.example.org"),
    )
    .unwrap();
    assert_error(&resp, 404, "INVALID_PATH");
}

#[test]
fn unknown_host_without_wildcard_is_invalid_host() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&format!(
        r#"
env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 1 }}
instances: [{{ id: lhins-a, address: "{}" }}]
routes: [{{ domain: default, path: /, instance: lhins-a }}]
"#,
        up.addr()
    ));
    for host in [
        "example.org",
        "test-env.service.tcloudbase.co",
        "x.test-env.service.tcloudbase.com",
    ] {
        let resp = send(gw.http, &Req::get("/").host(host)).unwrap();
        assert_error(&resp, 404, "INVALID_HOST");
    }
    let resp = send(gw.http, &Req::get("/deep/path").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/deep/path");
    assert_eq!(up.count(), 1);
}

#[test]
fn encoded_and_dotted_paths_route_as_what_they_name() {
    let env = start();
    let resp = send(env.gw.http, &Req::get("/%61pi/user").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/user");
    let resp = send(env.gw.http, &Req::get("/keep/../api/v2/./z?q").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).target, "/z?q");
    assert_eq!((env.a.count(), env.b.count()), (1, 1));
    let resp = send(env.gw.http, &Req::get("/api/%zz").host(HOST)).unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
}

#[test]
fn keep_alive_connection_serves_routed_and_error_requests() {
    let env = start();
    let mut conn = Conn::connect(env.gw.http).unwrap();
    for i in 0..5 {
        let ok = conn
            .send(&Req::get(&format!("/api/n{i}")).host(HOST))
            .unwrap();
        assert_eq!(Seen::of(&ok).target, format!("/n{i}"));
        let missing = conn.send(&Req::get("/nope").host(HOST)).unwrap();
        assert_error(&missing, 404, "INVALID_PATH");
    }
    assert_eq!(env.a.count(), 5);
}
