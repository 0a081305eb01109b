//! Instance health (active and passive), `anygate_instance_up`, the zero series of SPEC §10,
//! and error messages that name the cause of an instance's failure.

use super::*;
use common::prom::scrape_until;

fn up_gauge(gw: &Gateway, id: &str) -> Option<f64> {
    let r = admin(gw, Req::get("/metrics"));
    common::prom::parse(&r.text()).get("anygate_instance_up", &[("instance", id)])
}

fn health(gw: &Gateway, id: &str) -> Value {
    let all = get_json(gw, "/api/v1/instances");
    all["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {all}"))["health"]
        .clone()
}

#[test]
fn active_checks_follow_an_instance_that_stops_listening_and_comes_back() {
    let up = Upstream::start(Behavior::Echo);
    let addr = up.addr();
    let yaml = config(&up, WITH_TOKEN).replace(
        "origin_secret_env: ORIGIN_SECRET }",
        "origin_secret_env: ORIGIN_SECRET, health_check: { path: /ping, interval: 200ms, timeout: 150ms, unhealthy: 2, healthy: 2 } }",
    );
    let gw = Gateway::start_with(
        &yaml,
        &[
            ("ANYGATE_ADMIN_TOKEN", TOKEN),
            ("ORIGIN_SECRET", ORIGIN_SECRET),
        ],
    );
    until("lhins-a up", WAIT, || {
        (health(&gw, "lhins-a")["status"] == "up").then_some(())
    });
    assert_eq!(up_gauge(&gw, "lhins-a"), Some(1.0));
    let probe = up
        .requests()
        .into_iter()
        .find(|r| r.path == "/ping")
        .expect("a probe reached the instance");
    assert_eq!(probe.method, "GET");
    assert_eq!(
        probe.header("X-AnyService-Authorization"),
        Some(ORIGIN_SECRET)
    );
    let h = health(&gw, "lhins-a");
    assert_eq!(h["mode"], "active");
    assert_eq!(
        (&h["lastCheck"]["ok"], &h["lastCheck"]["status"]),
        (&true.into(), &200.into())
    );

    drop(up);
    until("anygate_instance_up 0", WAIT, || {
        (up_gauge(&gw, "lhins-a") == Some(0.0)).then_some(())
    });
    let h = health(&gw, "lhins-a");
    assert_eq!(h["status"], "down");
    assert_eq!(h["lastFailure"]["error"], "connection refused");
    assert!(h["consecutiveFailures"].as_u64().unwrap() >= 2);
    // Health never changes what a request does: it still fails on its own, with the cause.
    let r = through(&gw, "/a/x");
    assert_error(&r, 502, "REQUEST_SERVICE_FAILED");

    let back = Upstream::try_start_on(addr, Behavior::Status(204)).expect("the same port again");
    until("anygate_instance_up 1", WAIT, || {
        (up_gauge(&gw, "lhins-a") == Some(1.0)).then_some(())
    });
    assert_eq!(health(&gw, "lhins-a")["status"], "up");
    // A 5xx answer to the probe is a failure, not just a closed port.
    back.set_behavior(Behavior::Status(503));
    until("down on 503", WAIT, || {
        (up_gauge(&gw, "lhins-a") == Some(0.0)).then_some(())
    });
    assert_eq!(
        health(&gw, "lhins-a")["lastFailure"]["error"],
        "answered 503"
    );
}

#[test]
fn passive_health_follows_proxied_results() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    assert_eq!(
        up_gauge(&gw, "lhins-down"),
        Some(1.0),
        "unknown counts as up"
    );
    for _ in 0..3 {
        assert_eq!(through(&gw, "/down/x").status, 502);
    }
    until("lhins-down down", WAIT, || {
        (up_gauge(&gw, "lhins-down") == Some(0.0)).then_some(())
    });
    let h = health(&gw, "lhins-down");
    assert_eq!(
        (&h["status"], &h["mode"]),
        (&"down".into(), &"passive".into())
    );
    assert_eq!(h["lastCheck"]["error"], "connection refused");
    assert_eq!(through(&gw, "/a/x").status, 200);
    until("lhins-a up", WAIT, || {
        (health(&gw, "lhins-a")["status"] == "up").then_some(())
    });
    assert_eq!(up_gauge(&gw, "lhins-a"), Some(1.0));
}

#[test]
fn series_known_from_the_config_exist_at_zero_from_the_start() {
    let up = Upstream::start(Behavior::Echo);
    let yaml = |extra: &str| {
        format!(
            "env: test-env\nlisten: {{ http: \"@HTTP@\", admin: \"@ADMIN@\" }}\ninstances:\n  - {{ id: lhins-a, address: \"{}\" }}\n{extra}routes:\n  - {{ domain: default, path: /a, instance: lhins-a }}\n",
            up.addr()
        )
    };
    let gw = Gateway::start(&yaml(""));
    let kinds = [
        "connect_refused",
        "connect_timeout",
        "connect_error",
        "tls",
        "timeout",
        "closed",
        "reset",
        "bad_response",
        "other",
    ];
    let s = common::prom::scrape(gw.admin);
    for kind in kinds {
        let v = s.get(
            "anygate_upstream_errors_total",
            &[("instance", "lhins-a"), ("kind", kind)],
        );
        assert_eq!(v, Some(0.0), "{kind}");
    }
    assert_eq!(
        s.get("anygate_instance_up", &[("instance", "lhins-a")]),
        Some(1.0)
    );
    assert_eq!(
        s.get(
            "anygate_upstream_duration_seconds_count",
            &[("instance", "lhins-a")]
        ),
        Some(0.0)
    );
    assert_eq!(
        s.get(
            "anygate_request_duration_seconds_count",
            &[
                ("entry", "http"),
                ("route", "default/a"),
                ("instance", "lhins-a")
            ]
        ),
        Some(0.0)
    );

    // A reload that adds an instance adds its zero series; one that removes an instance
    // removes its up gauge.
    gw.write_config(&yaml("  - { id: lhins-new, address: \"127.0.0.1:9\" }\n"));
    let s = scrape_until(gw.admin, WAIT, "lhins-new's series", |s| {
        s.get("anygate_instance_up", &[("instance", "lhins-new")])
            .is_some()
    });
    for kind in kinds {
        let v = s.get(
            "anygate_upstream_errors_total",
            &[("instance", "lhins-new"), ("kind", kind)],
        );
        assert_eq!(v, Some(0.0), "{kind}");
    }
    gw.write_config(&yaml(""));
    scrape_until(gw.admin, WAIT, "lhins-new's up gauge gone", |s| {
        s.get("anygate_instance_up", &[("instance", "lhins-new")])
            .is_none()
    });
}

#[test]
fn instance_failures_name_their_cause() {
    let up = Upstream::start(Behavior::Echo);
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(3)));
    let closed = closed_port();
    let yaml = format!(
        "env: test-env\nlisten: {{ http: \"@HTTP@\" }}\ntimeouts: {{ http: 300ms }}\ninstances:\n  - {{ id: lhins-closed, address: \"{closed}\" }}\n  - {{ id: lhins-slow, address: \"{}\" }}\n  - {{ id: lhins-a, address: \"{}\" }}\nroutes:\n  - {{ domain: default, path: /closed, instance: lhins-closed }}\n  - {{ domain: default, path: /slow, instance: lhins-slow }}\n",
        slow.addr(),
        up.addr()
    );
    let gw = Gateway::start(&yaml);
    let r = through(&gw, "/closed");
    assert_error(&r, 502, "REQUEST_SERVICE_FAILED");
    assert_eq!(
        r.json()["message"],
        format!(
            "instance lhins-closed refused the connection on port {}: is the service listening on that port?",
            closed.port()
        )
    );
    let r = through(&gw, "/slow");
    assert_error(&r, 504, "SERVICE_TIMEOUT");
    assert_eq!(
        r.json()["message"],
        format!(
            "instance lhins-slow accepted the connection on port {} but did not answer within 300ms",
            slow.addr().port()
        )
    );
    assert!(
        !r.text().contains("127.0.0.1"),
        "the address is not told to clients"
    );
}
