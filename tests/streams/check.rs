//! `anygate check` on `streams:`: every mistake reported at once, as `file:line:col`.

use crate::common::gateway::check;

const BAD: &str = r#"env: test-env
listen: { http: "@HTTP@", admin: "@ADMIN@" }
instances:
  - { id: up-a, address: "127.0.0.1:1" }
routes:
  - { domain: "*", path: /, instance: up-a }
streams:
  - name: on-http
    listen: "@HTTP@"
    instance: up-a
    port: 6379
    allow: [127.0.0.1]
  - name: a
    listen: 127.0.0.1:7001
    instance: nowhere
    port: 0
    allow: []
  - name: b
    listen: 0.0.0.0:7001
    instance: up-a
    port: 70000
    max_connections: 0
  - name: c
    listen: 127.0.0.1:7002
    instance: up-a
    port: 22
  - name: d
    listen: 127.0.0.1:7003
    instance: up-a
    port: 22
    allow: [127.0.0.1]
    idle_timeout: ten minutes
  - name: e
    listen: 127.0.0.1:7004
    instance: up-a
    port: 22
    allow: [127.0.0.1]
    proxy_protocol: v1
  - name: f
    listen: 127.0.0.1:7005
    instance: up-a
    port: 22
    allow: [127.0.0.1]
    colour: blue
  - name: g
    listen: "127.0.0.1"
    instance: up-a
    port: 22
    allow: [10.0.0.0/33]
  - name: a
    listen: "[::1]"
    instance: up-a
    port: 22
    allow: ["::1"]
"#;

#[test]
fn every_stream_mistake_is_reported_with_its_position() {
    let (code, out, err) = check(BAD);
    assert_eq!(code, 1, "{out}{err}");
    eprintln!("{err}");
    let want = [
        ("9:13", "clashes with `listen.http`"),
        (
            "15:15",
            "instance `nowhere`, which is not under `instances`",
        ),
        ("16:11", "port `0` is not a TCP port"),
        ("17:12", "`allow` is empty"),
        ("18:5", "a stream needs `allow`"),
        ("19:13", "clashes with stream `a`"),
        ("21:11", "port `70000` is not a TCP port"),
        ("22:22", "`max_connections` must be at least 1"),
        ("23:5", "a stream needs `allow`"),
        ("32:19", "invalid duration `ten minutes`"),
        ("38:21", "unknown variant `v1`"),
        ("44:5", "unknown field `colour`"),
        ("49:13", "invalid CIDR `10.0.0.0/33`"),
        ("50:11", "stream `a` is declared twice"),
        ("51:13", "invalid listen address `[::1]`"),
    ];
    for (at, msg) in want {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("anygate.yaml:{at}: ")) && l.contains(msg)),
            "expected `{at}: ...{msg}...` in:\n{err}"
        );
    }
}

#[test]
fn the_spec_example_passes_check() {
    let (code, out, err) = check(
        r#"env: test-env
listen: { http: "@HTTP@", admin: "@ADMIN@" }
instances:
  - { id: lhins-abc123, address: 10.0.0.5 }
routes:
  - { domain: "*", path: /, instance: lhins-abc123 }
streams:
  - name: redis-a                   # metric label
    listen: 0.0.0.0:6380
    instance: lhins-abc123
    port: 6379                      # on the instance's address
    allow: [203.0.113.0/24]         # required; connections from elsewhere are closed at once
    max_connections: 1000           # further connections are closed at once
    idle_timeout: 10m
    proxy_protocol: v2              # optional: PROXY v2 header to the instance
"#,
    );
    assert_eq!(code, 0, "{out}{err}");
}
