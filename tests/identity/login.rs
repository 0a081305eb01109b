//! `POST /.anygate/login` against a fake jscode2session on 127.0.0.1.

use super::*;
use std::time::Duration;

#[test]
fn owner_login_exchanges_the_code_and_answers_a_token() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let s = start_session(wx.addr(), KEY1);
    let resp = login(&s.gw, OWNER, "good-alice");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert_eq!(resp.header("Cache-Control"), Some("no-store"));
    assert!(resp.has_header("X-Cloudbase-Request-Id"));
    let body = resp.json();
    assert_eq!(body["expiresIn"], 7200);
    assert_eq!(body["openid"], format!("o-{OWNER}-alice"));
    let token = body["token"].as_str().unwrap();
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert!(!resp.text().contains(SESSION_KEY));
    // The token carries the user, never the session key, and expires in 2h.
    let claims = Keys::parse(KEY1).unwrap().verify(token, now()).unwrap();
    assert_eq!(claims.appid, OWNER);
    assert_eq!(claims.openid, format!("o-{OWNER}-alice"));
    assert_eq!(claims.unionid.as_deref(), Some("u-alice"));
    assert_eq!(claims.exp - claims.iat, 7200);
    assert!(!token.contains(SESSION_KEY));

    // What WeChat was asked.
    let asked = wx.last();
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.path, "/sns/jscode2session");
    assert_eq!(query_param(&asked, "appid").as_deref(), Some(OWNER));
    assert_eq!(query_param(&asked, "secret").as_deref(), Some(OWNER_SECRET));
    assert_eq!(
        query_param(&asked, "js_code").as_deref(),
        Some("good-alice")
    );
    assert_eq!(
        query_param(&asked, "grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(asked.header("Host"), Some(wx.addr().to_string().as_str()));
    assert_eq!(s.up.count(), 0, "a login never reaches an instance");

    // The token then identifies the user to the instance; the token itself stays behind.
    let resp = send(s.gw.http, &with_token("/api/me", token)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = s.up.last();
    assert_eq!(
        seen.header("X-WX-OPENID"),
        Some(format!("o-{OWNER}-alice").as_str())
    );
    assert_eq!(seen.header("X-WX-APPID"), Some(OWNER));
    assert_eq!(seen.header("X-WX-UNIONID"), Some("u-alice"));
    assert_eq!(seen.header("X-WX-ENV"), Some("test-env"));
    assert!(!seen.has_header("Authorization"));
    assert_eq!(
        wx_names(&seen),
        ["x-wx-appid", "x-wx-env", "x-wx-openid", "x-wx-unionid"]
    );
    // Canonical wire case.
    assert!(seen.headers.iter().any(|(k, _)| k == "X-WX-OPENID"));
    assert!(!s.gw.stderr().contains(SESSION_KEY));
}

#[test]
fn shared_app_login_gives_the_resource_sharing_headers() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let s = start_session(wx.addr(), KEY1);
    let token = token_of(&s.gw, SHARED, "good-bob");
    assert_eq!(
        query_param(&wx.last(), "secret").as_deref(),
        Some(SHARED_SECRET)
    );
    let resp = send(s.gw.http, &with_token("/api/me", &token)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = s.up.last();
    assert_eq!(
        seen.header("X-WX-FROM-OPENID"),
        Some(format!("o-{SHARED}-bob").as_str())
    );
    assert_eq!(seen.header("X-WX-FROM-APPID"), Some(SHARED));
    assert_eq!(seen.header("X-WX-FROM-UNIONID"), Some("u-bob"));
    assert_eq!(
        seen.header("X-WX-APPID"),
        Some(OWNER),
        "the environment's own app"
    );
    assert_eq!(
        wx_names(&seen),
        [
            "x-wx-appid",
            "x-wx-env",
            "x-wx-from-appid",
            "x-wx-from-openid",
            "x-wx-from-unionid"
        ]
    );
}

#[test]
fn a_user_without_unionid_gets_no_unionid_header() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let s = start_session(wx.addr(), KEY1);
    let token = token_of(&s.gw, OWNER, "no-unionid");
    send(s.gw.http, &with_token("/api/me", &token)).unwrap();
    assert_eq!(
        wx_names(&s.up.last()),
        ["x-wx-appid", "x-wx-env", "x-wx-openid"]
    );
}

#[test]
fn an_app_that_is_not_configured_may_not_log_in() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let s = start_session(wx.addr(), KEY1);
    assert_error(
        &login(&s.gw, "wx0000000000000000", "good-eve"),
        403,
        "ACCESS_DENIED",
    );
    assert_eq!(wx.count(), 0, "WeChat is not asked about unknown apps");
}

#[test]
fn wechat_answers_map_to_spec_errors() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let s = start_session(wx.addr(), KEY1);
    for (code, status, error) in [
        ("invalid", 401, "UNAUTHENTICATED"),
        ("used", 401, "UNAUTHENTICATED"),
        ("busy", 502, "REQUEST_SERVICE_FAILED"),
        ("limit", 502, "REQUEST_SERVICE_FAILED"),
        ("not-json", 502, "REQUEST_SERVICE_FAILED"),
        ("http-500", 502, "REQUEST_SERVICE_FAILED"),
    ] {
        let resp = login(&s.gw, OWNER, code);
        assert_error(&resp, status, error);
        assert!(!resp.text().contains("token"), "{code}: {}", resp.text());
    }
    assert_eq!(wx.count(), 6);
    assert!(!s.gw.stderr().contains(SESSION_KEY));
    assert!(
        !s.gw.stderr().contains(OWNER_SECRET),
        "the app secret is never logged"
    );
}

#[test]
fn a_wrong_app_secret_is_a_gateway_problem_and_logged() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let up = Upstream::start(Behavior::Echo);
    let template = SESSION_TEMPLATE.replace("@WECHAT@", &wx.addr().to_string());
    let mut env = session_env(KEY1);
    env[0].1 = "not-the-secret".into();
    let gw = start_gateway(&template, &up, &env);
    assert_error(
        &login(&gw, OWNER, "good-alice"),
        502,
        "REQUEST_SERVICE_FAILED",
    );
    assert!(
        gw.wait_output("errcode 40125", Duration::from_secs(5)),
        "{}",
        gw.stderr()
    );
    assert!(!gw.stderr().contains("not-the-secret"));
}

#[test]
fn wechat_unreachable_slow_or_not_http_is_502() {
    // Unreachable: nothing listens.
    let s = start_session(closed_port(), KEY1);
    assert_error(
        &login(&s.gw, OWNER, "good-a"),
        502,
        "REQUEST_SERVICE_FAILED",
    );
    // Slow: answers after the 500ms code2session_timeout.
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(3)));
    let s = start_session(slow.addr(), KEY1);
    assert_error(
        &login(&s.gw, OWNER, "good-a"),
        502,
        "REQUEST_SERVICE_FAILED",
    );
    assert_eq!(slow.count(), 1);
    // Not HTTP.
    let garbage = Upstream::start(Behavior::Garbage);
    let s = start_session(garbage.addr(), KEY1);
    assert_error(
        &login(&s.gw, OWNER, "good-a"),
        502,
        "REQUEST_SERVICE_FAILED",
    );
    // Cut off.
    let close = Upstream::start(Behavior::Close);
    let s = start_session(close.addr(), KEY1);
    assert_error(
        &login(&s.gw, OWNER, "good-a"),
        502,
        "REQUEST_SERVICE_FAILED",
    );
    // https:// to something that does not speak TLS: the handshake fails.
    let plain = Upstream::start(Behavior::Answer(fake_wechat));
    let up = Upstream::start(Behavior::Echo);
    let template =
        SESSION_TEMPLATE.replace("http://@WECHAT@", &format!("https://{}", plain.addr()));
    let gw = start_gateway(&template, &up, &session_env(KEY1));
    assert_error(&login(&gw, OWNER, "good-a"), 502, "REQUEST_SERVICE_FAILED");
    assert_eq!(plain.count(), 0, "no plain-text request was sent");
}

#[test]
fn bad_login_requests_are_clear_errors() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    let s = start_session(wx.addr(), KEY1);
    let post = |body: &str| {
        send(
            s.gw.http,
            &Req::post("/.anygate/login")
                .host(HOST)
                .body(body.to_string()),
        )
        .unwrap()
    };
    // Wrong method.
    let resp = send(s.gw.http, &Req::get("/.anygate/login").host(HOST)).unwrap();
    assert_error(&resp, 400, "INVALID_REQUEST");
    assert_eq!(resp.header("Allow"), Some("POST"));
    assert!(resp.json()["message"].as_str().unwrap().contains("POST"));
    // Not the expected JSON.
    for body in [
        "",
        "code=abc",
        "{}",
        r#"{"appid":"wx1234567890abcdef"}"#,
        r#"{"appid":"wx1234567890abcdef","code":""}"#,
        r#"{"appid":"wx1234567890abcdef","code":"a b"}"#,
        r#"{"appid":"","code":"good-x"}"#,
        r#"{"appid":"wx1234567890abcdef","code":42}"#,
    ] {
        assert_error(&post(body), 400, "INVALID_REQUEST");
    }
    // Too large, declared or not.
    let big = format!(
        r#"{{"appid":"{OWNER}","code":"good-x","pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert_error(&post(&big), 413, "EXCEED_MAX_PAYLOAD_SIZE");
    let chunked = Req::post("/.anygate/login").host(HOST).chunked_body(vec![
        big.as_bytes()[..10_000].to_vec(),
        big.as_bytes()[10_000..].to_vec(),
    ]);
    assert_error(
        &send(s.gw.http, &chunked).unwrap(),
        413,
        "EXCEED_MAX_PAYLOAD_SIZE",
    );
    assert_eq!(wx.count(), 0);
    // Extra fields are ignored and a chunked body is read whole.
    let ok = format!(r#"{{"appid":"{OWNER}","code":"good-carol","extra":1}}"#);
    let (a, b) = ok.as_bytes().split_at(10);
    let resp = send(
        s.gw.http,
        &Req::post("/.anygate/login")
            .host(HOST)
            .chunked_body(vec![a.to_vec(), b.to_vec()]),
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn login_is_the_gateways_only_in_session_mode() {
    // In the edge chain (identity in `none` mode) the path is routed like any other.
    let up = Upstream::start(Behavior::Echo);
    let gw = start_gateway(
        "env: test-env\nlisten: { http: \"@HTTP@\" }\nserver: { threads: 1 }\ninstances: [{ id: a, address: \"@UP@\" }]\nroutes: [{ domain: default, path: /, instance: a }]\n",
        &up,
        &[],
    );
    let resp = send(gw.http, &Req::post("/.anygate/login").host(HOST).body("{}")).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().path, "/.anygate/login");
}
