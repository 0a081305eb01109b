//! `anygate check` on the `admin:` block and `instances[].health_check`.

use super::*;

const BASE: &str = "env: test-env\nlisten: { http: \"127.0.0.1:8080\", admin: ADMIN }\nADMIN_BLOCK\ninstances:\n  - { id: lhins-a, address: \"10.0.0.1\"HEALTH }\nroutes:\n  - { domain: default, path: /, instance: lhins-a }\n";

fn yaml(admin: &str, block: &str, health: &str) -> String {
    BASE.replace("ADMIN_BLOCK", block)
        .replace("ADMIN", admin)
        .replace("HEALTH", health)
}

fn errors(yaml: &str, env: &[(&str, &str)]) -> Vec<String> {
    let (code, _, err) = check_with_env(yaml, env);
    assert_eq!(code, 1, "{yaml} should fail");
    err.lines()
        .map(|l| l.split_once("anygate.yaml:").map_or(l, |x| x.1).to_string())
        .collect()
}

#[test]
fn a_public_admin_listener_needs_a_token() {
    assert_eq!(
        errors(&yaml("\"0.0.0.0:9091\"", "", ""), &[]),
        ["2:42: the admin listener 0.0.0.0:9091 is not on a loopback address: set `admin.token_env` so that its API and /metrics need a token"]
    );
    let with = yaml("\"0.0.0.0:9091\"", "admin: { token_env: T }", "");
    let (code, out, err) = check_with_env(&with, &[("T", "a-long-enough-admin-token")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"));
    // Loopback needs none, v4 or v6.
    for addr in ["\"127.0.0.1:9091\"", "\"[::1]:9091\""] {
        let (code, _, err) = check_with_env(&yaml(addr, "", ""), &[]);
        assert_eq!(code, 0, "{addr}: {err}");
    }
}

#[test]
fn admin_block_errors_point_at_their_key() {
    let loopback = "\"127.0.0.1:9091\"";
    // An unset variable is a warning for `check` (the checking machine may lack it) and an
    // error for `run`, like every other `_env` key.
    let (code, _, err) =
        check_with_env(&yaml(loopback, "admin: { token_env: UNSET_VAR }", ""), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("anygate.yaml:3:21: warning: environment variable `UNSET_VAR` is not set"),
        "{err}"
    );
    assert_eq!(
        errors(&yaml(loopback, "admin: { token_env: T }", ""), &[("T", "short")]),
        ["3:21: the admin token in `T` is shorter than 16 characters (make one with `openssl rand -hex 32`)"]
    );
    assert_eq!(
        errors(
            &yaml(loopback, "admin: { recent_requests: 2000000 }", ""),
            &[]
        ),
        ["3:27: `admin.recent_requests` must be at most 1000000 (0 keeps none)"]
    );
    let unknown = errors(&yaml(loopback, "admin: { token: abc }", ""), &[]);
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert!(
        unknown[0].starts_with("3:10: unknown field `token`"),
        "{unknown:?}"
    );
}

#[test]
fn bad_health_checks_are_reported_all_at_once() {
    let loopback = "\"127.0.0.1:9091\"";
    let bad = ", health_check: { path: healthz, interval: 50ms, timeout: 2s, unhealthy: 0, healthy: 101 }";
    let got = errors(&yaml(loopback, "", bad), &[]);
    assert_eq!(
        got,
        [
            "5:63: `health_check.path` `healthz` must start with `/` and hold no spaces, control characters or `#`",
            "5:82: `health_check.interval` must be at least 100ms",
            "5:97: `health_check.timeout` (2s) must not be longer than its `interval` (50ms)",
            "5:112: `health_check.unhealthy` must be between 1 and 100",
            "5:124: `health_check.healthy` must be between 1 and 100",
        ]
    );
    let typo = errors(&yaml(loopback, "", ", health_check: { paht: /x }"), &[]);
    assert!(typo[0].contains("unknown field `paht`"), "{typo:?}");
    let good = yaml(
        loopback,
        "",
        ", health_check: { path: \"/healthz?full=1\", interval: 5s }",
    );
    let (code, _, err) = check_with_env(&good, &[]);
    assert_eq!(code, 0, "{err}");
}
