//! SPEC §11 against a real ACME CA: pebble (Let's Encrypt's test CA) started by the tests,
//! validating HTTP-01 and TLS-ALPN-01 on the gateway's own listeners; certificates verified
//! against pebble's root of the run. Retry backoff is shortened through the test-only
//! `ANYGATE_TEST_ACME_BACKOFF` variable.

#[path = "../common/mod.rs"]
mod common;

mod client;
mod config;
mod pebble;

use common::prom::{scrape, scrape_until};
use common::tls::curl;
use common::*;
use pebble::Pebble;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

const BACKOFF: (&str, &str) = ("ANYGATE_TEST_ACME_BACKOFF", "1s,2s");
const ORDERS: &str = "anygate_acme_orders_total";

/// A CA, an upstream and a storage directory, and the gateway ports pebble validates on.
struct Site {
    pebble: Pebble,
    upstream: Upstream,
    storage: tempfile::TempDir,
    ports: [u16; 3],
}

impl Site {
    /// `validity`: certificate lifetime in seconds (pebble's default when `None`);
    /// `http01`: whether pebble may reach the HTTP listener (else it validates on a closed
    /// port, so only TLS-ALPN-01 can succeed).
    fn new(validity: Option<u64>, http01: bool) -> Site {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ports: [u16; 3] = free_ports(ip, 3).try_into().expect("3 ports");
        let http = if http01 { ports[0] } else { closed_port() };
        Site {
            pebble: Pebble::start(http, ports[1], validity),
            upstream: Upstream::start(Behavior::Echo),
            storage: tempfile::Builder::new()
                .prefix("anygate-acme-")
                .tempdir()
                .expect("temp dir"),
            ports,
        }
    }

    fn yaml(&self, domains: &[&str], acme_extra: &str) -> String {
        let domains: String = domains
            .iter()
            .map(|d| format!("  - name: {d}\n    tls: acme\n"))
            .collect();
        format!(
            r#"env: acme-test
listen: {{ http: "@HTTP@", https: "@HTTPS@", admin: "@ADMIN@" }}
server: {{ threads: 1, grace_period: 0s, graceful_shutdown_timeout: 1s }}
domains:
{domains}acme:
  directory: {dir}
  email: ops@example.com
  ca_roots: {roots}
  storage: {storage}
{acme_extra}
instances: [{{ id: lhins-up, address: "{up}" }}]
routes: [{{ domain: "*", path: /, instance: lhins-up }}]
"#,
            dir = self.pebble.directory,
            roots = self.pebble.tls_ca.ca_pem().display(),
            storage = self.storage.path().display(),
            up = self.upstream.addr(),
        )
    }

    fn start(&self, yaml: &str) -> Gateway {
        Gateway::start_at(yaml, &[BACKOFF], self.ports)
    }
}

fn closed_port() -> u16 {
    common::closed_port().port()
}

/// Polls (bounded) until a verified handshake for `host` succeeds.
fn wait_served(gw: &Gateway, host: &str, root: &Path, within: Duration) -> client::Served {
    let deadline = Instant::now() + within;
    loop {
        match client::get(gw.https, host, root, None) {
            Ok((served, _)) => return served,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{host}: no verified certificate within {within:?} (last: {e})\n{}",
                gw.stderr()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn orders(gw: &Gateway, domain: &str, result: &str) -> f64 {
    scrape(gw.admin).value(ORDERS, &[("domain", domain), ("result", result)])
}

/// `orders` once it reaches `expected` (or after 5 s): an order is counted when its task
/// finishes, a moment after the certificate it installed is already served.
fn orders_reach(gw: &Gateway, domain: &str, result: &str, expected: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = orders(gw, domain, result);
        if n >= expected || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn http01_certificate_is_issued_served_and_reused_after_a_restart() {
    let site = Site::new(None, true);
    // force_https: the challenge is answered before the redirect.
    let yaml = site
        .yaml(&["api.example.com"], "  challenge: http-01")
        .replace("    tls: acme\n", "    tls: acme\n    force_https: true\n");
    let started = Instant::now();
    let mut gw = site.start(&yaml);
    let root = site.pebble.root();
    let first = wait_served(&gw, "api.example.com", &root, Duration::from_secs(60));
    eprintln!(
        "HTTP-01: first certificate served {} ms after the gateway was started",
        started.elapsed().as_millis()
    );
    assert_eq!(first.names, ["api.example.com"]);

    // Proxied requests over the verified certificate, HTTP/1.1 and HTTP/2.
    let (_, status) = client::get(gw.https, "api.example.com", &root, Some("/hello")).unwrap();
    assert_eq!(status, 200);
    let r = curl(gw.https, "api.example.com", "/hello", &root, &[]);
    assert_eq!(
        (r.exit, r.version.as_str(), r.status),
        (0, "2", 200),
        "{}",
        r.stderr
    );

    // A token anygate did not ask for is not its business: the request goes on as usual
    // (here: the force_https redirect).
    let r = send(
        gw.http,
        &Req::get("/.well-known/acme-challenge/not-ours").host("api.example.com"),
    )
    .unwrap();
    assert_eq!(r.status, 308);

    // The admin API shows what is served: the ACME certificate.
    let r = send(gw.admin, &Req::get("/api/v1/domains").host("localhost")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let domains = r.json();
    let api = domains["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "api.example.com")
        .expect("api.example.com in /api/v1/domains")
        .clone();
    assert_eq!(api["certificate"]["source"], "acme", "{api}");
    assert_eq!(api["certificate"]["sans"][0], "api.example.com", "{api}");

    // Metrics, log line, files.
    assert_eq!(orders_reach(&gw, "api.example.com", "success", 1.0), 1.0);
    assert_eq!(orders(&gw, "api.example.com", "failure"), 0.0);
    let expiry = scrape(gw.admin).value(
        "anygate_certificate_expiry_timestamp_seconds",
        &[("domain", "api.example.com")],
    );
    let ca_dir = std::fs::read_dir(site.storage.path())
        .unwrap()
        .next()
        .expect("a directory for the CA")
        .unwrap()
        .path();
    let stored = std::fs::read(ca_dir.join("api.example.com.crt")).unwrap();
    let leaf = pingora_core::tls::x509::X509::from_pem(&stored).unwrap();
    let epoch = openssl::asn1::Asn1Time::from_unix(0).unwrap();
    let d = epoch.diff(leaf.not_after()).unwrap();
    assert_eq!(
        expiry,
        (i64::from(d.days) * 86400 + i64::from(d.secs)) as f64
    );
    for f in ["api.example.com.crt", "api.example.com.key", "account.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(
        gw.stderr()
            .contains("ACME order for api.example.com: success"),
        "{}",
        gw.stderr()
    );

    // A restart serves the stored certificate from the first handshake and orders nothing.
    gw.stop();
    let gw = site.start(&yaml);
    let (again, _) = client::get(gw.https, "api.example.com", &root, None).unwrap();
    assert_eq!(again, first, "the stored certificate, at once");
    assert!(
        gw.wait_output(
            "ACME api.example.com: serving the stored certificate",
            Duration::from_secs(20)
        ),
        "{}",
        gw.stderr()
    );
    assert_eq!(orders(&gw, "api.example.com", "success"), 0.0);
    assert_eq!(orders(&gw, "api.example.com", "failure"), 0.0);

    // Deleting the certificate and reloading (SIGHUP) orders a new one.
    std::fs::remove_file(ca_dir.join("api.example.com.crt")).unwrap();
    gw.signal("HUP");
    scrape_until(gw.admin, Duration::from_secs(60), "a new order", |s| {
        s.get(
            ORDERS,
            &[("domain", "api.example.com"), ("result", "success")],
        ) == Some(1.0)
    });
    let (renewed, _) = client::get(gw.https, "api.example.com", &root, None).unwrap();
    assert_ne!(renewed.serial, first.serial);
}

#[test]
fn tls_alpn01_certificate_and_a_domain_added_by_reload() {
    // pebble cannot reach the HTTP listener: only TLS-ALPN-01 on the HTTPS one can succeed.
    let site = Site::new(None, false);
    let yaml = site.yaml(&["api.example.com"], "  challenge: tls-alpn-01");
    let started = Instant::now();
    let gw = site.start(&yaml);
    let root = site.pebble.root();
    let first = wait_served(&gw, "api.example.com", &root, Duration::from_secs(60));
    eprintln!(
        "TLS-ALPN-01: first certificate served {} ms after the gateway was started",
        started.elapsed().as_millis()
    );
    assert_eq!(first.names, ["api.example.com"]);
    let r = curl(gw.https, "api.example.com", "/x", &root, &[]);
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.stderr);
    // Until it is issued, a new domain is an unknown name (no default here: refused).
    assert!(client::get(gw.https, "shop.example.com", &root, None).is_err());

    // A reload that adds domains orders them: four at once, through the queue (three run at
    // a time).
    let added = [
        "shop.example.com",
        "www.example.com",
        "m.example.com",
        "admin.example.com",
    ];
    let mut all = vec!["api.example.com"];
    all.extend(added);
    gw.write_config(&site.yaml(&all, "  challenge: tls-alpn-01"));
    for d in added {
        let served = wait_served(&gw, d, &root, Duration::from_secs(60));
        assert_eq!(served.names, [d]);
        assert_eq!(orders_reach(&gw, d, "success", 1.0), 1.0, "{d}");
    }
    assert_eq!(
        orders(&gw, "api.example.com", "success"),
        1.0,
        "not ordered again"
    );
    let (still, _) = client::get(gw.https, "api.example.com", &root, None).unwrap();
    assert_eq!(still, first);
}

#[test]
fn renewal_swaps_the_certificate_under_load_without_a_failure() {
    // 20-second certificates: with the default renew_before (30d, longer than that) the
    // gateway renews at half-life, every 10 s, leaving 10 s for an order on a busy machine.
    let site = Site::new(Some(20), true);
    let gw = site.start(&site.yaml(&["api.example.com"], ""));
    let root = site.pebble.root();
    let first = wait_served(&gw, "api.example.com", &root, Duration::from_secs(60));

    // Two clients, a new connection (full handshake, verified) and a request each time, until
    // two renewals were seen; bounded in count and time.
    let deadline = Instant::now() + Duration::from_secs(90);
    let https = gw.https;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failures, mut serials) = (0u64, Vec::new(), Vec::<String>::new());
                while Instant::now() < deadline && ok < 100_000 {
                    match client::get(https, "api.example.com", &root, Some("/")) {
                        Ok((s, 200)) => {
                            ok += 1;
                            if serials.last() != Some(&s.serial) {
                                serials.push(s.serial);
                            }
                        }
                        Ok((_, status)) => failures.push(format!("status {status}")),
                        Err(e) => failures.push(e),
                    }
                    if serials.len() >= 3 {
                        break;
                    }
                }
                (ok, failures, serials)
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        let (ok, failures, serials) = c.join().expect("client thread");
        total += ok;
        assert!(
            failures.is_empty(),
            "{} failures: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert_eq!(serials[0], first.serial);
        assert!(
            serials.len() >= 3,
            "two renewals seen by each client: {serials:?}\n{}",
            gw.stderr()
        );
    }
    let renewed = orders_reach(&gw, "api.example.com", "success", 3.0);
    eprintln!("renewal under load: {total} verified handshakes + requests, 0 failures, {renewed} certificates issued");
    assert!(renewed >= 3.0);
    assert_eq!(orders(&gw, "api.example.com", "failure"), 0.0);
}

#[test]
fn a_refusing_or_down_ca_is_retried_with_backoff_and_the_old_certificate_stays() {
    // 30-second certificates: renewal is due 15 s after issue.
    let mut site = Site::new(Some(30), true);
    // pebble validates bad.example.com at an address where nothing listens.
    site.pebble.add_a("bad.example.com", "127.0.0.2");
    let mut gw = site.start(&site.yaml(&["good.example.com", "bad.example.com"], ""));
    let root = site.pebble.root();
    let good = wait_served(&gw, "good.example.com", &root, Duration::from_secs(60));

    // Refused by the CA: failures counted and logged with the CA's reason, retried after 1 s,
    // then 2 s.
    let failed = |gw: &Gateway, domain: &str, n: f64| {
        scrape_until(gw.admin, Duration::from_secs(40), "failures", |s| {
            s.get(ORDERS, &[("domain", domain), ("result", "failure")]) >= Some(n)
        });
    };
    failed(&gw, "bad.example.com", 2.0);
    let log = gw.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ACME order for bad.example.com: failure"))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    assert!(
        lines[0].contains("127.0.0.2") && lines[0].contains("retrying in 1s"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("(2 in a row)") && lines[1].contains("retrying in 2s"),
        "{}",
        lines[1]
    );
    assert!(client::get(gw.https, "bad.example.com", &root, None).is_err());

    // The CA goes away: the renewal of good.example.com fails and is retried, and the
    // certificate it has keeps being served.
    site.pebble.kill();
    failed(&gw, "good.example.com", 2.0);
    let (now, status) = client::get(gw.https, "good.example.com", &root, Some("/")).unwrap();
    assert_eq!((&now, status), (&good, 200));
    assert!(gw.is_running());
    assert!(
        gw.stderr()
            .contains("ACME order for good.example.com: failure"),
        "{}",
        gw.stderr()
    );

    // The CA comes back, with no memory of the account: a new one is registered and the
    // renewal goes through.
    site.pebble.restart();
    let new_root = site.pebble.root();
    let renewed = wait_served(&gw, "good.example.com", &new_root, Duration::from_secs(60));
    assert_ne!(renewed.serial, good.serial);
    assert!(
        gw.stderr().contains("accountDoesNotExist"),
        "{}",
        gw.stderr()
    );
    assert_eq!(orders_reach(&gw, "good.example.com", "success", 2.0), 2.0);
}
