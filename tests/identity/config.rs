//! Bad identity settings fail the whole config with `FILE:LINE:COL` at the key.

use super::*;

const HEAD: &str = "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes: [{ domain: \"*\", path: /, instance: a }]\nplugins:\n";

/// The plugins of a good session-mode chain, from line 6 on.
const SESSION: &str = "  - name: identity
    mode: session
    session:
      apps:
        - { appid: wx1, secret_env: S1, role: owner }
        - { appid: wx2, secret_env: S2, role: shared }
      token_keys_env: KEYS
  - name: routing
";

const ENV: &[(&str, &str)] = &[
    ("S1", "secret-1"),
    ("S2", "secret-2"),
    ("KEYS", "0123456789abcdef0123456789abcdef"),
];

/// (what is broken, the file, its environment, line, column, a piece of the message)
type Case = (
    &'static str,
    String,
    &'static [(&'static str, &'static str)],
    usize,
    usize,
    &'static str,
);

fn with(plugins: &str) -> String {
    format!("{HEAD}{plugins}")
}

#[test]
fn the_good_session_config_passes() {
    let (code, out, err) = check_with_env(&with(SESSION), ENV);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("chain: identity, routing"), "{out}");
}

#[test]
fn each_bad_identity_setting_fails_at_its_key() {
    let s = |from: &str, to: &str| {
        assert!(SESSION.contains(from), "{from}");
        with(&SESSION.replacen(from, to, 1))
    };
    let cases: Vec<Case> = vec![
        ("routing before identity", with("  - name: routing\n  - name: identity\n    mode: none\n"), ENV, 7, 5, "`identity` must come before `routing`"),
        ("two owners", s("secret_env: S2, role: shared", "secret_env: S2, role: owner"), ENV, 11, 47, "only one app can be the owner"),
        ("no owner", s("secret_env: S1, role: owner", "secret_env: S1, role: shared"), ENV, 9, 7, "role: owner"),
        ("token keys variable unset", with(SESSION), &ENV[..2], 12, 23, "`KEYS` is not set"),
        ("token key too short", with(SESSION), &[("S1", "a"), ("S2", "b"), ("KEYS", "short")], 12, 23, "at least 32"),
        ("app secret variable unset", with(SESSION), &[("S1", "a"), ("KEYS", "0123456789abcdef0123456789abcdef")], 11, 37, "`S2` is not set"),
        ("app listed twice", s("appid: wx2", "appid: wx1"), ENV, 11, 20, "listed twice"),
        ("bad code2session_url", s("      token_keys_env", "      code2session_url: ftp://x\n      token_keys_env"), ENV, 12, 25, "https://"),
        ("zero token_ttl", s("      token_keys_env", "      token_ttl: 0s\n      token_keys_env"), ENV, 12, 18, "token_ttl"),
        ("bad token_ttl", s("      token_keys_env", "      token_ttl: two hours\n      token_keys_env"), ENV, 12, 18, "invalid duration"),
        ("unknown session key", s("      token_keys_env", "      token_key: X\n      token_keys_env"), ENV, 12, 7, "unknown field `token_key`"),
        ("bad role", s("role: shared", "role: guest"), ENV, 11, 47, "unknown variant `guest`"),
        ("session mode without session", with("  - name: identity\n    mode: session\n  - name: routing\n"), ENV, 7, 11, "needs a `session:`"),
        ("trusted_front without fronts", with("  - name: identity\n    mode: trusted_front\n  - name: routing\n"), ENV, 7, 11, "needs `trusted_fronts"),
        ("missing mode", with("  - name: identity\n  - name: routing\n"), ENV, 6, 9, "missing field `mode`"),
        ("auth required without a verifying identity", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: \"*\", path: /, instance: a, auth: required }\n".to_string(), ENV, 5, 48, "`auth: required` needs the `identity` plugin"),
    ];
    // --strict: an unset variable is an error there, as in `run` (plain `check` warns).
    for (what, yaml, env, line, col, needle) in cases {
        let (code, _out, err) = check_strict_with_env(&yaml, env);
        assert_eq!(code, 1, "{what}: should fail\n{yaml}");
        let want = format!("anygate.yaml:{line}:{col}: ");
        let hit = err
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{what}: no error mentions `{needle}`:\n{err}\n{yaml}"));
        assert!(
            hit.contains(&want),
            "{what}: want {want}…{needle}, got:\n{err}\n{yaml}"
        );
    }
}
