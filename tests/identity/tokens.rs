//! Tokens at the gateway: verify, expire, tamper, wrong key, rotated keys, `auth: required`.

use super::*;

fn start() -> Session {
    // No login in these tests: WeChat is never asked.
    start_session(closed_port(), KEY1)
}

#[test]
fn a_valid_token_identifies_the_caller_on_http_and_sdk_calls() {
    let s = start();
    let token = forge(KEY1, OWNER, "o-direct", now() - 10, now() + 600);
    let resp = send(s.gw.http, &with_token("/api/x", &token)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.up.last().header("X-WX-OPENID"), Some("o-direct"));
    // An SDK call authenticates the same way.
    let sdk = Req::post("/api/x")
        .header("X-WX-SERVICE", "tcbanyservice")
        .header("X-Vm-Service", "lhins-a")
        .header("Authorization", &format!("Bearer {token}"))
        .body("{}");
    let resp = send(s.gw.http, &sdk).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = s.up.last();
    assert_eq!(seen.path, "/api/x");
    assert_eq!(seen.header("X-WX-OPENID"), Some("o-direct"));
    assert_eq!(seen.header("X-WX-APPID"), Some(OWNER));
    assert!(!seen.has_header("Authorization"));
}

#[test]
fn expired_tampered_wrongly_signed_and_malformed_tokens_are_401_even_on_optional_routes() {
    let s = start();
    let t = now();
    let good = forge(KEY1, OWNER, "o-user", t - 10, t + 600);
    let expired = forge(KEY1, OWNER, "o-user", t - 7200, t - 1);
    let wrong_key = forge(KEY2, OWNER, "o-user", t - 10, t + 600);
    let unknown_app = forge(KEY1, "wx0000000000000000", "o-user", t - 10, t + 600);
    // Someone else's openid with the good signature.
    let parts: Vec<&str> = good.split('.').collect();
    let other = forge(KEY1, OWNER, "o-victim", t - 10, t + 600);
    let other_payload = other.split('.').nth(1).unwrap();
    let swapped = format!("v1.{other_payload}.{}", parts[2]);
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 5;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for (what, token) in [
        ("expired", expired.as_str()),
        ("wrong key", wrong_key.as_str()),
        ("app not configured", unknown_app.as_str()),
        ("payload swapped", swapped.as_str()),
        ("signature changed", flipped.as_str()),
        ("empty", ""),
        ("garbage", "not-a-token"),
        ("three dots", "v1.a.b"),
    ] {
        let resp = send(s.gw.http, &with_token("/api/x", token)).unwrap();
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
        assert_error(&resp, 401, "UNAUTHENTICATED");
    }
    assert_eq!(s.up.count(), 0, "nothing reached the instance");
    let resp = send(s.gw.http, &with_token("/api/x", &expired)).unwrap();
    assert!(resp.json()["message"].as_str().unwrap().contains("expired"));
    // The good one still works.
    assert_eq!(
        send(s.gw.http, &with_token("/api/x", &good))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn rotated_keys_verify_old_tokens_and_the_first_key_signs() {
    let wx = Upstream::start(Behavior::Answer(fake_wechat));
    // KEY2 is new (signs), KEY1 is old (still verifies).
    let s = start_session(wx.addr(), &format!("{KEY2},{KEY1}"));
    let old = forge(KEY1, OWNER, "o-old", now() - 10, now() + 600);
    let resp = send(s.gw.http, &with_token("/api/x", &old)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.up.last().header("X-WX-OPENID"), Some("o-old"));
    let fresh = token_of(&s.gw, OWNER, "good-new");
    assert!(Keys::parse(KEY2).unwrap().verify(&fresh, now()).is_ok());
    assert!(Keys::parse(KEY1).unwrap().verify(&fresh, now()).is_err());
}

#[test]
fn auth_required_refuses_anonymous_callers() {
    let s = start();
    let anonymous = send(s.gw.http, &Req::get("/private/x").host(HOST)).unwrap();
    assert_error(&anonymous, 401, "UNAUTHENTICATED");
    // Spoofed identity headers are no identity.
    let spoofed = Req::get("/private/x")
        .host(HOST)
        .header("X-WX-OPENID", "spoof")
        .header("X-WX-APPID", OWNER);
    assert_error(&send(s.gw.http, &spoofed).unwrap(), 401, "UNAUTHENTICATED");
    assert_eq!(s.up.count(), 0);
    let token = forge(KEY1, OWNER, "o-user", now() - 10, now() + 600);
    let resp = send(s.gw.http, &with_token("/private/x", &token)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.up.last().header("X-WX-OPENID"), Some("o-user"));
    // An optional route lets anonymous callers through with X-WX-ENV only.
    let resp = send(s.gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(wx_names(&s.up.last()), ["x-wx-env"]);
}

#[test]
fn other_authorization_schemes_are_the_backends_and_two_headers_are_refused() {
    let s = start();
    let basic = Req::get("/api/x")
        .host(HOST)
        .header("Authorization", "Basic dXNlcjpwYXNz");
    assert_eq!(send(s.gw.http, &basic).unwrap().status, 200);
    let seen = s.up.last();
    assert_eq!(seen.header("Authorization"), Some("Basic dXNlcjpwYXNz"));
    assert_eq!(wx_names(&seen), ["x-wx-env"]);
    let token = forge(KEY1, OWNER, "o-user", now() - 10, now() + 600);
    let two = with_token("/api/x", &token).header("Authorization", "Basic dXNlcjpwYXNz");
    assert_error(&send(s.gw.http, &two).unwrap(), 401, "UNAUTHENTICATED");
    let two_bearers =
        with_token("/api/x", &token).header("authorization", &format!("bearer {token}"));
    assert_error(
        &send(s.gw.http, &two_bearers).unwrap(),
        401,
        "UNAUTHENTICATED",
    );
}

#[test]
fn source_and_platform_come_from_the_user_agent_of_verified_users() {
    let s = start();
    let token = forge(KEY1, OWNER, "o-user", now() - 10, now() + 600);
    for (ua, source, platform) in [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 MicroMessenger/8.0.47 NetType/WIFI", Some("wx_client"), Some("ios")),
        ("Mozilla/5.0 (Linux; Android 13; wv) MicroMessenger/8.0.47.2560 MiniProgramEnv/android", Some("wx_client"), Some("android")),
        ("Mozilla/5.0 (Phone; OpenHarmony 5.0) ArkWeb/4.1.6.1 Mobile MicroMessenger/8.0.1.26", Some("wx_client"), Some("harmonyos")),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64) MicroMessenger/7.0.20.1781 WindowsWechat MiniProgramEnv/Windows", Some("wx_client"), Some("windows")),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) MicroMessenger/6.8.0 MacWechat/3.8.6 MiniProgramEnv/Mac", Some("wx_client"), Some("mac")),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 13_2_3 like Mac OS X) wechatdevtools/1.06.2401020 MicroMessenger/8.0.5", Some("wx_devtools"), Some("devtools")),
        ("curl/8.5.0", None, None),
    ] {
        let resp = send(s.gw.http, &with_token("/api/x", &token).header("User-Agent", ua)).unwrap();
        assert_eq!(resp.status, 200);
        let seen = s.up.last();
        assert_eq!(seen.header("X-WX-SOURCE"), source, "{ua}");
        assert_eq!(seen.header("X-WX-PLATFORM"), platform, "{ua}");
        assert_eq!(seen.header("User-Agent"), Some(ua), "the User-Agent itself is kept");
    }
    // Not for anonymous callers, whatever their User-Agent says.
    let anon = Req::get("/api/x")
        .host(HOST)
        .header("User-Agent", "Mozilla/5.0 (iPhone) MicroMessenger/8.0.47");
    assert_eq!(send(s.gw.http, &anon).unwrap().status, 200);
    assert_eq!(wx_names(&s.up.last()), ["x-wx-env"]);
}
