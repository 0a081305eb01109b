//! Graceful upgrade under load: keep-alive clients sending POSTs while the process is
//! replaced several times in a row. No request may be lost or answered twice, no connection
//! reset in the middle of a request, and no client-visible retry (a reused keep-alive
//! connection closed under a request that was on its way).

use crate::common::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const UPGRADES: usize = 3;

fn config(up: &Upstream) -> String {
    format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server:
  threads: 2
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  upgrade_sock: "@DIR@/upgrade.sock"
  pid_file: "@DIR@/anygate.pid"
instances:
  - {{ id: i1, address: "{}" }}
routes:
  - {{ domain: "*", path: /v, instance: i1 }}
"#,
        up.addr()
    )
}

/// Starts `anygate run -u` and hands it the listeners of the process `old_pid`; returns once
/// the new process serves.
fn upgrade(config: &Path, sock: &Path, signal_old: impl FnOnce()) -> Process {
    let _ = std::fs::remove_file(sock);
    let new = Process::spawn(&["run", "-u", "-c", config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "no upgrade socket: {}",
            new.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_old();
    new.wait_stderr("listening for HTTP");
    new
}

#[test]
fn upgrades_under_keep_alive_posts_lose_nothing() {
    let up = Upstream::start(Behavior::Echo);
    let mut first = Gateway::start(&config(&up));
    let (cfg, sock) = (first.config_path(), first.dir().join("upgrade.sock"));
    let next_id = Arc::new(AtomicU64::new(0));
    let ids = next_id.clone();
    let load = Load::start(
        first.http,
        6,
        move |i| {
            let id = ids.fetch_add(1, Ordering::Relaxed);
            Req::post("/v/x")
                .host("h")
                .header("X-Test-Id", &id.to_string())
                .body(vec![b'a' + (i % 26) as u8; 1024 + (i as usize % 7) * 1000])
        },
        |resp| match resp.status {
            200 => Ok("ok".into()),
            s => Err(format!("status {s}: {}", resp.text())),
        },
    );
    std::thread::sleep(Duration::from_millis(300));

    let mut current: Option<Process> = None;
    for n in 0..UPGRADES {
        let new = match current.take() {
            None => {
                let new = upgrade(&cfg, &sock, || first.signal("QUIT"));
                assert!(
                    first.wait_exit(Duration::from_secs(30)).is_some(),
                    "upgrade {n}"
                );
                new
            }
            Some(mut old) => {
                let new = upgrade(&cfg, &sock, || old.signal("QUIT"));
                assert!(
                    old.wait_exit(Duration::from_secs(30)).is_some(),
                    "upgrade {n}"
                );
                new
            }
        };
        current = Some(new);
    }
    std::thread::sleep(Duration::from_millis(300));
    let report = load.finish();
    eprintln!(
        "{UPGRADES} upgrades: {} sent, {} client-visible retries, {:?}",
        report.sent, report.retried, report.by_kind
    );
    assert!(
        report.failures.is_empty(),
        "lost or cut requests: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    // Draining (every response says `Connection: close` once the upgrade starts) moves busy
    // clients over between two requests: none has its next request cut and re-sent.
    assert_eq!(report.retried, 0, "client-visible retries: {report:?}");
    // Every answered POST reached the instance exactly once, and nothing else did.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in up.requests() {
        *seen
            .entry(r.header("X-Test-Id").unwrap_or("-").to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs the instance got twice: {twice:?}");
    let ok = report.by_kind.get("ok").copied().unwrap_or(0);
    assert_eq!(seen.len() as u64, ok, "{report:?}");
    assert!(ok > 100, "{report:?}");
    drop(current);
}
