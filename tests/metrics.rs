//! SPEC §10 through the real gateway: exact counts after a known mix of requests, a scrape
//! that `promtool` accepts, and a real Prometheus server scraping anygate with
//! `conf/prometheus.yml`.

mod common;
use common::prom::{parse, scrape, scrape_until};
use common::*;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOST: &str = "test-env.service.tcloudbase.com";
const WAIT: Duration = Duration::from_secs(10);

/// Two echo instances on two routes, and one whose port is closed.
fn gateway() -> (Gateway, Upstream, Upstream) {
    let a = Upstream::start(Behavior::Echo);
    let b = Upstream::start(Behavior::Echo);
    let yaml = format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 2 }}
instances:
  - {{ id: lhins-a, address: "{}" }}
  - {{ id: lhins-b, address: "{}" }}
  - {{ id: lhins-down, address: "{}" }}
routes:
  - {{ domain: default, path: /a, instance: lhins-a }}
  - {{ domain: default, path: /b, instance: lhins-b }}
  - {{ domain: default, path: /down, instance: lhins-down }}
"#,
        a.addr(),
        b.addr(),
        closed_port()
    );
    (Gateway::start(&yaml), a, b)
}

fn sdk(id: &str) -> Req {
    Req::get("/x")
        .header("X-WX-SERVICE", "tcbanyservice")
        .header("X-Vm-Service", id)
}

/// Sends the mix and checks each answer: 3+1 on lhins-a, 2 on lhins-b, 3 404s, one 502.
fn send_mix(gw: &Gateway) {
    let mut expect: Vec<(Req, u16)> = Vec::new();
    for i in 0..3 {
        expect.push((Req::get(&format!("/a/{i}")).host(HOST), 200));
    }
    for i in 0..2 {
        expect.push((Req::get(&format!("/b/{i}")).host(HOST), 200));
    }
    expect.push((Req::get("/nope").host(HOST), 404));
    expect.push((Req::get("/other").host(HOST), 404));
    expect.push((sdk("lhins-nope"), 404));
    expect.push((Req::get("/down/x").host(HOST), 502));
    expect.push((sdk("lhins-a"), 200));
    for (req, status) in &expect {
        let resp = send(gw.http, req).unwrap();
        assert_eq!(resp.status, *status, "{} {}", req.target(), resp.text());
    }
}

const REQUESTS: &str = "anygate_requests_total";
const DURATION: &str = "anygate_request_duration_seconds";
const UPSTREAM: &str = "anygate_upstream_duration_seconds";

#[test]
fn a_known_mix_gives_exact_counts() {
    let (gw, _a, _b) = gateway();
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    send_mix(&gw);
    // The logging phase runs after the answer is sent: wait until all ten are recorded.
    let s = scrape_until(gw.admin, WAIT, "10 requests recorded", |s| {
        s.sum(REQUESTS) == 10.0 && s.value("anygate_requests_in_flight", &[]) == 0.0
    });

    let req = |entry, route, instance, code| {
        s.value(
            REQUESTS,
            &[
                ("entry", entry),
                ("route", route),
                ("instance", instance),
                ("code", code),
            ],
        )
    };
    assert_eq!(req("http", "default/a", "lhins-a", "200"), 3.0);
    assert_eq!(req("http", "default/b", "lhins-b", "200"), 2.0);
    assert_eq!(req("none", "none", "none", "404"), 3.0);
    assert_eq!(req("http", "default/down", "lhins-down", "502"), 1.0);
    assert_eq!(req("sdk", "none", "lhins-a", "200"), 1.0);
    assert_eq!(s.find(REQUESTS, &[]).len(), 5, "no other series");

    // The request histogram: one count per request, by entry, route and instance.
    let count = format!("{DURATION}_count");
    for (entry, route, instance, n) in [
        ("http", "default/a", "lhins-a", 3.0),
        ("http", "default/b", "lhins-b", 2.0),
        ("none", "none", "none", 3.0),
        ("http", "default/down", "lhins-down", 1.0),
        ("sdk", "none", "lhins-a", 1.0),
    ] {
        let labels = [("entry", entry), ("route", route), ("instance", instance)];
        assert_eq!(s.value(&count, &labels), n, "{labels:?}");
        let mut inf = labels.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(s.value(&format!("{DURATION}_bucket"), &inf), n);
        // Every request took less than a minute: the 60 s bucket holds them all.
        inf.pop();
        inf.push(("le", "60"));
        assert_eq!(s.value(&format!("{DURATION}_bucket"), &inf), n);
        assert!(s.value(&format!("{DURATION}_sum"), &labels) > 0.0);
    }
    let buckets = s.find(
        &format!("{DURATION}_bucket"),
        &[("route", "default/a"), ("instance", "lhins-a")],
    );
    let les: Vec<&str> = buckets
        .iter()
        .map(|b| b.labels.iter().find(|(k, _)| k == "le").unwrap().1.as_str())
        .collect();
    assert_eq!(les.first(), Some(&"0.0005"), "{les:?}");
    assert_eq!(les.len(), 17, "16 buckets and +Inf: {les:?}");

    // The upstream histogram counts answers from instances; a refused connection has none.
    let up = format!("{UPSTREAM}_count");
    assert_eq!(s.value(&up, &[("instance", "lhins-a")]), 4.0);
    assert_eq!(s.value(&up, &[("instance", "lhins-b")]), 2.0);
    // ... but its series exists from the start (SPEC §10), at zero.
    assert_eq!(s.get(&up, &[("instance", "lhins-down")]), Some(0.0));
    assert_eq!(s.find(&up, &[]).len(), 3);

    let errors = "anygate_upstream_errors_total";
    assert_eq!(
        s.value(
            errors,
            &[("instance", "lhins-down"), ("kind", "connect_refused")]
        ),
        1.0
    );
    assert_eq!(s.sum(errors), 1.0);

    // Reload metrics: the first load is generation 1, no reloads yet.
    assert_eq!(s.value("anygate_config_generation", &[]), 1.0);
    let reloads = "anygate_config_reloads_total";
    assert_eq!(s.value(reloads, &[("result", "success")]), 0.0);
    assert_eq!(s.value(reloads, &[("result", "failure")]), 0.0);
    let loaded = s.value("anygate_config_last_reload_success_timestamp_seconds", &[]);
    let b = before.as_secs_f64();
    assert!(loaded > b - 120.0 && loaded <= b + 1.0, "{loaded} vs {b}");

    // The process collector.
    assert!(s.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(s.value("process_open_fds", &[]) > 0.0);
    assert!(s.get("process_cpu_seconds_total", &[]).is_some());
    assert!(s.text.contains("# TYPE anygate_requests_total counter"));
    assert!(s
        .text
        .contains("# TYPE anygate_request_duration_seconds histogram"));

    // Counters only grow: one more success moves exactly one series.
    assert_eq!(
        send(gw.http, &Req::get("/a/again").host(HOST))
            .unwrap()
            .status,
        200
    );
    let s2 = scrape_until(gw.admin, WAIT, "11th request", |s| s.sum(REQUESTS) == 11.0);
    assert_eq!(
        s2.value(
            REQUESTS,
            &[
                ("entry", "http"),
                ("route", "default/a"),
                ("instance", "lhins-a"),
                ("code", "200")
            ]
        ),
        4.0
    );
}

#[test]
fn in_flight_counts_requests_being_served() {
    let slow = Upstream::start(Behavior::Delay(Duration::from_secs(2)));
    let gw = Gateway::start(&format!(
        "env: test-env\nlisten: {{ http: \"@HTTP@\", admin: \"@ADMIN@\" }}\ninstances:\n  - {{ id: lhins-slow, address: \"{}\" }}\nroutes:\n  - {{ domain: default, path: /, instance: lhins-slow }}\n",
        slow.addr()
    ));
    let addr = gw.http;
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || send(addr, &Req::get("/x").host(HOST)).unwrap().status))
        .collect();
    scrape_until(gw.admin, WAIT, "3 in flight", |s| {
        s.value("anygate_requests_in_flight", &[]) == 3.0
    });
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    scrape_until(gw.admin, WAIT, "none in flight", |s| {
        s.value("anygate_requests_in_flight", &[]) == 0.0 && s.sum(REQUESTS) == 3.0
    });
}

/// A reload that removes a route and an instance removes their series too (a config that
/// keeps adding and removing routes must not grow the exposition, or the process, without
/// bound); what stays keeps its counts.
#[test]
fn series_of_removed_routes_and_instances_go_with_them() {
    let (dur, ups) = (format!("{DURATION}_count"), format!("{UPSTREAM}_count"));
    let (gw, a, _b) = gateway();
    send_mix(&gw);
    let before = scrape(gw.admin);
    assert!(!before.find(&dur, &[("route", "default/b")]).is_empty());
    assert!(!before.find(&ups, &[("instance", "lhins-b")]).is_empty());
    assert!(!before
        .find(
            "anygate_upstream_errors_total",
            &[("instance", "lhins-down")]
        )
        .is_empty());

    gw.write_config(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 2 }}
instances:
  - {{ id: lhins-a, address: "{}" }}
routes:
  - {{ domain: default, path: /a, instance: lhins-a }}
  - {{ domain: default, path: /a2, instance: lhins-a }}
"#,
        a.addr()
    ));
    let after = scrape_until(gw.admin, WAIT, "generation 2", |s| {
        s.value("anygate_config_generation", &[]) == 2.0
    });
    for (name, label, value) in [
        (REQUESTS, "route", "default/b"),
        (dur.as_str(), "route", "default/b"),
        (dur.as_str(), "route", "default/down"),
        (REQUESTS, "instance", "lhins-b"),
        (dur.as_str(), "instance", "lhins-b"),
        (ups.as_str(), "instance", "lhins-b"),
        ("anygate_upstream_errors_total", "instance", "lhins-down"),
    ] {
        assert!(
            after.find(name, &[(label, value)]).is_empty(),
            "{name}{{{label}={value}}} is still there:\n{}",
            after.text
        );
    }
    // Kept: the route and instance that remain, the new route at zero, and `none`.
    let req = |route: &str, code: &str| {
        after.value(
            REQUESTS,
            &[
                ("entry", "http"),
                ("route", route),
                ("instance", "lhins-a"),
                ("code", code),
            ],
        )
    };
    assert_eq!(req("default/a", "200"), 3.0);
    assert!(!after.find(&dur, &[("route", "default/a2")]).is_empty());
    assert!(!after.find(REQUESTS, &[("route", "none")]).is_empty());
}

/// `promtool`, from Debian's `prometheus` package (`.ci/run` installs it).
fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{name}` is not installed: apt-get install -y prometheus (bash .ci/run does it)"
    );
    Command::new(name)
}

#[test]
fn promtool_accepts_the_scrape() {
    let (gw, _a, _b) = gateway();
    send_mix(&gw);
    let s = scrape_until(gw.admin, WAIT, "10 requests", |s| s.sum(REQUESTS) == 10.0);
    let mut child = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(s.text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.text
    );
}

/// A Prometheus server, killed on drop (before the directory holding its data goes).
struct Prometheus {
    child: Child,
}

impl Prometheus {
    /// How the server ended, if it did.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Starts Prometheus on a free loopback port and waits until it answers. A port found free
/// can be taken before Prometheus binds it (the tests open many loopback connections, whose
/// source ports come from the same range): when Prometheus exits saying so, it is started
/// again on another port, up to five times.
fn start_prometheus(dir: &std::path::Path, config: &std::path::Path) -> (Prometheus, SocketAddr) {
    let log_path = dir.join("prometheus.log");
    for _ in 0..5 {
        let prom = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        );
        let data = dir.join("data");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Prometheus { child };
        // Bounded wait for its readiness endpoint, or its exit.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = send(prom, &Req::get("/-/ready").host("localhost"));
            if ready.is_ok_and(|r| r.status == 200) {
                return (server, prom);
            }
            if let Some(status) = server.exited() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                assert!(
                    text.contains("address already in use"),
                    "Prometheus exited ({status}); its log:\n{text}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not get ready on {prom}; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("Prometheus found its port taken five times in a row");
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `conf/prometheus.yml` with its target moved to `admin` and a 1 s scrape interval.
fn prometheus_config(admin: SocketAddr) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/prometheus.yml");
    let text = std::fs::read_to_string(path).unwrap();
    for needle in ["127.0.0.1:9091", "scrape_interval: 15s"] {
        assert!(text.contains(needle), "{path} no longer has `{needle}`");
    }
    text.replace("127.0.0.1:9091", &admin.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query, as JSON.
fn query(prom: SocketAddr, q: &str) -> Option<serde_json::Value> {
    let target = format!("/api/v1/query?query={}", encode(q));
    let resp = send(prom, &Req::get(&target).host("localhost")).ok()?;
    (resp.status == 200).then(|| resp.json())
}

#[test]
fn a_real_prometheus_scrapes_anygate() {
    let (gw, _a, _b) = gateway();
    send_mix(&gw);
    let dir = tempfile::Builder::new()
        .prefix("anygate-prometheus-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(gw.admin)).unwrap();
    let (mut server, prom) = start_prometheus(dir.path(), &config);
    let log_path = dir.path().join("prometheus.log");

    // Bounded wait: Prometheus starts, scrapes every second, and answers the query.
    let deadline = Instant::now() + Duration::from_secs(90);
    let found = loop {
        if let Some(v) = query(prom, "anygate_requests_total") {
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            if !result.is_empty() {
                break result;
            }
        }
        let exited = server.exited();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "Prometheus never returned anygate_requests_total ({}); its log:\n{}",
            exited.map_or("still running".to_string(), |e| format!("it exited: {e}")),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let ok = found
        .iter()
        .find(|r| r["metric"]["route"] == "default/a" && r["metric"]["code"] == "200")
        .unwrap_or_else(|| panic!("no default/a series in {found:?}"));
    assert_eq!(ok["metric"]["job"], "anygate");
    assert_eq!(ok["metric"]["gateway"], gw.admin.to_string().as_str());
    assert_eq!(ok["metric"]["instance"], "lhins-a", "anygate's label wins");
    assert_eq!(ok["value"][1], "3");
    let up = query(prom, "up").unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    // Every query of the Grafana dashboard is valid PromQL over metrics anygate exports, and
    // the traffic panels have data once two scrapes are in.
    let exported = scrape(gw.admin);
    let exprs = dashboard_queries();
    assert!(exprs.len() >= 15, "{exprs:?}");
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.samples.iter().any(|s| s.name.starts_with(&name)),
                "dashboard query uses `{name}`, which anygate does not export: {expr}"
            );
        }
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$gateway", ".*");
        let v = query(prom, &q).unwrap_or_else(|| panic!("Prometheus refused {q}"));
        assert_eq!(v["status"], "success", "{q}: {v}");
    }
    let rate = "sum by (route) (rate(anygate_requests_total[1m]))";
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(prom, rate).is_none_or(|v| v["data"]["result"].as_array().is_none_or(Vec::is_empty))
    {
        assert!(Instant::now() < deadline, "no rate from {rate}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
}

/// The `expr` of every panel target in conf/grafana-dashboard.json.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conf/grafana-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The `anygate_*` and `process_*` names in a query (`_bucket` etc. kept).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("anygate_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn scrape_parser_reads_what_anygate_writes() {
    let s = parse("# HELP x y\nx{a=\"1\",le=\"+Inf\"} 3\nplain 2.5\n");
    assert_eq!(s.value("x", &[("a", "1"), ("le", "+Inf")]), 3.0);
    assert_eq!(s.value("plain", &[]), 2.5);
    assert_eq!(s.get("x", &[("a", "1")]), None, "labels must match exactly");
    let _ = scrape; // used by the other tests
}
