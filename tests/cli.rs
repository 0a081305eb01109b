//! The command line of SPEC §2: `demo` (and its printed curl lines), `echo`, `check`, `run`.

mod common;
use common::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Runs one printed curl line with `sh` and returns what curl printed (`-i`: head and body).
fn run_curl(line: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} --silent --show-error --max-time 10"))
        .output()
        .expect("run sh (curl must be installed: apt-get install -y curl)");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

fn header<'a>(curl_output: &'a str, name: &str) -> Option<&'a str> {
    curl_output.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn demo_prints_curl_lines_that_work() {
    let ports = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 3);
    let (gw, echo, admin) = (local(ports[0]), local(ports[1]), local(ports[2]));
    let mut demo = Process::spawn(&[
        "demo",
        "--listen",
        &gw.to_string(),
        "--echo",
        &echo.to_string(),
        "--admin",
        &admin.to_string(),
    ]);
    demo.wait_listening(gw);
    demo.wait_listening(echo);
    demo.wait_listening(admin);
    let out = demo.wait_stdout("Stop with Ctrl-C");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(lines.len(), 5, "{out}");

    // 1. SDK call: forwarded unchanged to the echo upstream.
    let sdk = run_curl(lines[0]);
    assert!(sdk.starts_with("HTTP/1.1 200"), "{sdk}");
    assert!(sdk.contains("\"path\": \"/api/user/info\""), "{sdk}");
    // 2. HTTP access: /api stripped, query kept.
    let http = run_curl(lines[1]);
    assert!(http.starts_with("HTTP/1.1 200"), "{http}");
    assert!(http.contains("\"path\": \"/user/info\""), "{http}");
    assert!(http.contains("\"query\": \"id=42\""), "{http}");
    // 3. Unknown instance.
    let missing = run_curl(lines[2]);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(
        missing.contains(r#""code":"SERVICE_NOT_FOUND""#),
        "{missing}"
    );

    // 4. The admin listener: ready, and the metrics count the three calls above.
    let ready = run_curl(lines[3]);
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = run_curl(lines[4]);
    let count = |code: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("anygate_requests_total{") && l.contains(code))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(count("code=\"200\""), 2.0, "{metrics}");
    assert_eq!(count("code=\"404\""), 1.0, "{metrics}");

    for (resp, status, kind) in [
        (&sdk, "200", "Lighthouse"),
        (&http, "200", "Lighthouse"),
        (&missing, "-", "-"),
    ] {
        assert!(
            header(resp, "X-Cloudbase-Request-Id").is_some_and(|v| v.len() == 36),
            "{resp}"
        );
        assert_eq!(
            header(resp, "X-Cloudbase-Upstream-Status-Code"),
            Some(status),
            "{resp}"
        );
        assert!(
            header(resp, "X-Cloudbase-Upstream-Timecost").is_some(),
            "{resp}"
        );
        assert_eq!(
            header(resp, "X-Cloudbase-Upstream-Type"),
            Some(kind),
            "{resp}"
        );
    }
}

#[test]
fn echo_answers_with_what_it_received() {
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let addr = local(port);
    let mut echo = Process::spawn(&["echo", "--listen", &addr.to_string()]);
    echo.wait_listening(addr);
    let req = Req::post("/a/b?x=1&y=%20")
        .host("h.example")
        .header("X-Custom", "one")
        .header("X-Custom", "two")
        .body("hello");
    let resp = send(addr, &req).unwrap();
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/a/b");
    assert_eq!(v["query"], "x=1&y=%20");
    assert_eq!(v["headers"]["host"], "h.example");
    assert_eq!(v["headers"]["x-custom"], serde_json::json!(["one", "two"]));
    assert_eq!(v["bodyBytes"], 5);
}

#[test]
fn help_lists_the_subcommands() {
    let (code, out, _) =
        common::gateway::run_anygate(&["--help".as_ref()], std::time::Duration::from_secs(20));
    assert_eq!(code, 0);
    for sub in ["run", "check", "echo", "token", "demo", "wechat-stub"] {
        assert!(out.contains(sub), "{sub} missing from:\n{out}");
    }
}

/// The flags of an `Options:` section and whether each has a description (on its line, or on
/// the lines below it in the long `--help` layout).
fn documented_flags(help: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if !t.starts_with('-') || line.len() == t.len() {
            continue;
        }
        // `-c, --conf <FILE>  text`: the flag spec ends at the first run of two spaces.
        let (spec, rest) = t.split_once("  ").unwrap_or((t, ""));
        let long = spec
            .split([',', ' '])
            .find(|w| w.starts_with("--"))
            .unwrap_or(spec)
            .to_string();
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let has_text = !rest.trim().is_empty() || (!next.is_empty() && !next.starts_with('-'));
        out.push((long, has_text));
    }
    out
}

#[test]
fn every_flag_of_every_subcommand_has_help_text() {
    let subcommands: &[(&[&str], &[&str])] = &[
        (
            &[],
            &["--conf", "--daemon", "--upgrade", "--test", "--no-watch"],
        ),
        (
            &["run"],
            &["--conf", "--daemon", "--upgrade", "--test", "--no-watch"],
        ),
        (&["check"], &["--conf", "--strict"]),
        (&["echo"], &["--listen", "--threads"]),
        (
            &["token"],
            &["--conf", "--appid", "--openid", "--unionid", "--ttl"],
        ),
        (&["demo"], &["--listen", "--echo", "--admin"]),
        (&["wechat-stub"], &["--listen"]),
    ];
    for (sub, want) in subcommands {
        for help in ["--help", "-h"] {
            let mut args: Vec<&std::ffi::OsStr> = sub.iter().map(|s| s.as_ref()).collect();
            args.push(help.as_ref());
            let (code, out, err) =
                common::gateway::run_anygate(&args, std::time::Duration::from_secs(20));
            assert_eq!(code, 0, "{sub:?} {help}: {err}");
            let flags = documented_flags(&out);
            for w in *want {
                assert!(
                    flags.iter().any(|(f, _)| f == w),
                    "{sub:?} {help}: {w} missing from:\n{out}"
                );
            }
            for (flag, has_text) in &flags {
                assert!(has_text, "{sub:?} {help}: {flag} has no help text:\n{out}");
            }
        }
    }
}

#[test]
fn run_is_the_default_subcommand() {
    let up = Upstream::start(Behavior::Echo);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let path = dir.path().join("anygate.yaml");
    std::fs::write(
        &path,
        format!(
            "env: e\nlisten: {{ http: \"127.0.0.1:{port}\" }}\nserver: {{ threads: 1 }}\ninstances: [{{ id: a, address: \"{}\" }}]\nroutes: [{{ domain: \"*\", path: /, instance: a }}]\n",
            up.addr()
        ),
    )
    .unwrap();
    let mut gw = Process::spawn(&["-c", path.to_str().unwrap()]);
    gw.wait_listening(local(port));
    let resp = send(local(port), &Req::get("/hello").host("x")).unwrap();
    assert_eq!(Seen::of(&resp).target, "/hello");
}
