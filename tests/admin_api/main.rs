//! SPEC §12 against the real gateway: every admin API endpoint (content, status, the token),
//! request lookup by id and by filter, the traffic stream, reload on demand, instance health
//! (active and passive), the zero series of §10, the error messages that name a failure's
//! cause, and the config errors of the `admin:` block and `health_check`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod config;
mod health;
mod requests;
mod traffic;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

pub const HOST: &str = "test-env.service.tcloudbase.com";
pub const TOKEN: &str = "admin-test-token-0123456789";
pub const ORIGIN_SECRET: &str = "origin-secret-never-shown";
pub const WAIT: Duration = Duration::from_secs(15);

/// An echo instance (`lhins-a`, with an origin secret) and one whose port is closed.
pub fn config(up: &Upstream, admin_block: &str) -> String {
    format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 2, grace_period: 1s, graceful_shutdown_timeout: 1s }}
{admin_block}
instances:
  - {{ id: lhins-a, address: "{}", origin_secret_env: ORIGIN_SECRET }}
  - {{ id: lhins-down, address: "{}" }}
routes:
  - {{ domain: default, path: /a, instance: lhins-a }}
  - {{ domain: default, path: /down, instance: lhins-down }}
"#,
        up.addr(),
        closed_port()
    )
}

/// The gateway of [`config`], with the admin token required.
pub fn start(up: &Upstream, admin_block: &str) -> Gateway {
    Gateway::start_with(
        &config(up, admin_block),
        &[
            ("ANYGATE_ADMIN_TOKEN", TOKEN),
            ("ORIGIN_SECRET", ORIGIN_SECRET),
        ],
    )
}

pub const WITH_TOKEN: &str = "admin: { token_env: ANYGATE_ADMIN_TOKEN }";

/// A request to the admin listener with the token.
pub fn admin(gw: &Gateway, req: Req) -> Response {
    send(
        gw.admin,
        &req.host("localhost")
            .header("Authorization", &format!("Bearer {TOKEN}")),
    )
    .unwrap_or_else(|e| panic!("admin request: {e}"))
}

/// `GET path` on the admin API, which must answer 200 with JSON.
pub fn get_json(gw: &Gateway, path: &str) -> Value {
    let r = admin(gw, Req::get(path));
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{path}");
    r.json()
}

/// A request through the gateway to `path` on the default domain.
pub fn through(gw: &Gateway, path: &str) -> Response {
    send(gw.http, &Req::get(path).host(HOST)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asserts the SPEC §8 body of an admin error.
pub fn assert_api_error(r: &Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["requestId"].as_str().is_some_and(|m| m.len() == 36),
        "{body}"
    );
    body
}

/// Polls `f` until it gives `Some`, at most `timeout`.
pub fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
