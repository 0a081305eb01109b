//! Request targets other than origin-form (RFC 9112 §3.2) and methods no instance should see:
//! absolute-form is routed like the origin-form request it names, `OPTIONS *` is answered by
//! the gateway, `CONNECT` and (unless configured) `TRACE`/`TRACK` get 405.

use crate::common::*;
use crate::HOST;

const CUSTOM: &str = "api.example.com";

fn gateway(up: &Upstream, routing: &str) -> Gateway {
    Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 1 }}
domains:
  - {{ name: {CUSTOM} }}
instances:
  - {{ id: lhins-a, address: "{}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
  - {{ domain: default, path: /keep, instance: lhins-a, passthrough: true }}
  - {{ domain: {CUSTOM}, path: /custom, instance: lhins-a }}
plugins:
  - name: request_id
  - name: identity
    mode: none
  - {{ name: routing{routing} }}
  - name: forwarded_for
  - name: upstream_info
"#,
        up.addr()
    ))
}

#[test]
fn absolute_form_is_routed_by_its_path_and_authority() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(&up, "");
    for (target, host, upstream_target) in [
        (
            format!("http://{HOST}/api/x?q=1&b=%20"),
            Some(HOST),
            "/x?q=1&b=%20",
        ),
        (format!("http://{HOST}/api"), Some(HOST), "/"),
        (format!("HTTP://{HOST}/keep/y"), Some(HOST), "/keep/y"),
        // SPEC §4's normalisation applies to the path inside the URL too.
        (format!("http://{HOST}/api/%61b/../c"), Some(HOST), "/c"),
        (
            format!("https://{CUSTOM}:8080/custom/z"),
            Some("api.example.com:8080"),
            "/z",
        ),
    ] {
        let mut req = Req::get(&target);
        req = match host {
            Some(h) => req.host(h),
            None => req.no_host(),
        };
        let resp = send(gw.http, &req).unwrap();
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
        let seen = Seen::of(&resp);
        assert_eq!(seen.target, upstream_target, "{target}");
        assert_eq!(seen.header_all("Host"), [host.unwrap()], "{target}");
    }
    // HTTP/1.0 without Host: the authority alone picks the domain, and becomes the Host.
    let resp = send(
        gw.http,
        &Req::get(&format!("http://{CUSTOM}/custom/w"))
            .no_host()
            .version("HTTP/1.0"),
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = Seen::of(&resp);
    assert_eq!(seen.target, "/w");
    assert_eq!(seen.header_all("Host"), [CUSTOM]);
    // No route for the URL's path or host: the usual SPEC errors.
    let resp = send(
        gw.http,
        &Req::get(&format!("http://{HOST}/nope")).host(HOST),
    )
    .unwrap();
    assert_error(&resp, 404, "INVALID_PATH");
    let resp = send(
        gw.http,
        &Req::get("http://nowhere.example/api").host("nowhere.example"),
    )
    .unwrap();
    assert_error(&resp, 404, "INVALID_HOST");
    // A URL anygate cannot serve.
    let resp = send(
        gw.http,
        &Req::get("ftp://files.example/api").host("files.example"),
    )
    .unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
    // A Host that contradicts the URL: Pingora's parser refuses it (a bare 400).
    let resp = send(
        gw.http,
        &Req::get(&format!("http://{CUSTOM}/custom/x")).host(HOST),
    )
    .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(
        up.count(),
        6,
        "only the six routable requests went upstream"
    );
}

#[test]
fn asterisk_form_and_connect_get_a_sound_answer() {
    let up = Upstream::start(Behavior::Echo);
    let gw = gateway(&up, "");
    let resp = send(gw.http, &Req::new("OPTIONS", "*").host(HOST)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.header("Allow").is_some_and(|a| a.contains("GET")));
    assert!(resp.body.is_empty());
    assert!(resp.header("X-Cloudbase-Request-Id").is_some());
    let resp = send(gw.http, &Req::get("*").host(HOST)).unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
    let resp = send(
        gw.http,
        &Req::new("CONNECT", "example.com:443").host("example.com:443"),
    )
    .unwrap();
    assert_error(&resp, 405, "INVALID_REQUEST");
    assert!(resp.header("Allow").is_some());
    assert_eq!(up.count(), 0);
}

#[test]
fn trace_is_refused_unless_configured() {
    let up = Upstream::start(Behavior::Echo);
    let refuse = gateway(&up, "");
    for method in ["TRACE", "TRACK"] {
        for req in [
            Req::new(method, "/api/x").host(HOST),
            Req::new(method, "/api/x")
                .host(HOST)
                .header("X-WX-SERVICE", "tcbanyservice")
                .header("X-Vm-Service", "lhins-a"),
        ] {
            let resp = send(refuse.http, &req).unwrap();
            assert_error(&resp, 405, "INVALID_REQUEST");
            assert_eq!(
                resp.header("Allow"),
                Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
            );
        }
    }
    assert_eq!(up.count(), 0, "no TRACE reached the instance");
    // Other methods are not affected.
    let resp = send(refuse.http, &Req::new("PROPFIND", "/api/x").host(HOST)).unwrap();
    assert_eq!(Seen::of(&resp).method, "PROPFIND");

    let forward = gateway(&up, ", trace: forward");
    for method in ["TRACE", "TRACK"] {
        let resp = send(forward.http, &Req::new(method, "/api/x").host(HOST)).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(Seen::of(&resp).method, method);
    }
}

#[test]
fn a_bad_trace_setting_is_reported_with_its_position() {
    let (code, _out, err) = check(
        "env: e\nlisten: { http: \"@HTTP@\" }\ninstances: []\nroutes: []\nplugins:\n  - name: routing\n    trace: maybe\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("anygate.yaml:7:"), "{err}");
    assert!(err.contains("refuse") && err.contains("forward"), "{err}");
}
