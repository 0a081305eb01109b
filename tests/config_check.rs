//! `anygate check`: every sample config in conf/ passes, and each broken config fails with
//! `FILE:LINE:COL: message` at the right place.

mod common;
use common::*;
use std::path::Path;

fn conf_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf"))
}

/// The variables the sample configs name.
const SAMPLE_SECRETS: &[(&str, &str)] = &[
    ("WX_SECRET_OWNER", "owner-app-secret"),
    ("WX_SECRET_SHARED", "shared-app-secret"),
    (
        "ANYGATE_TOKEN_KEYS",
        "0123456789abcdef0123456789abcdef,fedcba9876543210fedcba9876543210",
    ),
    ("LHINS_API01_SECRET", "origin-secret"),
];

#[test]
fn every_sample_config_passes_check() {
    let mut checked = 0;
    for entry in std::fs::read_dir(conf_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") && !path.ends_with("prometheus.yml") {
            let (code, out, err) = check_file_with_env(&path, SAMPLE_SECRETS);
            assert_eq!(code, 0, "{}: {err}", path.display());
            assert!(out.contains(": ok"), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "conf/anygate.yaml, edge.yaml, on-server.yaml");
}

/// SPEC §3's example config, word for word, except that the HTTPS listener and the domain's
/// certificate are dropped (they need certificate files; tests/tls.rs covers them).
const SPEC_EXAMPLE: &str = r#"env: test-1a2b3c                    # CloudBase environment id, sent as X-WX-ENV
listen:
  http: 0.0.0.0:80
  https: 0.0.0.0:443                # optional; needs tls on the domains served
  admin: 127.0.0.1:9091             # /metrics /healthz /readyz; never public by default
server: { threads: 2 }              # optional Pingora tuning
default_domain_suffix: service.tcloudbase.com   # default domain = <env>.<suffix>
domains:                            # custom domains
  - name: api.example.com
    tls: { cert: certs/api.pem, key: certs/api.key }   # optional, PEM paths relative to the file
instances:                          # cloud servers
  - id: lhins-abc123
    address: 10.0.0.5               # port 80 unless written host:port
    upstream_type: Lighthouse       # optional; sent as X-Cloudbase-Upstream-Type
    origin_secret_env: LHINS_ABC123_SECRET   # optional; sent as X-AnyService-Authorization
routes:                             # HTTP access service
  - domain: default                 # default | a custom domain name | "*"
    path: /api                      # trigger path
    instance: lhins-abc123
    passthrough: false              # true keeps the trigger prefix; default strips it
    auth: optional                  # optional | required (401 without a verified identity)
limits: { max_sdk_body: 100KB, max_body: 10MB }
timeouts: { connect: 3s, sdk: 15s, http: 60s }
plugins:                            # the chain, in this order; omitted = the edge chain
  - name: request_id
  - name: firewall                  # optional
    allow: [0.0.0.0/0, "::/0"]
    deny: [203.0.113.0/24]
  - name: identity
    mode: session                   # session | trusted_front | none
    trusted_fronts: [10.0.0.0/8]    # trusted_front mode
    session:                        # session mode, §5
      apps:
        - { appid: wx1234567890abcdef, secret_env: WX_SECRET_OWNER, role: owner }
        - { appid: wxfedcba0987654321, secret_env: WX_SECRET_SHARED, role: shared }
      code2session_url: https://api.weixin.qq.com/sns/jscode2session
      token_keys_env: ANYGATE_TOKEN_KEYS   # comma-separated keys; the first signs
      token_ttl: 2h
  - name: rate_limit                # optional; per openid, else per client IP
    per_second: 100
  - name: routing
  - name: forwarded_for
    trusted_proxies: [127.0.0.1/32]
  - name: upstream_info
  - name: access_log
    path: stdout                    # or a file path
    include_openid: false
  - name: metrics
"#;

#[test]
fn the_spec_example_config_passes_check() {
    let yaml = SPEC_EXAMPLE
        .replace("  https: 0.0.0.0:443                # optional; needs tls on the domains served\n", "")
        .replace("    tls: { cert: certs/api.pem, key: certs/api.key }   # optional, PEM paths relative to the file\n", "");
    assert_ne!(
        yaml, SPEC_EXAMPLE,
        "the two lines to drop are still in the example"
    );
    let secrets = [
        ("WX_SECRET_OWNER", "owner-secret"),
        ("WX_SECRET_SHARED", "shared-secret"),
        ("LHINS_ABC123_SECRET", "origin-secret"),
        ("ANYGATE_TOKEN_KEYS", "0123456789abcdef0123456789abcdef0123"),
    ];
    let (code, out, err) = common::gateway::check_with_env(&yaml, &secrets);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 instances, 1 routes"), "{out}");
}

const GOOD: &str = r#"env: test-env
listen: { http: "127.0.0.1:8080" }
domains:
  - name: api.example.com
instances:
  - { id: a, address: "10.0.0.1" }
routes:
  - { domain: default, path: /api, instance: a }
"#;

#[test]
fn the_base_of_the_table_is_valid() {
    let (code, out, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 instances, 1 routes"), "{out}");
}

/// (what is broken, the file, line, column, a piece of the message)
const BAD: &[(&str, &str, usize, usize, &str)] = &[
    ("unknown top-level key", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ncolour: red\n", 3, 1, "unknown key `colour`"),
    ("unknown key in a route", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: default, path: /, instance: a, pathx: 1 }\n", 5, 46, "unknown field `pathx`"),
    ("unknown key in an instance", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances:\n  - id: a\n    address: 10.0.0.1\n    adress: 10.0.0.2\n", 6, 5, "unknown field `adress`"),
    ("duplicate instance id", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances:\n  - { id: a, address: 10.0.0.1 }\n  - { id: a, address: 10.0.0.2 }\n", 5, 11, "declared twice"),
    ("route naming an unknown instance", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: default, path: /, instance: b }\n", 5, 43, "instance `b`"),
    ("route naming an unknown domain", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: x.example.com, path: /, instance: a }\n", 5, 15, "domain `x.example.com`"),
    ("duplicate domain and path", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: default, path: /api, instance: a }\n  - { domain: default, path: /api/, instance: a }\n", 6, 5, "declared twice"),
    ("bad instance address", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances:\n  - id: a\n    address: \"10.0.0.1:99999\"\n", 5, 14, "address"),
    ("bad listen address", "env: e\nlisten:\n  http: 0.0.0.0\n", 3, 9, "invalid listen address"),
    ("bad CIDR", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes: [{ domain: \"*\", path: /, instance: a }]\nplugins:\n  - name: routing\n  - name: forwarded_for\n    trusted_proxies: [10.0.0.0/8, 300.1.1.1/8]\n", 8, 35, "invalid CIDR `300.1.1.1/8`"),
    ("bad duration", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ntimeouts:\n  sdk: 15 seconds\n", 4, 8, "invalid duration"),
    ("zero duration", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ntimeouts: { http: 0s }\n", 3, 19, "more than 0"),
    ("bad size", "env: e\nlisten: { http: \"127.0.0.1:1\" }\nlimits:\n  max_body: 10 MBs\n", 4, 13, "invalid size"),
    ("wrong type", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: default, path: /, instance: a, passthrough: sometimes }\n", 5, 59, "boolean"),
    ("unknown plugin", "env: e\nlisten: { http: \"127.0.0.1:1\" }\nplugins:\n  - name: routing\n  - name: teleport\n", 5, 11, "unknown plugin `teleport`"),
    ("unknown plugin setting", "env: e\nlisten: { http: \"127.0.0.1:1\" }\nplugins:\n  - name: routing\n  - name: forwarded_for\n    trusted: [10.0.0.0/8]\n", 6, 5, "unknown field `trusted`"),
    ("chain without routing", "env: e\nlisten: { http: \"127.0.0.1:1\" }\nplugins:\n  - name: request_id\n", 4, 5, "needs `routing`"),
    ("YAML syntax error", "env: e\nlisten: { http: \"127.0.0.1:1\"\nroutes: []\n", 3, 1, "YAML"),
    ("missing env", "listen: { http: \"127.0.0.1:1\" }\n", 1, 1, "`env` is required"),
    ("bad trigger path", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: default, path: api, instance: a }\n", 5, 30, "must start with `/`"),
    ("dotted trigger path", "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: 10.0.0.1 }]\nroutes:\n  - { domain: default, path: /a/../b, instance: a }\n", 5, 30, "`..`"),
];

#[test]
fn each_broken_config_fails_at_the_right_line() {
    for (what, yaml, line, col, needle) in BAD {
        let (code, _out, err) = check(yaml);
        assert_eq!(code, 1, "{what}: should fail\n{yaml}");
        let want = format!("anygate.yaml:{line}:{col}: ");
        let hit = err.lines().find(|l| l.contains(needle));
        let hit = hit.unwrap_or_else(|| panic!("{what}: no error mentions `{needle}`:\n{err}"));
        assert!(
            hit.contains(&want),
            "{what}: want {want}…{needle}, got:\n{err}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let yaml = "env: e\nlisten: { http: \"127.0.0.1:1\" }\nbogus: 1\ninstances:\n  - { id: a, address: 10.0.0.1 }\n  - { id: a, address: 10.0.0.2 }\nroutes:\n  - { domain: nowhere.example, path: /, instance: a }\n  - { domain: default, path: x, instance: a }\ntimeouts: { sdk: soon }\n";
    let (code, _out, err) = check(yaml);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("anygate.yaml:"))
        .collect();
    for (line, needle) in [
        (3, "bogus"),
        (6, "twice"),
        (8, "nowhere.example"),
        (9, "start with"),
        (10, "soon"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("anygate.yaml:{line}:")) && l.contains(needle)),
            "line {line} `{needle}` missing from:\n{err}"
        );
    }
    // sorted by position
    let numbers: Vec<usize> = lines
        .iter()
        .map(|l| l.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
}

#[test]
fn run_refuses_a_broken_config_with_the_same_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "env: e\nlisten: { http: \"127.0.0.1:1\" }\nroutes: [{ domain: default, path: /, instance: ghost }]\n").unwrap();
    let (code, _out, err) = common::gateway::run_anygate(
        &["run".as_ref(), "-c".as_ref(), path.as_os_str()],
        std::time::Duration::from_secs(20),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("broken.yaml:3:"), "{err}");
    assert!(err.contains("instance `ghost`"), "{err}");
}

/// Where the file names each variable: `(line, col, VAR)` of every `*_env: VAR` value.
fn env_settings(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or(line);
        let mut rest = code;
        let mut offset = 0;
        while let Some(at) = rest.find("_env:") {
            let after = &rest[at + 5..];
            let value = after.trim_start();
            let start = offset + at + 5 + (after.len() - value.len());
            let name: String = value
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((i + 1, start + 1, name));
            }
            offset += at + 5;
            rest = after;
        }
    }
    out
}

#[test]
fn edge_yaml_without_its_secrets_passes_check_with_a_warning_for_each() {
    let path = conf_dir().join("edge.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let named = env_settings(&text);
    assert!(named.len() >= 4, "edge.yaml names its secrets: {named:?}");
    let unset: Vec<&str> = SAMPLE_SECRETS.iter().map(|(k, _)| *k).collect();
    let args = ["check".as_ref(), "-c".as_ref(), path.as_os_str()];
    let timeout = std::time::Duration::from_secs(20);

    let (code, out, err) = common::gateway::run_anygate_env(&args, &[], &unset, timeout);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(": ok, {} warnings", named.len())),
        "{out}"
    );
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), named.len(), "{err}");
    for (line, col, var) in &named {
        let want =
            format!("edge.yaml:{line}:{col}: warning: environment variable `{var}` is not set");
        assert!(
            warnings.iter().any(|w| w.contains(&want)),
            "{want} missing from:\n{err}"
        );
    }

    // --strict: what `run` would say, every variable at once, exit 1.
    let strict = [
        "check".as_ref(),
        "--strict".as_ref(),
        "-c".as_ref(),
        path.as_os_str(),
    ];
    let (code, out, err) = common::gateway::run_anygate_env(&strict, &[], &unset, timeout);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!err.contains("warning:"), "{err}");
    for (line, col, var) in &named {
        let want = format!("edge.yaml:{line}:{col}: environment variable `{var}` is not set");
        assert!(err.contains(&want), "{want} missing from:\n{err}");
    }

    // With the variables set, --strict passes and nothing is warned about.
    let (code, out, err) = common::gateway::run_anygate_env(&strict, SAMPLE_SECRETS, &[], timeout);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok (chain:"), "{out}");
    assert!(!err.contains("warning:"), "{err}");

    // `run` stays fatal without them, and names them all.
    let run = [
        "run".as_ref(),
        "-t".as_ref(),
        "-c".as_ref(),
        path.as_os_str(),
    ];
    let (code, _out, err) = common::gateway::run_anygate_env(&run, &[], &unset, timeout);
    assert_eq!(code, 1, "{err}");
    for (_, _, var) in &named {
        assert!(err.contains(&format!("`{var}` is not set")), "{var}: {err}");
    }
}

#[test]
fn independent_errors_in_one_file_are_all_reported() {
    // Each line holds mistakes that used to hide one another: a route's domain, instance and
    // path; an instance's id, address and type; a plugin that fails to build after all that.
    let yaml = "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances:\n  - { id: \"a b\", address: \"10.0.0.1:99999\", upstream_type: \"\" }\n  - { id: ok, address: 10.0.0.2, origin_secret_env: ANYGATE_TEST_UNSET_SECRET }\nroutes:\n  - { domain: nowhere.example, path: api, instance: ghost }\n  - { domain: default, path: /x, instance: ok }\nplugins:\n  - name: identity\n    mode: trusted_front\n  - name: routing\n";
    let (code, _out, err) = check(yaml);
    assert_eq!(code, 1, "{err}");
    for (line, col, needle) in [
        (4, 11, "may only use letters"),
        (4, 27, "invalid port"),
        (4, 60, "cannot be sent as a header"),
        (7, 15, "domain `nowhere.example`"),
        (7, 38, "must start with `/`"),
        (7, 53, "instance `ghost`"),
        (11, 11, "needs `trusted_fronts"),
    ] {
        let want = format!("anygate.yaml:{line}:{col}: ");
        assert!(
            err.lines().any(|l| l.contains(&want) && l.contains(needle)),
            "{want}…{needle} missing from:\n{err}"
        );
    }
    // The unset secret is a warning in check, on its own line, and not an error.
    assert!(
        err.lines().any(|l| l.contains(
            "anygate.yaml:5:53: warning: environment variable `ANYGATE_TEST_UNSET_SECRET`"
        )),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("anygate.yaml:")).count(),
        8,
        "{err}"
    );
}
