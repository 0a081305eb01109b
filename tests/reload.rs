//! SPEC §9 hot reload through the real gateway: the three ways a file changes and SIGHUP,
//! invalid files, reloads under load, snapshot consistency, and Pingora's graceful upgrade.

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const TEMPLATE: &str = r#"
env: test-env
listen: { http: "@HTTP@", admin: "@ADMIN@" }
server:
  threads: 2
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  upgrade_sock: "@DIR@/upgrade.sock"
  pid_file: "@DIR@/anygate.pid"
instances:
  - { id: i1, address: "UP", upstream_type: KIND }
routes:
  - { domain: "*", path: /v, instance: i1, passthrough: true }
  - { domain: "*", path: /only-KIND, instance: i1, passthrough: true }
"#;

/// Config `kind` ("A", "B", ...): `/v` and `/only-<kind>` go to the upstream, and every
/// answer says which config served it through `X-Cloudbase-Upstream-Type`.
fn config(kind: &str, up: SocketAddr) -> String {
    TEMPLATE
        .replace("UP", &up.to_string())
        .replace("KIND", kind)
}

fn kind_of(gw: &Gateway, path: &str) -> (u16, String) {
    let resp = send(gw.http, &Req::get(path).host("h")).unwrap();
    let kind = resp
        .header("X-Cloudbase-Upstream-Type")
        .unwrap_or("?")
        .to_string();
    (resp.status, kind)
}

/// Polls until `/only-<kind>` is served by config `kind`; returns how long that took.
fn time_until_live(gw: &Gateway, kind: &str, since: Instant) -> Duration {
    let path = format!("/only-{kind}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if kind_of(gw, &path) == (200, kind.to_string()) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "config {kind} never went live:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn count(gw: &Gateway, needle: &str) -> usize {
    gw.stderr().matches(needle).count()
}

/// Polls (bounded) until `needle` has appeared `n` times in the log.
fn wait_count(gw: &Gateway, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(gw, needle) < n {
        assert!(
            Instant::now() < deadline,
            "`{needle}` never reached {n}:\n{}",
            gw.stderr()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

const APPLIED: &str = "reloaded: generation";
const REFUSED: &str = "NOT reloaded";

fn write_by_rename(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn in_place_write_is_live_within_a_second() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&config("A", up.addr()));
    assert_eq!(kind_of(&gw, "/only-A"), (200, "A".into()));
    for kind in ["B", "A", "C"] {
        let t = Instant::now();
        gw.write_config(&config(kind, up.addr()));
        let took = time_until_live(&gw, kind, t);
        eprintln!("in-place write -> live in {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert_eq!(kind_of(&gw, "/only-A").0, 404, "the old route is gone");
}

#[test]
fn replace_by_rename_is_live_within_a_second() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&config("A", up.addr()));
    for kind in ["B", "C", "A"] {
        let t = Instant::now();
        write_by_rename(
            gw.dir(),
            "anygate.yaml",
            &gw.render(&config(kind, up.addr())),
        );
        let took = time_until_live(&gw, kind, t);
        eprintln!("rename -> live in {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

/// Kubernetes mounts a ConfigMap as `anygate.yaml -> ..data/anygate.yaml`, `..data ->
/// ..<timestamp>/`, and updates it by pointing `..data` at a new directory in one rename.
#[test]
fn kubernetes_configmap_symlink_swap_is_live_within_a_second() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&config("A", up.addr()));
    let dir = gw.dir().to_path_buf();
    let publish = |version: &str, kind: &str| {
        let versioned = dir.join(format!("..{version}"));
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(
            versioned.join("anygate.yaml"),
            gw.render(&config(kind, up.addr())),
        )
        .unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
    };
    // First turn the plain file into the ConfigMap layout (itself a rename over the file).
    let t = Instant::now();
    publish("2026_11_23_01", "B");
    std::os::unix::fs::symlink("..data/anygate.yaml", dir.join("anygate.yaml.link")).unwrap();
    std::fs::rename(dir.join("anygate.yaml.link"), dir.join("anygate.yaml")).unwrap();
    let took = time_until_live(&gw, "B", t);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Then the kubelet's updates: swap `..data`, remove the old directory.
    for (i, kind) in ["C", "A", "D"].iter().enumerate() {
        let t = Instant::now();
        publish(&format!("2026_11_23_0{}", i + 2), kind);
        let took = time_until_live(&gw, kind, t);
        eprintln!("..data swap -> live in {took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        std::fs::remove_dir_all(dir.join(format!("..2026_11_23_0{}", i + 1))).unwrap();
    }
}

#[test]
fn sighup_reloads_at_once() {
    let up = Upstream::start(Behavior::Echo);
    // --no-watch: only SIGHUP can have made the change live.
    let gw = Gateway::start_full(&config("A", up.addr()), &[], &["--no-watch"]);
    gw.write_config(&config("B", up.addr()));
    let stays = Instant::now() + Duration::from_millis(300);
    while Instant::now() < stays {
        assert_eq!(
            kind_of(&gw, "/v"),
            (200, "A".into()),
            "changed without SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    gw.signal("HUP");
    let took = time_until_live(&gw, "B", t);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(gw.stderr().contains("SIGHUP: reloading"));
    // SIGHUP recompiles even an unchanged file (e.g. to pick up rotated certificates).
    gw.signal("HUP");
    wait_count(&gw, APPLIED, 2);
}

/// (what is wrong, the file, where the error must point, a piece of the message)
fn invalid_files(up: SocketAddr) -> Vec<(&'static str, String, &'static str, &'static str)> {
    let good = config("B", up);
    vec![
        (
            "syntax",
            good.replace("routes:", "routes: [\n  oops"),
            "anygate.yaml:",
            "YAML",
        ),
        (
            "unknown key",
            good.replace("env: test-env", "env: test-env\ncolour: red"),
            "anygate.yaml:3:1:",
            "unknown key `colour`",
        ),
        (
            "unknown plugin",
            format!("{good}plugins:\n  - name: routing\n  - name: teleport\n"),
            "anygate.yaml:17:11:",
            "unknown plugin `teleport`",
        ),
        (
            "missing secret variable",
            good.replace(
                "upstream_type: B }",
                "upstream_type: B, origin_secret_env: ANYGATE_TEST_NOT_SET }",
            ),
            "anygate.yaml:11:",
            "ANYGATE_TEST_NOT_SET",
        ),
        (
            "unknown instance",
            good.replace("path: /v, instance: i1", "path: /v, instance: i9"),
            "anygate.yaml:13:",
            "instance `i9`",
        ),
        (
            "no env",
            good.replace("env: test-env", ""),
            "anygate.yaml:1:1:",
            "`env` is required",
        ),
    ]
}

#[test]
fn invalid_files_change_nothing_and_are_reported() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&config("A", up.addr()));
    for (n, (what, text, at, needle)) in invalid_files(up.addr()).into_iter().enumerate() {
        gw.write_config(&text);
        wait_count(&gw, REFUSED, n + 1);
        let log = gw.stderr();
        let report = log.rsplit(REFUSED).next().unwrap_or_default();
        assert!(
            report.lines().any(|l| l.contains(at) && l.contains(needle)),
            "{what}: want `{at}` … `{needle}` in:\n{report}"
        );
        assert_eq!(
            kind_of(&gw, "/only-A"),
            (200, "A".into()),
            "{what}: the old routes serve"
        );
        assert_eq!(
            kind_of(&gw, "/only-B").0,
            404,
            "{what}: nothing of the new file"
        );
    }
    assert_eq!(count(&gw, APPLIED), 0);
    // SPEC §9: the failures are counted, the generation stays.
    let m = common::prom::scrape(gw.admin);
    let n = invalid_files(up.addr()).len() as f64;
    assert_eq!(
        m.value("anygate_config_reloads_total", &[("result", "failure")]),
        n
    );
    assert_eq!(
        m.value("anygate_config_reloads_total", &[("result", "success")]),
        0.0
    );
    assert_eq!(m.value("anygate_config_generation", &[]), 1.0);
    // An empty file is most likely half-written: it is waited out, not applied or counted.
    gw.write_config("");
    assert!(gw.wait_output("is empty (being written?)", Duration::from_secs(10)));
    assert_eq!(kind_of(&gw, "/only-A"), (200, "A".into()));
    // A good file after all that goes live.
    let t = Instant::now();
    gw.write_config(&config("B", up.addr()));
    time_until_live(&gw, "B", t);
    let m = common::prom::scrape(gw.admin);
    assert_eq!(
        m.value("anygate_config_reloads_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(m.value("anygate_config_generation", &[]), 2.0);
    assert!(m.value("anygate_config_last_reload_success_timestamp_seconds", &[]) > 1.7e9);
}

#[test]
fn listener_changes_wait_for_a_restart() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&config("A", up.addr()));
    let other = free_port(std::net::Ipv4Addr::LOCALHOST.into());
    let moved = config("B", up.addr())
        .replace("\"@HTTP@\"", &format!("\"127.0.0.1:{other}\""))
        .replace("threads: 2", "threads: 1");
    let t = Instant::now();
    gw.write_config(&moved);
    // Everything else in the file is applied; the old listener keeps serving.
    time_until_live(&gw, "B", t);
    let log = gw.stderr();
    assert!(log.contains("listener addresses changed"), "{log}");
    assert!(log.contains("`server` settings changed"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", other)).is_err());
}

#[test]
fn fifty_reloads_under_load_fail_no_request() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&config("A", up.addr()));
    let load = Load::start(
        gw.http,
        8,
        |i| Req::get(if i % 2 == 0 { "/v" } else { "/only-A" }).host("h"),
        |resp| {
            let kind = resp.header("X-Cloudbase-Upstream-Type").unwrap_or("?");
            match (resp.status, kind) {
                (200, "A" | "B") => {
                    let path = Seen::of(resp).path;
                    match (path.as_str(), kind) {
                        ("/v", _) | ("/only-A", "A") => Ok(format!("{path} by {kind}")),
                        _ => Err(format!("{path} served by config {kind}")),
                    }
                }
                // config B has no /only-A
                (404, "-") if resp.json()["code"] == "INVALID_PATH" => {
                    Ok("/only-A 404 (config B)".into())
                }
                _ => Err(format!(
                    "unexpected {} {kind}: {}",
                    resp.status,
                    resp.text()
                )),
            }
        },
    );
    let invalid = invalid_files(up.addr());
    let (mut valid, mut refused) = (0, 0);
    for i in 0..60 {
        if i % 10 == 9 {
            let before = count(&gw, REFUSED);
            gw.write_config(&invalid[i / 10 % invalid.len()].1);
            refused += 1;
            wait_count(&gw, REFUSED, before + 1);
        } else {
            let kind = if valid % 2 == 0 { "B" } else { "A" };
            valid += 1;
            let t = Instant::now();
            gw.write_config(&config(kind, up.addr()));
            // The effect, not the log: the file must have gone live.
            let deadline = t + Duration::from_secs(10);
            while kind_of(&gw, "/v") != (200, kind.to_string()) {
                assert!(
                    Instant::now() < deadline,
                    "change {i} ({kind}) never went live:\n{}",
                    gw.stderr()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    let report = load.finish();
    eprintln!("{report:?}");
    assert!(
        report.failures.is_empty(),
        "{} failures, e.g. {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert_eq!(
        report.retried, 0,
        "no connection was closed under the clients"
    );
    for kind in [
        "/v by A",
        "/v by B",
        "/only-A by A",
        "/only-A 404 (config B)",
    ] {
        assert!(
            report.by_kind.get(kind).copied().unwrap_or(0) > 0,
            "never saw {kind}: {:?}",
            report.by_kind
        );
    }
    assert_eq!((valid, refused), (54, 6));
    assert!(count(&gw, APPLIED) >= 54, "{}", count(&gw, APPLIED));
}

#[test]
fn a_request_keeps_the_snapshot_it_started_with() {
    let up = Upstream::start(Behavior::Echo);
    let slow = Upstream::start(Behavior::Delay(Duration::from_millis(1500)));
    let with_slow = |kind: &str| {
        format!(
            "{}  - {{ domain: \"*\", path: /slow, instance: s }}\n",
            config(kind, up.addr()).replace(
                "instances:\n",
                &format!(
                    "instances:\n  - {{ id: s, address: \"{}\", upstream_type: slow-{kind} }}\n",
                    slow.addr()
                )
            )
        )
    };
    let gw = Gateway::start(&with_slow("A"));
    let http = gw.http;
    let pending = std::thread::spawn(move || send(http, &Req::get("/slow/x").host("h")).unwrap());
    slow.wait_requests(1, Duration::from_secs(10));
    // While the request is with the upstream: a new config where /slow is gone.
    gw.write_config(&config("B", up.addr()));
    wait_count(&gw, APPLIED, 1);
    assert_eq!(
        kind_of(&gw, "/slow/x").0,
        404,
        "new requests see the new routes"
    );
    let resp = pending.join().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("X-Cloudbase-Upstream-Type"),
        Some("slow-A"),
        "the old snapshot, start to end"
    );
    assert_eq!(Seen::of(&resp).target, "/x");
    assert_eq!(slow.count(), 1);
}

#[test]
fn ten_thousand_route_reload_latency() {
    let up = Upstream::start(Behavior::Echo);
    let big = |kind: &str| {
        let mut s = config(kind, up.addr());
        for i in 0..10_000 {
            s.push_str(&format!(
                "  - {{ domain: \"*\", path: /svc{i}/v1, instance: i1 }}\n"
            ));
        }
        s
    };
    let gw = Gateway::start(&big("A"));
    let t = Instant::now();
    gw.write_config(&big("B"));
    let took = time_until_live(&gw, "B", t);
    let log = gw.stderr();
    let compile = log
        .lines()
        .find(|l| l.contains(APPLIED))
        .unwrap_or_default();
    // Reported, not asserted: the benchmark tracks it.
    eprintln!("10,000 routes: write -> live {took:?}; {compile}");
    assert_eq!(kind_of(&gw, "/svc9999/v1").0, 200);
}

#[test]
fn graceful_upgrade_fails_no_request() {
    let up = Upstream::start(Behavior::Echo);
    let mut old = Gateway::start(&config("A", up.addr()));
    let load = Load::start(
        old.http,
        6,
        |_| Req::get("/v").host("h"),
        |resp| match resp.status {
            200 => Ok("ok".into()),
            s => Err(format!("status {s}: {}", resp.text())),
        },
    );
    std::thread::sleep(Duration::from_millis(300)); // let the load get going
    let sock = old.dir().join("upgrade.sock");
    let new = Process::spawn(&["run", "-u", "-c", old.config_path().to_str().unwrap()]);
    // The new process waits for the listeners on the upgrade socket.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "no upgrade socket: {}",
            new.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    old.signal("QUIT");
    let out = new.wait_stderr("listening for HTTP");
    assert!(out.contains("listening for HTTP"));
    // The old process hands over, drains and exits; the new one serves on the same port.
    assert!(
        old.wait_exit(Duration::from_secs(30)).is_some(),
        "the old process did not exit"
    );
    let after = send(old.http, &Req::get("/v").host("h")).unwrap();
    assert_eq!(after.status, 200);
    std::thread::sleep(Duration::from_millis(300)); // keep the load on the new process a moment
    let report = load.finish();
    eprintln!("{report:?}");
    assert!(
        report.failures.is_empty(),
        "{:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(
        report.by_kind.get("ok").copied().unwrap_or(0) > 100,
        "{report:?}"
    );
    drop(new);
}
