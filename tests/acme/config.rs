//! `anygate check` on the `acme` section and `tls: acme` domains: every mistake at its
//! `file:line:col`, all at once, without contacting the CA (the directory here is a closed
//! port) and without creating anything.

use crate::common::*;

const GOOD: &str = r#"env: e
listen: { http: "@HTTP@", https: "@HTTPS@" }
domains:
  - name: api.example.com
    tls: acme
acme:
  directory: https://127.0.0.1:9/dir
  storage: @DIR@/acme
instances: [{ id: a, address: "127.0.0.1:1" }]
routes: [{ domain: "*", path: /, instance: a }]
"#;

/// Adds a line to the `acme` section (as line 9).
fn with(line: &str) -> String {
    GOOD.replace(
        "  storage: @DIR@/acme\n",
        &format!("  storage: @DIR@/acme\n{line}\n"),
    )
}

#[test]
fn a_good_acme_section_passes_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anygate.yaml");
    std::fs::write(
        &path,
        GOOD.replace("@DIR@", &dir.path().display().to_string())
            .replace("@HTTP@", "127.0.0.1:1")
            .replace("@HTTPS@", "127.0.0.1:2"),
    )
    .unwrap();
    let (code, out, err) = check_file(&path);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"), "{out}");
    assert!(
        !dir.path().join("acme").exists(),
        "check creates no storage"
    );
}

#[test]
fn bad_acme_configs_fail_at_the_right_place() {
    let table: Vec<(&str, String, &str)> = vec![
        (
            "tls: acme without an acme section",
            GOOD.replace("acme:\n  directory: https://127.0.0.1:9/dir\n  storage: @DIR@/acme\n", ""),
            "5:10: `tls: acme` needs the top-level `acme:` section",
        ),
        (
            "unknown key",
            GOOD.replace("  directory:", "  directroy:"),
            "7:3: unknown field `directroy`, expected one of",
        ),
        (
            "bad duration",
            with("  renew_before: 30x"),
            "9:17: invalid duration `30x`",
        ),
        (
            "zero duration",
            with("  renew_before: 0s"),
            "9:17: `renew_before` must be more than 0",
        ),
        (
            "unreadable ca_roots",
            with("  ca_roots: missing.pem"),
            "9:13: cannot read `ca_roots`",
        ),
        (
            "ca_roots not PEM",
            with("  ca_roots: anygate.yaml"),
            "9:13: `@DIR@/anygate.yaml` holds no PEM certificate",
        ),
        (
            "storage that cannot be created",
            GOOD.replace("storage: @DIR@/acme", "storage: @DIR@/anygate.yaml/acme"),
            "8:12: `storage` `@DIR@/anygate.yaml/acme` cannot be created: `@DIR@/anygate.yaml` is not a directory",
        ),
        (
            "storage that is a file",
            GOOD.replace("storage: @DIR@/acme", "storage: @DIR@/anygate.yaml"),
            "8:12: `storage` `@DIR@/anygate.yaml` is not a directory",
        ),
        (
            "http-01 without an HTTP listener",
            GOOD.replace("http: \"@HTTP@\", ", ""),
            "7:3: `challenge: http-01` needs an HTTP listener",
        ),
        (
            "tls-alpn-01 needs nothing more than HTTPS; no HTTPS at all is an error",
            with("  challenge: tls-alpn-01").replace(", https: \"@HTTPS@\"", ""),
            "5:10: `tls: acme` needs an HTTPS listener (`listen.https`)",
        ),
        (
            "wildcard",
            GOOD.replace("api.example.com", "\"*.example.com\""),
            "5:10: `*.example.com`: HTTP-01 and TLS-ALPN-01 cannot validate a wildcard name",
        ),
        (
            "plain-HTTP directory",
            GOOD.replace("https://127.0.0.1:9/dir", "http://127.0.0.1:9/dir"),
            "7:14: the ACME directory `http://127.0.0.1:9/dir` must be an https:// URL",
        ),
        (
            "bad email",
            with("  email: ops.example.com"),
            "9:10: `email` `ops.example.com` is not an email address",
        ),
        (
            "tls is neither files nor acme",
            GOOD.replace("tls: acme", "tls: acmee"),
            "5:10: `tls` is `{ cert, key }` or `acme`, not `acmee`",
        ),
        (
            "unknown challenge",
            with("  challenge: dns-01"),
            "9:14: `challenge` is `http-01` or `tls-alpn-01`, not `dns-01`",
        ),
    ];
    for (what, yaml, want) in &table {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let path = dir.path().join("anygate.yaml");
        let text = yaml
            .replace("@DIR@", &d)
            .replace("@HTTP@", "127.0.0.1:1")
            .replace("@HTTPS@", "127.0.0.1:2");
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = check_file(&path);
        let want = format!("{}:{}", path.display(), want.replace("@DIR@", &d));
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "{what}:\nwant {want}\ngot  {err}"
        );
    }
}

#[test]
fn every_acme_mistake_is_reported_at_once() {
    let yaml =
        with("  renew_before: 1x\n  email: nope\n  ca_roots: missing.pem\n  challenge: dns-01");
    let (code, _, err) = check(&yaml);
    assert_eq!(code, 1);
    for want in [
        ":9:17: invalid duration",
        ":10:10: `email`",
        ":11:13: cannot read `ca_roots`",
        ":12:14: `challenge`",
    ] {
        assert!(err.contains(want), "{want} in\n{err}");
    }
}
