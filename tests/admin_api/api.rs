//! The endpoints about the running config, the token, and reload on demand.

use super::*;

const PROTECTED: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/routes"),
    ("GET", "/api/v1/instances"),
    ("GET", "/api/v1/domains"),
    ("GET", "/api/v1/requests"),
    (
        "GET",
        "/api/v1/requests/01a2b3c4-0000-7000-8000-000000000000",
    ),
    ("GET", "/api/v1/traffic"),
    ("POST", "/api/v1/reload"),
    ("GET", "/api/v1/nope"),
];

#[test]
fn the_api_and_metrics_need_the_token_the_page_and_probes_do_not() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    for (method, path) in PROTECTED {
        let bare = send(gw.admin, &Req::new(method, path).host("localhost")).unwrap();
        assert_api_error(&bare, 401, "UNAUTHENTICATED");
        assert_eq!(
            bare.header("WWW-Authenticate"),
            Some("Bearer realm=\"anygate admin\""),
            "{path}"
        );
        let wrong = send(
            gw.admin,
            &Req::new(method, path)
                .host("localhost")
                .header("Authorization", "Bearer admin-test-token-0123456780"),
        )
        .unwrap();
        assert_api_error(&wrong, 401, "UNAUTHENTICATED");
        assert!(!wrong.text().contains(TOKEN));
    }
    for (path, kind) in [
        ("/healthz", "text/plain; charset=utf-8"),
        ("/readyz", "text/plain; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        ("/console.js", "text/javascript; charset=utf-8"),
        ("/console.css", "text/css; charset=utf-8"),
    ] {
        let r = get(gw.admin, "localhost", path);
        assert_eq!(
            (r.status, r.header("Content-Type")),
            (200, Some(kind)),
            "{path}"
        );
    }
    let page = get(gw.admin, "localhost", "/");
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(page.text().contains("<script src=\"/console.js\""));
    // With the token: an unknown endpoint is the §8 NOT_FOUND, a wrong method is refused.
    assert_api_error(&admin(&gw, Req::get("/api/v1/nope")), 404, "NOT_FOUND");
    let r = admin(&gw, Req::get("/api/v1/reload"));
    assert_api_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(r.header("Allow"), Some("POST"));
    let r = admin(&gw, Req::post("/api/v1/status").body("x"));
    assert_api_error(&r, 400, "INVALID_REQUEST");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert_eq!(admin(&gw, Req::get("/metrics")).status, 200);
    // A page on another site may not use the API, even with the token.
    let cross = admin(
        &gw,
        Req::get("/api/v1/status").header("Origin", "https://evil.example"),
    );
    assert_api_error(&cross, 403, "ACCESS_DENIED");
}

#[test]
fn without_a_token_only_local_names_may_call() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, "");
    let r = get(gw.admin, &gw.admin.to_string(), "/api/v1/status");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["tokenRequired"], false);
    // A DNS-rebinding page sends its own name as Host.
    let rebound = get(gw.admin, "attacker.example:80", "/api/v1/status");
    assert_api_error(&rebound, 403, "ACCESS_DENIED");
}

#[test]
fn status_routes_instances_and_domains_describe_the_running_config() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    let s = get_json(&gw, "/api/v1/status");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["env"], "test-env");
    assert_eq!(s["generation"], 1);
    assert_eq!(s["source"], gw.config_path().display().to_string());
    assert_eq!(s["tokenRequired"], true);
    assert_eq!(s["listeners"]["admin"], gw.admin.to_string());
    assert!(s["uptimeSeconds"].as_u64().is_some());
    assert!(s["loadedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["recentRequests"]["capacity"], 10000, "the default");
    let start = &s["reloads"][0];
    assert_eq!(
        (&start["trigger"], &start["result"], &start["generation"]),
        (&"start".into(), &"success".into(), &1.into())
    );

    let routes = get_json(&gw, "/api/v1/routes");
    let r = &routes["routes"][0];
    assert_eq!(r["name"], "default/a");
    assert_eq!(r["host"], HOST);
    assert_eq!(
        (&r["path"], &r["instance"]),
        (&"/a".into(), &"lhins-a".into())
    );
    assert_eq!(
        (&r["passthrough"], &r["auth"]),
        (&false.into(), &"optional".into())
    );
    assert_eq!(routes["routes"].as_array().unwrap().len(), 2);

    let inst = get_json(&gw, "/api/v1/instances");
    let a = &inst["instances"][0];
    assert_eq!(a["id"], "lhins-a");
    assert_eq!(a["address"], up.addr().to_string());
    assert_eq!(a["upstreamType"], "Lighthouse");
    assert_eq!(a["originSecret"], true);
    assert_eq!(a["routes"], serde_json::json!(["default/a"]));
    assert_eq!(a["healthCheck"], Value::Null);
    assert_eq!(a["health"]["mode"], "passive");
    assert_eq!(a["health"]["status"], "unknown");

    let d = get_json(&gw, "/api/v1/domains");
    assert_eq!(d["domains"][0]["name"], HOST);
    assert_eq!(d["domains"][0]["kind"], "default");
    assert_eq!(d["domains"][0]["certificate"], Value::Null);
    assert_eq!(
        d["domains"][0]["routes"],
        serde_json::json!(["default/a", "default/down"])
    );
}

#[test]
fn no_secret_token_or_openid_in_any_answer() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    let client_token = "client-bearer-token-xyz";
    let r = send(
        gw.http,
        &Req::get("/a/x?openid=oPENID123&token=qs-secret")
            .host(HOST)
            .header("Authorization", &format!("Bearer {client_token}"))
            .header("X-WX-OPENID", "oSpoofedOpenid"),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        up.last().header("X-AnyService-Authorization"),
        Some(ORIGIN_SECRET),
        "the secret is in use"
    );
    let id = r.header("X-Cloudbase-Request-Id").unwrap().to_string();
    let mut seen = String::new();
    for path in [
        "/api/v1/status".to_string(),
        "/api/v1/routes".into(),
        "/api/v1/instances".into(),
        "/api/v1/domains".into(),
        "/api/v1/requests".into(),
        format!("/api/v1/requests/{id}"),
        "/metrics".into(),
    ] {
        seen.push_str(&admin(&gw, Req::get(&path)).text());
    }
    assert!(seen.contains(&id), "the request is there");
    for secret in [
        TOKEN,
        ORIGIN_SECRET,
        client_token,
        "oPENID123",
        "qs-secret",
        "oSpoofedOpenid",
    ] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
}

#[test]
fn reload_on_demand_answers_the_generation_or_the_errors() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start_full(
        &config(&up, WITH_TOKEN),
        &[
            ("ANYGATE_ADMIN_TOKEN", TOKEN),
            ("ORIGIN_SECRET", ORIGIN_SECRET),
        ],
        &["--no-watch"],
    );
    let ok = admin(&gw, Req::post("/api/v1/reload"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = ok.json();
    assert_eq!(
        (&body["result"], &body["generation"]),
        (&"success".into(), &2.into())
    );

    let broken = config(&up, WITH_TOKEN).replace("instance: lhins-down", "instance: lhins-gone");
    gw.write_config(&broken);
    let failed = admin(&gw, Req::post("/api/v1/reload"));
    let body = assert_api_error(&failed, 400, "INVALID_REQUEST");
    assert_eq!(
        (&body["result"], &body["generation"]),
        (&"failure".into(), &2.into())
    );
    let errors = body["errors"].as_array().unwrap();
    let want = format!(
        "{}:10:47: route names instance `lhins-gone`, which is not under `instances`",
        gw.config_path().display()
    );
    assert_eq!(errors, &vec![Value::from(want.clone())]);

    let s = get_json(&gw, "/api/v1/status");
    assert_eq!(s["generation"], 2, "the old config keeps serving");
    let last = &s["reloads"][0];
    assert_eq!(
        (&last["trigger"], &last["result"]),
        (&"api".into(), &"failure".into())
    );
    assert_eq!(last["errors"], serde_json::json!([want]));
    assert_eq!(s["reloads"][1]["result"], "success");
    assert_eq!(s["reloads"][2]["trigger"], "start");
    assert_eq!(through(&gw, "/a/x").status, 200);
}
