//! `anygate token`: mints what the login would answer, with the configured key.

use super::*;
use common::gateway::run_anygate_with_env;
use std::time::Duration;

fn token_cmd(conf: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["token".as_ref(), "-c".as_ref(), conf.as_os_str()];
    all.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
    run_anygate_with_env(&all, env, Duration::from_secs(20))
}

#[test]
fn minted_tokens_work_at_the_gateway() {
    let s = start_session(closed_port(), KEY1);
    let conf = s.gw.config_path();
    // Only the key variable is needed, not the app secrets.
    let env = [("ANYGATE_TOKEN_KEYS", KEY1)];
    let (code, out, err) = token_cmd(&conf, &["--openid", "o-cli", "--unionid", "u-cli"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("valid for 7200s"), "{err}");
    let token = out.trim();
    let resp = send(s.gw.http, &with_token("/private/x", token)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = s.up.last();
    assert_eq!(seen.header("X-WX-OPENID"), Some("o-cli"));
    assert_eq!(
        seen.header("X-WX-APPID"),
        Some(OWNER),
        "the owner app by default"
    );
    assert_eq!(seen.header("X-WX-UNIONID"), Some("u-cli"));

    // A shared app's user, with a ttl of its own.
    let (code, out, err) = token_cmd(
        &conf,
        &["--appid", SHARED, "--openid", "o-cli-shared", "--ttl", "5m"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let claims = Keys::parse(KEY1)
        .unwrap()
        .verify(out.trim(), now())
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 300);
    let resp = send(s.gw.http, &with_token("/api/x", out.trim())).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(s.up.last().header("X-WX-FROM-OPENID"), Some("o-cli-shared"));

    // A token signed with another key is refused by the gateway.
    let (code, out, _) = token_cmd(
        &conf,
        &["--openid", "o-cli"],
        &[("ANYGATE_TOKEN_KEYS", KEY2)],
    );
    assert_eq!(code, 0);
    let resp = send(s.gw.http, &with_token("/api/x", out.trim())).unwrap();
    assert_error(&resp, 401, "UNAUTHENTICATED");
}

#[test]
fn token_refuses_what_the_gateway_would_refuse() {
    let s = start_session(closed_port(), KEY1);
    let conf = s.gw.config_path();
    let env = [("ANYGATE_TOKEN_KEYS", KEY1)];
    for (args, env, needle) in [
        (
            &["--appid", "wx0000000000000000", "--openid", "o"][..],
            &env[..],
            "not in `session.apps`",
        ),
        (
            &["--openid", "o"][..],
            &[][..],
            "`ANYGATE_TOKEN_KEYS` is not set",
        ),
        (&["--openid", "o p"][..], &env[..], "--openid"),
        (&["--openid", "o", "--ttl", "soon"][..], &env[..], "--ttl"),
    ] {
        let (code, out, err) = token_cmd(&conf, args, env);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A config without session mode has no tokens.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, "env: e\nlisten: { http: \"127.0.0.1:1\" }\n").unwrap();
    let (code, _, err) = token_cmd(&plain, &["--openid", "o"], &env);
    assert_eq!(code, 1);
    assert!(err.contains("mode: session"), "{err}");
}

/// `anygate wechat-stub`: the login flow end to end with no WeChat, as docs/identity.md shows.
#[test]
fn wechat_stub_lets_the_login_flow_run_locally() {
    let port = free_port(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let wx: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stub = Process::spawn(&["wechat-stub", "--listen", &wx.to_string()]);
    stub.wait_listening(wx);
    let s = start_session(wx, KEY1);

    let resp = login(&s.gw, OWNER, "test:oAlice:oUnionAlice");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["openid"], "oAlice");
    let token = resp.json()["token"].as_str().unwrap().to_string();
    let resp = send(s.gw.http, &with_token("/private/me", &token)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = s.up.last();
    assert_eq!(seen.header("X-WX-OPENID"), Some("oAlice"));
    assert_eq!(seen.header("X-WX-UNIONID"), Some("oUnionAlice"));

    // Any other code is refused, as WeChat refuses a bad one (errcode 40029).
    let resp = login(&s.gw, OWNER, "good-alice");
    assert_error(&resp, 401, "UNAUTHENTICATED");

    // It logs anyone in: it will not listen beyond loopback.
    let (code, _out, err) = run_anygate_with_env(
        &[
            "wechat-stub".as_ref(),
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
        ],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
}
