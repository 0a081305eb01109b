//! Pooled upstream connections are reused across worker threads. Pingora 0.9.1 threw away
//! about one in ten of them (`failed to acquire reusable stream`, then a new connection) when
//! the idle watcher ran on another thread; `vendor/pingora-core/PATCHES.md`.

use crate::common::*;
use crate::HOST;
use std::collections::HashSet;
use std::thread;
use std::time::Duration;

/// Keep-alive clients, each sending its requests one after the other.
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 300;

#[test]
fn pooled_upstream_connections_are_reused_across_threads() {
    let up = Upstream::start(Behavior::Status(200));
    let gw = Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 2 }}
instances:
  - {{ id: lhins-a, address: "{}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
"#,
        up.addr()
    ));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let addr = gw.http;
            thread::spawn(move || {
                let mut conn = Conn::connect(addr).unwrap();
                for _ in 0..PER_CLIENT {
                    let resp = conn.send(&Req::get("/api/x").host(HOST)).unwrap();
                    assert_eq!(resp.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let seen = up.wait_requests(CLIENTS * PER_CLIENT, Duration::from_secs(10));
    assert_eq!(seen.len(), CLIENTS * PER_CLIENT);
    // Each client's requests need one upstream connection at a time; a few more may be opened
    // while a returned one is on its way back into the pool, not one per lost race.
    let connections: HashSet<_> = seen.iter().map(|r| r.peer).collect();
    let log = gw.stderr();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        connections.len() <= 4 * CLIENTS && complaints.is_empty(),
        "{} upstream connections for {} requests from {CLIENTS} clients; the gateway said:\n{}",
        connections.len(),
        seen.len(),
        complaints.join("\n")
    );
}
