//! SPEC §5 through the real gateway: session login against a fake jscode2session, tokens,
//! spoofed identity headers in every mode, trusted fronts, origin secrets, `anygate token`.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod config;
mod login;
mod spoofing;
mod tokens;
mod trusted_front;

use anygate_plugins::identity::token::{Claims, Keys};
use common::*;
use std::time::{SystemTime, UNIX_EPOCH};

pub const HOST: &str = "test-env.service.tcloudbase.com";
pub const OWNER: &str = "wx1234567890abcdef";
pub const SHARED: &str = "wxfedcba0987654321";
pub const OWNER_SECRET: &str = "owner-app-secret";
pub const SHARED_SECRET: &str = "shared-app-secret";
pub const KEY1: &str = "key-one-0123456789abcdef0123456789abcdef";
pub const KEY2: &str = "key-two-fedcba9876543210fedcba9876543210";
pub const ORIGIN_SECRET: &str = "origin-s3cret";
/// What the fake WeChat puts in `session_key`: must never show up anywhere.
pub const SESSION_KEY: &str = "SESSIONKEY-must-never-leave";

/// A session-mode gateway; `@WECHAT@` is the fake jscode2session's address, `@UP@` the
/// upstream's.
pub const SESSION_TEMPLATE: &str = r#"
env: test-env
listen: { http: "@HTTP@" }
server: { threads: 1 }
instances:
  - { id: lhins-a, address: "@UP@" }
  - { id: lhins-s, address: "@UP@", origin_secret_env: ORIGIN_SECRET }
routes:
  - { domain: default, path: /api, instance: lhins-a }
  - { domain: default, path: /private, instance: lhins-a, auth: required }
  - { domain: default, path: /origin, instance: lhins-s }
plugins:
  - name: request_id
  - name: identity
    mode: session
    session:
      apps:
        - { appid: wx1234567890abcdef, secret_env: WX_SECRET_OWNER, role: owner }
        - { appid: wxfedcba0987654321, secret_env: WX_SECRET_SHARED, role: shared }
      code2session_url: "http://@WECHAT@/sns/jscode2session"
      code2session_timeout: 500ms
      token_keys_env: ANYGATE_TOKEN_KEYS
      token_ttl: 2h
  - name: routing
  - name: forwarded_for
  - name: upstream_info
"#;

/// The environment of a session-mode gateway, with these token keys.
pub fn session_env(keys: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WX_SECRET_OWNER", OWNER_SECRET.into()),
        ("WX_SECRET_SHARED", SHARED_SECRET.into()),
        ("ANYGATE_TOKEN_KEYS", keys.into()),
        ("ORIGIN_SECRET", ORIGIN_SECRET.into()),
    ]
}

pub fn start_gateway(template: &str, up: &Upstream, env: &[(&str, String)]) -> Gateway {
    let yaml = template.replace("@UP@", &up.addr().to_string());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_with(&yaml, &env)
}

/// A session-mode gateway with an echo upstream and a fake WeChat at `wx`.
pub struct Session {
    pub gw: Gateway,
    pub up: Upstream,
}

pub fn start_session(wx: std::net::SocketAddr, keys: &str) -> Session {
    let up = Upstream::start(Behavior::Echo);
    let template = SESSION_TEMPLATE.replace("@WECHAT@", &wx.to_string());
    let gw = start_gateway(&template, &up, &session_env(keys));
    Session { gw, up }
}

/// `%XX` and `+` decoding of one query value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn query_param(r: &Received, key: &str) -> Option<String> {
    r.query
        .as_deref()?
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key))
        .map(|(_, v)| decode(v))
}

/// A fake WeChat jscode2session: the answer depends on `js_code`; a wrong secret for the app
/// gets WeChat's 40125.
pub fn fake_wechat(r: &Received) -> (u16, String) {
    let q = |k| query_param(r, k).unwrap_or_default();
    let (appid, secret, code) = (q("appid"), q("secret"), q("js_code"));
    let right_secret = match appid.as_str() {
        OWNER => OWNER_SECRET,
        SHARED => SHARED_SECRET,
        _ => "",
    };
    if r.path != "/sns/jscode2session" || q("grant_type") != "authorization_code" {
        return (404, r#"{"errcode":404,"errmsg":"not found"}"#.into());
    }
    if secret != right_secret {
        return (
            200,
            r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#.into(),
        );
    }
    let user = code.strip_prefix("good-").unwrap_or("");
    let answer = match code.as_str() {
        _ if !user.is_empty() => format!(
            r#"{{"openid":"o-{appid}-{user}","session_key":"{SESSION_KEY}","unionid":"u-{user}"}}"#
        ),
        "no-unionid" => format!(r#"{{"openid":"o-{appid}-plain","session_key":"{SESSION_KEY}"}}"#),
        "invalid" => r#"{"errcode":40029,"errmsg":"invalid code"}"#.into(),
        "used" => r#"{"errcode":40163,"errmsg":"code been used"}"#.into(),
        "busy" => r#"{"errcode":-1,"errmsg":"system error"}"#.into(),
        "limit" => r#"{"errcode":45011,"errmsg":"api minute-quota reach limit"}"#.into(),
        "not-json" => "<html>502 Bad Gateway</html>".into(),
        "http-500" => {
            return (
                500,
                format!(r#"{{"openid":"o-x","session_key":"{SESSION_KEY}"}}"#),
            )
        }
        _ => r#"{"errcode":40029,"errmsg":"invalid code"}"#.into(),
    };
    (200, answer)
}

/// `POST /.anygate/login`.
pub fn login(gw: &Gateway, appid: &str, code: &str) -> Response {
    let body = format!(r#"{{"appid":"{appid}","code":"{code}"}}"#);
    let req = Req::post("/.anygate/login")
        .host(HOST)
        .header("Content-Type", "application/json")
        .body(body);
    send(gw.http, &req).unwrap()
}

/// Logs in and returns the token.
pub fn token_of(gw: &Gateway, appid: &str, code: &str) -> String {
    let resp = login(gw, appid, code);
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["token"].as_str().unwrap().to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `key`, valid from `iat` to `exp`.
pub fn forge(key: &str, appid: &str, openid: &str, iat: u64, exp: u64) -> String {
    Keys::parse(key).unwrap().sign(&Claims {
        appid: appid.into(),
        openid: openid.into(),
        unionid: None,
        iat,
        exp,
    })
}

/// A GET to `target` on the default domain with `Authorization: Bearer <token>`.
pub fn with_token(target: &str, token: &str) -> Req {
    Req::get(target)
        .host(HOST)
        .header("Authorization", &format!("Bearer {token}"))
}

/// The `x-wx-*` header names the upstream received, lower-cased and sorted.
pub fn wx_names(r: &Received) -> Vec<String> {
    let mut v: Vec<String> = r
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .filter(|k| k.starts_with("x-wx-") || k.starts_with("x_wx"))
        .collect();
    v.sort();
    v
}
