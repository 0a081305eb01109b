//! The shared rate limit (SPEC §13) on a real redis-server behind three replicas: each
//! caller is limited once across them (not three times), Redis failing is decided by
//! `on_error` and counted, and limits resume when Redis is back, without a restart.

use super::common::http::{send, Req};
use super::common::upstream::{Behavior, Upstream};
use super::replica::Replica;
use super::servers::Redis;
use super::*;
use std::net::SocketAddr;
use std::time::Instant;

const PER_SECOND: f64 = 5.0;
const BURST: f64 = 5.0;

fn config(upstream: SocketAddr, on_error: &str) -> String {
    format!(
        r#"env: cluster-test
listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 2, grace_period: 0s, graceful_shutdown_timeout: 1s, upgrade_sock: "@DIR@/upgrade.sock", pid_file: "@DIR@/anygate.pid" }}
instances:
  - {{ id: app, address: "{upstream}" }}
routes:
  - {{ domain: "*", path: /, instance: app }}
plugins:
  - name: request_id
  - name: identity
    mode: trusted_front
    trusted_fronts: [127.0.0.1/32]
  - name: rate_limit
    per_second: {PER_SECOND}
    burst: {BURST}
    store:
      redis:
        url_env: ANYGATE_REDIS_URL
        timeout: 1s
        on_error: {on_error}
  - name: routing
  - name: metrics
"#
    )
}

fn ask(r: &Replica, openid: &str) -> u16 {
    let req = Req::get("/x").host("gw.test").header("X-WX-OPENID", openid);
    match send(r.http, &req) {
        Ok(resp) => {
            if resp.status == 429 {
                assert!(resp.has_header("Retry-After"), "429 without Retry-After");
            }
            resp.status
        }
        Err(e) => panic!("request to {} failed: {e}", r.http),
    }
}

fn store_errors(r: &Replica) -> f64 {
    r.scrape()
        .value("anygate_rate_limit_store_errors_total", &[])
}

#[test]
fn one_limit_across_replicas_and_redis_failures_follow_on_error() {
    let mut redis = Redis::start();
    let up = Upstream::start(Behavior::Echo);
    let url = redis.url();
    let env = [("ANYGATE_REDIS_URL", url.as_str())];
    // Two replicas fail open, one fails closed.
    let replicas = [
        Replica::start(&config(up.addr(), "allow"), &env),
        Replica::start(&config(up.addr(), "allow"), &env),
        Replica::start(&config(up.addr(), "deny"), &env),
    ];

    // Two callers, round robin over the three replicas, as fast as they answer, for about
    // two seconds: each caller is admitted `burst + per_second * elapsed` times (±1).
    let callers = ["o-alice", "o-bob"];
    let mut admitted = [0u32; 2];
    let mut sent = 0;
    let started = Instant::now();
    let mut last = started;
    while started.elapsed() < Duration::from_secs(2) && sent < 3000 {
        for (c, who) in callers.iter().enumerate() {
            let r = &replicas[sent % replicas.len()];
            sent += 1;
            match ask(r, who) {
                200 => admitted[c] += 1,
                429 => {}
                s => panic!("unexpected status {s}"),
            }
        }
        last = Instant::now();
    }
    let elapsed = (last - started).as_secs_f64();
    // GCRA admits the burst, then one more every 1/per_second.
    let expected = (BURST + PER_SECOND * elapsed).floor();
    println!(
        "shared limit: {sent} requests over {elapsed:.2} s across 3 replicas; admitted {admitted:?}, expected {expected} each"
    );
    for r in &replicas {
        assert_eq!(store_errors(r), 0.0, "no store errors while Redis is up");
    }
    assert!(sent > 60, "too few requests to tell ({sent})");
    for n in admitted {
        assert!(
            (f64::from(n) - expected).abs() <= 1.0,
            "admitted {n}, expected {expected} ± 1 (three separate limits would admit about {})",
            3.0 * expected
        );
    }

    // Redis dies: `on_error` decides, every decision counted.
    redis.kill();
    for (i, r) in replicas.iter().enumerate() {
        let want = if i < 2 { 200 } else { 429 };
        for _ in 0..10 {
            assert_eq!(ask(r, "o-carol"), want, "replica {i}:\n{}", r.stderr());
        }
        assert!(store_errors(r) >= 10.0, "replica {i}");
        assert!(r.stderr().contains("Redis store failed"), "{}", r.stderr());
    }

    // Redis is back (empty, without the script): limits resume without a restart.
    redis.restart();
    let deadline = Instant::now() + DEADLINE;
    for (i, r) in replicas.iter().enumerate() {
        // A fresh caller gets its burst, then is refused: the decision is Redis's again.
        for attempt in 0.. {
            let who = format!("o-dave-{i}-{attempt}");
            let before = store_errors(r);
            let statuses: Vec<u16> = (0..BURST as usize + 3).map(|_| ask(r, &who)).collect();
            let after = store_errors(r);
            if after == before {
                let ok = statuses.iter().filter(|s| **s == 200).count();
                assert!(
                    (BURST as usize..=BURST as usize + 1).contains(&ok),
                    "replica {i}: {statuses:?}"
                );
                assert_eq!(statuses.last(), Some(&429), "replica {i}: {statuses:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} never used Redis again:\n{}",
                r.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
