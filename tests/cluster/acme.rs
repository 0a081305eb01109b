//! ACME in cluster mode (SPEC §13) on pebble and etcd: two replicas, one order, both serve
//! the certificate, and the CA's HTTP-01 validation is answered by the replica that did not
//! order (pebble reaches the replicas through a TCP relay that picks the one not holding the
//! order lock in etcd).

use super::acme_client;
use super::common::upstream::{Behavior, Upstream};
use super::pebble::Pebble;
use super::replica::Replica;
use super::servers::{tool, Etcd};
use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

const DOMAIN: &str = "api.example.com";

/// Per relayed connection: the pid holding the order lock, and the replica's pid reached.
type Relayed = Arc<Mutex<Vec<(Option<u32>, u32)>>>;

fn bootstrap_https(endpoints: &[String]) -> String {
    bootstrap(endpoints).replace(
        r#"listen: { http: "@HTTP@", admin: "@ADMIN@" }"#,
        r#"listen: { http: "@HTTP@", https: "@HTTPS@", admin: "@ADMIN@" }"#,
    )
}

/// The pid in the order lock's value (`pid@host`), if a lock is held.
fn lock_holder(endpoints: &str) -> Option<u32> {
    let out = tool("etcdctl", "etcd-client")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["get", "--prefix", &format!("{KEY}/acme/")])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    while let Some(key) = lines.next() {
        let value = lines.next().unwrap_or_default();
        if key.contains("/locks/") {
            return value.split('@').next()?.parse().ok();
        }
    }
    None
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Relays each connection to the replica that does not hold the order lock; records
/// (lock holder, replica reached) per connection.
fn relay(
    listener: TcpListener,
    endpoints: String,
    replicas: Vec<(u32, std::net::SocketAddr)>,
    seen: Relayed,
) {
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let holder = lock_holder(&endpoints);
            let (pid, addr) = *replicas
                .iter()
                .find(|(pid, _)| Some(*pid) != holder)
                .unwrap_or(&replicas[0]);
            seen.lock().unwrap().push((holder, pid));
            let Ok(upstream) = TcpStream::connect(addr) else {
                continue;
            };
            let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            thread::spawn(move || pipe(client, upstream));
            thread::spawn(move || pipe(u2, c2));
        }
    });
}

fn orders(r: &Replica, result: &str) -> f64 {
    r.scrape()
        .get(
            "anygate_acme_orders_total",
            &[("domain", DOMAIN), ("result", result)],
        )
        .unwrap_or(0.0)
}

#[test]
fn two_replicas_one_order_both_serve_and_either_answers_the_challenge() {
    let etcd = Etcd::start(1);
    let up = Upstream::start(Behavior::Echo);
    let relay_listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let relay_port = relay_listener.local_addr().expect("addr").port();
    let pebble = Pebble::start(
        relay_port,
        super::common::upstream::closed_port().port(),
        None,
    );
    let op = Operator::with_bootstrap(&bootstrap_https(&etcd.endpoints()));
    let doc = format!(
        r#"env: cluster-test
domains:
  - name: {DOMAIN}
    tls: acme
acme:
  directory: {dir}
  email: ops@example.com
  ca_roots: {roots}
  storage: acme
  challenge: http-01
instances: [{{ id: app, address: "{up}" }}]
routes: [{{ domain: "*", path: /, instance: app }}]
"#,
        dir = pebble.directory,
        roots = pebble.tls_ca.ca_pem().display(),
        up = up.addr(),
    );
    op.push_ok(&doc);
    let env = [("ANYGATE_TEST_ACME_BACKOFF", "1s,2s")];
    let mut replicas: Vec<Replica> = (0..2)
        .map(|_| Replica::prepare(&bootstrap_https(&etcd.endpoints()), &env))
        .collect();
    // The relay knows both replicas before either orders.
    for r in &mut replicas {
        r.try_run().expect("replica starts");
    }
    let seen: Relayed = Arc::default();
    relay(
        relay_listener,
        etcd.endpoints().join(","),
        replicas
            .iter()
            .map(|r| (r.pid().expect("pid"), r.http))
            .collect(),
        seen.clone(),
    );

    // Both replicas serve one certificate, verified against pebble's root.
    let root = pebble.root();
    let started = Instant::now();
    let mut serials = Vec::new();
    for r in &replicas {
        let served = loop {
            match acme_client::get(r.https, DOMAIN, &root, None) {
                Ok((served, _)) => break served,
                Err(e) => assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "{DOMAIN} not served by {}: {e}\n{}",
                    r.https,
                    r.stderr()
                ),
            }
            thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(served.names, vec![DOMAIN.to_string()]);
        serials.push(served.serial);
    }
    println!(
        "ACME in etcd: both replicas serve the certificate {:?} after {:?}",
        serials[0],
        started.elapsed()
    );
    assert_eq!(serials[0], serials[1], "one certificate for both");

    // Exactly one order in the cluster, and no failed one.
    let success: f64 = replicas.iter().map(|r| orders(r, "success")).sum();
    let failure: f64 = replicas.iter().map(|r| orders(r, "failure")).sum();
    assert_eq!(
        (success, failure),
        (1.0, 0.0),
        "{}\n---\n{}",
        replicas[0].stderr(),
        replicas[1].stderr()
    );
    let orderer = replicas
        .iter()
        .find(|r| orders(r, "success") == 1.0)
        .and_then(|r| r.pid())
        .expect("the orderer");

    // pebble's validation went to the other replica, which answered from etcd.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "pebble never connected");
    assert!(
        seen.iter()
            .all(|(holder, reached)| *holder == Some(orderer) && *reached != orderer),
        "validations {seen:?}, orderer {orderer}"
    );

    // etcd holds the certificate; no lock or challenge is left behind.
    let keys = etcd.ctl_ok(
        &["get", "--prefix", "--keys-only", &format!("{KEY}/acme/")],
        None,
    );
    assert!(keys.contains(&format!("/certs/{DOMAIN}")), "{keys}");
    assert!(keys.contains("/account.json"), "{keys}");
    assert!(
        !keys.contains("/locks/") && !keys.contains("/challenges/"),
        "{keys}"
    );
}
