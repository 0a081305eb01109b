//! The `access_log` plugin through the real gateway: one JSON line per request matching what
//! was sent, stdout by default, and a log that cannot be written (full disk, closed stdout,
//! a file turned read-only) never stops requests; the lost lines are counted.

mod common;
use common::prom::scrape_until;
use common::*;
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const HOST: &str = "test-env.service.tcloudbase.com";
const WAIT: Duration = Duration::from_secs(10);
const DROPPED: &str = "anygate_access_log_dropped_total";

/// A config with the given `access_log` settings (YAML flow mapping body).
fn yaml(up: &Upstream, access_log: &str) -> String {
    format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 2 }}
instances:
  - {{ id: lhins-a, address: "{}" }}
  - {{ id: lhins-down, address: "{}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
  - {{ domain: default, path: /down, instance: lhins-down }}
plugins:
  - name: request_id
  - name: routing
  - name: forwarded_for
  - name: upstream_info
  - name: metrics
  - {{ name: access_log, {access_log} }}
"#,
        up.addr(),
        closed_port()
    )
}

/// Polls `read` until it holds `n` JSON lines; returns them.
fn wait_lines(what: &str, n: usize, read: impl Fn() -> String) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = read();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
        if lines.len() >= n {
            return lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} lines:\n{text}",
            lines.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`
fn is_rfc3339_millis(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn each_request_is_one_json_line_that_matches_it() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&up, "path: access.log"));
    let log = gw.dir().join("access.log");
    let sent = [
        (
            Req::get("/api/x?token=secret")
                .host(HOST)
                .header("User-Agent", "test-agent/1.0"),
            200,
        ),
        (Req::post("/api/y").host(HOST).body("hello"), 200),
        (Req::get("/nope").host(HOST), 404),
        (Req::get("/down/z").host(HOST), 502),
        (
            Req::get("/sdk/path")
                .header("X-WX-SERVICE", "tcbanyservice")
                .header("X-Vm-Service", "lhins-a"),
            200,
        ),
    ];
    let mut answers = Vec::new();
    for (req, status) in &sent {
        let resp = send(gw.http, req).unwrap();
        assert_eq!(resp.status, *status, "{}", resp.text());
        answers.push(resp);
    }
    let logged = wait_lines("access log", sent.len(), || read(&log));
    assert_eq!(logged.len(), sent.len(), "one line per request");
    // Each line is written when its request ends, so two requests may log in either order:
    // pair them by request id.
    let lines: Vec<&Value> = answers
        .iter()
        .map(|resp| {
            let id = resp.header("X-Cloudbase-Request-Id").unwrap();
            let mut it = logged.iter().filter(|l| l["request_id"] == id);
            let line = it
                .next()
                .unwrap_or_else(|| panic!("no line for {id}: {logged:?}"));
            assert!(it.next().is_none(), "two lines for {id}");
            line
        })
        .collect();

    for (((req, status), resp), line) in sent.iter().zip(&answers).zip(&lines) {
        assert_eq!(line["status"], *status);
        assert_eq!(line["method"], req.method());
        assert_eq!(line["client_ip"], "127.0.0.1");
        assert_eq!(line["bytes_sent"], resp.body.len(), "{line}");
        assert!(is_rfc3339_millis(line["time"].as_str().unwrap()), "{line}");
        let took = line["duration_ms"].as_f64().unwrap();
        assert!(took > 0.0 && took < 10_000.0, "{line}");
        if let Some(up_ms) = line["upstream_timecost_ms"].as_f64() {
            assert!(up_ms <= took, "{line}");
        }
        assert!(
            line.get("openid").is_none(),
            "no openid unless asked: {line}"
        );
    }
    let (get, post, nope, down, sdk) = (lines[0], lines[1], lines[2], lines[3], lines[4]);
    // The client's path, without the query string.
    assert_eq!(get["path"], "/api/x");
    assert_eq!(get["host"], HOST);
    assert_eq!(get["user_agent"], "test-agent/1.0");
    assert_eq!(
        (&get["entry"], &get["route"], &get["instance"]),
        (&"http".into(), &"default/api".into(), &"lhins-a".into())
    );
    assert_eq!(get["upstream_status"], 200);
    assert!(get["upstream_timecost_ms"].as_f64().is_some());
    assert_eq!(get["error"], Value::Null);
    assert_eq!(post["path"], "/api/y");
    assert_eq!(post["user_agent"], Value::Null);

    assert_eq!(nope["error"], "INVALID_PATH");
    assert_eq!(
        (&nope["route"], &nope["instance"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(nope["entry"], "none");
    assert_eq!(nope["upstream_status"], Value::Null);

    assert_eq!(down["error"], "REQUEST_SERVICE_FAILED");
    assert_eq!(down["instance"], "lhins-down");
    assert_eq!(down["upstream_status"], Value::Null);
    assert_eq!(down["upstream_timecost_ms"], Value::Null);

    assert_eq!(
        (&sdk["entry"], &sdk["instance"]),
        (&"sdk".into(), &"lhins-a".into())
    );
    assert_eq!(sdk["path"], "/sdk/path");

    let s = common::prom::scrape(gw.admin);
    assert_eq!(s.sum(DROPPED), 0.0);
}

/// A request answered before it could be parsed (by Pingora's HTTP/1 parser, or by the
/// connection front for a header over `max_header`) still carries a request id: that id leads to
/// its access log line, its console record and its count, as any other request's does.
#[test]
fn requests_refused_before_parsing_are_logged_recorded_and_counted() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&format!(
        "{}limits: {{ max_header: 4KB }}\n",
        yaml(&up, "path: access.log")
    ));
    let log = gw.dir().join("access.log");
    let malformed =
        format!("POST /api/x HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: +5\r\n\r\nhello");
    let too_large = format!(
        "GET /api/x?token=secret HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let answers: Vec<Response> = [malformed, too_large]
        .iter()
        .map(|raw| send_raw(gw.http, raw.as_bytes()).unwrap())
        .collect();
    let logged = wait_lines("access log", answers.len(), || read(&log));
    assert_eq!(logged.len(), answers.len(), "one line per request");
    for resp in &answers {
        assert_eq!(resp.status, 400, "{}", resp.text());
        assert_eq!(resp.json()["code"], "INVALID_REQUEST", "{}", resp.text());
        let id = resp.header("X-Cloudbase-Request-Id").unwrap();
        let line = logged
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {logged:?}"));
        assert_eq!(line["status"], 400, "{line}");
        assert_eq!(line["error"], "INVALID_REQUEST", "{line}");
        assert_eq!(line["bytes_sent"], resp.body.len(), "{line}");
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
        assert_eq!(line["entry"], "none", "{line}");
        assert!(is_rfc3339_millis(line["time"].as_str().unwrap()), "{line}");
        // Nothing of an unparsed request is repeated: not its method, host or path.
        for field in ["method", "host", "path", "route", "instance", "user_agent"] {
            assert_eq!(line[field], Value::Null, "{field}: {line}");
        }
        let rec = send(gw.admin, &Req::get(&format!("/api/v1/requests/{id}"))).unwrap();
        assert_eq!(rec.status, 200, "{}", rec.text());
        let rec = rec.json();
        assert_eq!(rec["status"], 400, "{rec}");
        assert_eq!(rec["error"], "INVALID_REQUEST", "{rec}");
        assert_eq!(rec["clientIp"], "127.0.0.1", "{rec}");
        assert_eq!(
            (&rec["method"], &rec["path"]),
            (&"".into(), &"".into()),
            "{rec}"
        );
    }
    let s = common::prom::scrape(gw.admin);
    let labels = [("entry", "none"), ("route", "none"), ("instance", "none")];
    assert_eq!(
        s.value(
            "anygate_requests_total",
            &[labels[0], labels[1], labels[2], ("code", "400")]
        ),
        2.0
    );
    assert_eq!(up.count(), 0);
}

/// Behind a trusted proxy the line names the client the proxy forwarded, whether the request
/// reached an instance (the text `forwarded_for` wrote for `X-Real-IP` is reused) or not.
#[test]
fn the_client_behind_a_trusted_proxy_is_logged() {
    let up = Upstream::start(Behavior::Echo);
    let config = yaml(&up, "path: access.log").replace(
        "  - name: forwarded_for\n",
        "  - { name: forwarded_for, trusted_proxies: [127.0.0.1] }\n",
    );
    let gw = Gateway::start(&config);
    let forwarded = |path: &str| {
        Req::get(path)
            .host(HOST)
            .header("X-Forwarded-For", "2001:db8::7, 203.0.113.9")
    };
    let proxied = send(gw.http, &forwarded("/api/x")).unwrap();
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    assert_eq!(send(gw.http, &forwarded("/nope")).unwrap().status, 404);
    let lines = wait_lines("access log", 2, || read(&gw.dir().join("access.log")));
    for line in &lines {
        assert_eq!(line["client_ip"], "203.0.113.9", "{line}");
    }
    let direct = send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    assert_eq!(direct.status, 200);
    let lines = wait_lines("access log", 3, || read(&gw.dir().join("access.log")));
    assert_eq!(lines[2]["client_ip"], "127.0.0.1", "{}", lines[2]);
}

#[test]
fn include_openid_adds_the_field() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&up, "path: access.log, include_openid: true"));
    send(gw.http, &Req::get("/api/x").host(HOST)).unwrap();
    let lines = wait_lines("access log", 1, || read(&gw.dir().join("access.log")));
    // No identity plugin in this chain: the field is there, empty.
    assert_eq!(lines[0].get("openid"), Some(&Value::Null), "{}", lines[0]);
}

#[test]
fn the_edge_chain_logs_to_stdout() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&format!(
        "env: test-env\nlisten: {{ http: \"@HTTP@\" }}\ninstances:\n  - {{ id: lhins-a, address: \"{}\" }}\nroutes:\n  - {{ domain: default, path: /api, instance: lhins-a }}\n",
        up.addr()
    ));
    assert!(gw.stderr().contains(
        "chain [request_id, identity, routing, forwarded_for, upstream_info, metrics, access_log]"
    ));
    let resp = send(gw.http, &Req::get("/api/hello").host(HOST)).unwrap();
    let lines = wait_lines("stdout", 1, || gw.stdout());
    assert_eq!(
        lines[0]["request_id"],
        resp.header("X-Cloudbase-Request-Id").unwrap()
    );
    assert_eq!(lines[0]["path"], "/api/hello");
}

/// Sends `n` requests that must all succeed, then waits until `n` lines were dropped.
fn serve_while_dropping(http: SocketAddr, admin: SocketAddr, n: usize) {
    for i in 0..n {
        let resp = send(http, &Req::get(&format!("/api/{i}")).host(HOST)).unwrap();
        assert_eq!(resp.status, 200);
    }
    let s = scrape_until(admin, WAIT, "dropped lines counted", |s| {
        s.sum(DROPPED) >= n as f64
    });
    assert_eq!(s.value(DROPPED, &[("reason", "write_error")]), n as f64);
    assert_eq!(s.value(DROPPED, &[("reason", "queue_full")]), 0.0);
}

#[test]
fn a_full_disk_drops_lines_but_not_requests() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&up, "path: /dev/full"));
    serve_while_dropping(gw.http, gw.admin, 20);
    // Warned once, not once per line.
    assert!(gw.wait_output("cannot write", WAIT));
    assert_eq!(
        gw.stderr()
            .matches("access log /dev/full: cannot write")
            .count(),
        1
    );
}

#[test]
fn a_closed_stdout_drops_lines_but_not_requests() {
    let up = Upstream::start(Behavior::Echo);
    // Nobody reads stdout: every write gets EPIPE.
    let gw = Gateway::start_with_closed_stdout(&yaml(&up, "path: stdout"));
    serve_while_dropping(gw.http, gw.admin, 10);
    assert!(
        gw.wait_output("access log stdout: cannot write", WAIT),
        "{}",
        gw.stderr()
    );
}

#[test]
fn a_read_only_location_is_a_config_error() {
    let ro = read_only_location();
    let path = &ro.path;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "env: test-env\nlisten: {{ http: \"127.0.0.1:1\" }}\nplugins:\n  - name: routing\n  - name: access_log\n    path: {}\n",
        path.display()
    );
    let config = dir.path().join("anygate.yaml");
    std::fs::write(&config, text).unwrap();
    let (code, _out, err) = check_file(&config);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("anygate.yaml:6:11: plugin `access_log`: cannot open"),
        "{err}"
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn bad_settings_are_config_errors() {
    let (code, _out, err) = check(
        "env: e\nlisten: { http: \"127.0.0.1:1\" }\nplugins:\n  - name: routing\n  - name: access_log\n    paht: x.log\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("anygate.yaml:6:5: unknown field `paht`"),
        "{err}"
    );
    let (code, _out, err) = check(
        "env: e\nlisten: { http: \"127.0.0.1:1\" }\nplugins:\n  - name: routing\n  - name: access_log\n    path: \"@DIR@\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("anygate.yaml:6:11: plugin `access_log`:") && err.contains("is a directory"),
        "{err}"
    );
}

#[test]
fn a_log_file_turned_read_only_drops_lines_but_not_requests() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&yaml(&up, "path: access.log"));
    let log = gw.dir().join("access.log");
    send(gw.http, &Req::get("/api/before").host(HOST)).unwrap();
    wait_lines("before", 1, || read(&log));
    // `chattr +i` makes even root's writes through an open descriptor fail (EPERM).
    let Some(_guard) = Immutable::set(&log) else {
        eprintln!("SKIPPED: chattr +i is not available here (needs root and ext4/xfs/btrfs); the /dev/full test covers failing writes");
        return;
    };
    serve_while_dropping(gw.http, gw.admin, 5);
    drop(_guard);
    // Writable again: logging resumes by itself.
    let resp = send(gw.http, &Req::get("/api/after").host(HOST)).unwrap();
    let lines = wait_lines("after", 2, || read(&log));
    assert_eq!(lines.len(), 2, "the 5 lines in between were dropped");
    assert_eq!(
        lines[1]["request_id"],
        resp.header("X-Cloudbase-Request-Id").unwrap()
    );
    assert!(gw.wait_output("writing again", WAIT));
}

/// `chattr +i` on a path, undone on drop (else the temp dir cannot be removed).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A file in a directory nobody can write to, even root.
struct ReadOnly {
    path: PathBuf,
    // Dropped in this order: the directory is made writable again before it is removed.
    _guard: Option<Immutable>,
    _dir: tempfile::TempDir,
}

/// A directory without write permission; for root, one made immutable with `chattr +i`;
/// failing both, /sys (read-only for everyone).
fn read_only_location() -> ReadOnly {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let writable = |d: &Path| {
        let probe = d.join("probe");
        let ok = File::create(&probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    };
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let guard = if writable(&ro) {
        Immutable::set(&ro)
    } else {
        None
    };
    let path = if writable(&ro) {
        PathBuf::from("/sys/anygate-test-access.log")
    } else {
        ro.join("access.log")
    };
    ReadOnly {
        path,
        _guard: guard,
        _dir: dir,
    }
}
