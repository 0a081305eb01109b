//! Certificates in the snapshot: loading errors with positions, selection by SNI, and a swap
//! through the `Store` (what a reload does) changing what new handshakes get.

use super::*;
use crate::config::load_str;
use crate::snapshot::{compile, Snapshot, Store};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::Path;

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes `<stem>.pem` and `<stem>.key` for these names.
    fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.0)
            .unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }
}

const CONFIG: &str = r#"env: e
listen: { http: "127.0.0.1:8080", https: "127.0.0.1:8443" }
domains:
  - name: api.example.com
    tls: { cert: api.pem, key: api.key }
  - name: "*.apps.example.com"
    tls: { cert: apps.pem, key: apps.key }
tls:
  default: { cert: fallback.pem, key: fallback.key }
instances: [{ id: a, address: "127.0.0.1:1" }]
routes: [{ domain: "*", path: /, instance: a }]
"#;

fn snapshot(dir: &Path, text: &str, generation: u64) -> Result<Snapshot, String> {
    let file = load_str(&dir.join("anygate.yaml"), text).map_err(|e| e.to_string())?;
    compile(
        &file,
        generation,
        &|_| None,
        &crate::server::new_telemetry().expect("metrics"),
        None,
    )
    .map_err(|e| e.to_string())
}

/// The first DNS name of the certificate a handshake with `sni` gets now.
fn served(certs: &SniCertificates, sni: Option<&str>) -> Option<String> {
    let c = certs.select(sni)?;
    let names = c.leaf.subject_alt_names()?;
    let first = names.iter().find_map(|n| n.dnsname().map(str::to_string));
    first
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf(dir.path(), "api", &["api.example.com"]);
    ca.leaf(dir.path(), "apps", &["*.apps.example.com"]);
    ca.leaf(dir.path(), "fallback", &["fallback.invalid"]);
    let store = Arc::new(Store::new(snapshot(dir.path(), CONFIG, 1).unwrap()));
    let certs = SniCertificates::new(store);
    let api = Some("api.example.com".to_string());
    assert_eq!(served(&certs, Some("API.example.com.")), api);
    let apps = Some("*.apps.example.com".to_string());
    assert_eq!(served(&certs, Some("shop.apps.example.com")), apps);
    let fallback = Some("fallback.invalid".to_string());
    for unknown in [Some("a.b.apps.example.com"), Some("other.test"), None] {
        assert_eq!(served(&certs, unknown), fallback, "{unknown:?}");
    }
    // `refuse`: unknown names get no certificate (the handshake fails).
    let refusing = CONFIG.replace("tls:\n", "tls:\n  unknown_sni: refuse\n");
    let store = Arc::new(Store::new(snapshot(dir.path(), &refusing, 1).unwrap()));
    let certs = SniCertificates::new(store);
    assert_eq!(served(&certs, Some("other.test")), None);
    assert_eq!(served(&certs, None), None);
    assert_eq!(served(&certs, Some("api.example.com")), api);
}

#[test]
fn a_published_snapshot_changes_the_certificate_of_new_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf(dir.path(), "api", &["api.example.com", "v1.example.com"]);
    ca.leaf(dir.path(), "apps", &["*.apps.example.com"]);
    ca.leaf(dir.path(), "fallback", &["fallback.invalid"]);
    let store = Arc::new(Store::new(snapshot(dir.path(), CONFIG, 1).unwrap()));
    let certs = SniCertificates::new(store.clone());
    let sans = |c: &SniCertificates| {
        let cert = c.select(Some("api.example.com")).unwrap();
        let names = cert.leaf.subject_alt_names().unwrap();
        let v: Vec<String> = names
            .iter()
            .filter_map(|n| n.dnsname().map(str::to_string))
            .collect();
        v
    };
    assert_eq!(sans(&certs), ["api.example.com", "v1.example.com"]);

    // New files at the same paths, compiled into a new generation and published.
    ca.leaf(dir.path(), "api", &["api.example.com", "v2.example.com"]);
    store.publish(snapshot(dir.path(), CONFIG, 2).unwrap());
    assert_eq!(sans(&certs), ["api.example.com", "v2.example.com"]);

    // A key that belongs to another certificate fails the compile: nothing is published
    // and the running certificate stays.
    std::fs::copy(dir.path().join("apps.key"), dir.path().join("api.key")).unwrap();
    let err = snapshot(dir.path(), CONFIG, 3).err().unwrap();
    assert!(
        err.contains("anygate.yaml:5:") && err.contains("does not belong to the certificate"),
        "{err}"
    );
    assert_eq!(sans(&certs), ["api.example.com", "v2.example.com"]);
    assert_eq!(store.generation(), 2);
}

#[test]
fn unreadable_or_broken_files_point_at_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf(dir.path(), "apps", &["*.apps.example.com"]);
    ca.leaf(dir.path(), "fallback", &["fallback.invalid"]);
    // api.pem is missing.
    let err = snapshot(dir.path(), CONFIG, 1).err().unwrap();
    assert!(
        err.contains("anygate.yaml:5:18: cannot read the certificate"),
        "{err}"
    );
    // Not PEM at all.
    std::fs::write(dir.path().join("api.pem"), "hello").unwrap();
    std::fs::write(dir.path().join("api.key"), "hello").unwrap();
    let err = snapshot(dir.path(), CONFIG, 1).err().unwrap();
    assert!(err.contains("anygate.yaml:5:18:"), "{err}");
    // A good certificate with a key that is not a key.
    ca.leaf(dir.path(), "api", &["api.example.com"]);
    std::fs::write(dir.path().join("api.key"), "hello").unwrap();
    let err = snapshot(dir.path(), CONFIG, 1).err().unwrap();
    assert!(
        err.contains("anygate.yaml:5:32:") && err.contains("not a PEM private key"),
        "{err}"
    );
}

#[test]
fn https_needs_a_certificate_and_force_https_needs_https() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"env: e
listen: { http: "127.0.0.1:8080", https: "127.0.0.1:8443" }
domains:
  - name: api.example.com
    force_https: true
instances: [{ id: a, address: "127.0.0.1:1" }]
routes: [{ domain: "*", path: /, instance: a }]
"#;
    let err = snapshot(dir.path(), text, 1).err().unwrap();
    assert!(
        err.contains("anygate.yaml:2:42: `listen.https` needs a certificate"),
        "{err}"
    );
    let plain = text.replace(", https: \"127.0.0.1:8443\"", "");
    let err = snapshot(dir.path(), &plain, 1).err().unwrap();
    assert!(
        err.contains("anygate.yaml:5:18: `force_https` needs an HTTPS listener"),
        "{err}"
    );
}

#[test]
fn acme_domains_are_served_from_the_issued_table_once_there() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf(dir.path(), "fallback", &["fallback.invalid"]);
    ca.leaf(dir.path(), "issued", &["api.example.com"]);
    ca.leaf(dir.path(), "stray", &["stray.example.com"]);
    let text = format!(
        "{}acme: {{ directory: \"https://127.0.0.1:9/dir\", storage: {} }}\n",
        CONFIG
            .replace("    tls: { cert: api.pem, key: api.key }", "    tls: acme")
            .replace(
                "  - name: \"*.apps.example.com\"\n    tls: { cert: apps.pem, key: apps.key }\n",
                ""
            ),
        dir.path().join("acme").display()
    );
    let store = Arc::new(Store::new(snapshot(dir.path(), &text, 1).unwrap()));
    let certs = SniCertificates::new(store.clone());
    let fallback = Some("fallback.invalid".to_string());
    // Not issued yet: an unknown name.
    assert_eq!(served(&certs, Some("api.example.com")), fallback);
    let pair = |stem: &str| {
        load_pair(
            &dir.path().join(format!("{stem}.pem")),
            &dir.path().join(format!("{stem}.key")),
        )
        .unwrap()
    };
    store
        .acme
        .install("api.example.com", Arc::new(pair("issued")));
    // A certificate for a name that is not an ACME domain of the config is never served.
    store
        .acme
        .install("stray.example.com", Arc::new(pair("stray")));
    assert_eq!(
        served(&certs, Some("API.example.com.")).as_deref(),
        Some("api.example.com")
    );
    assert_eq!(served(&certs, Some("stray.example.com")), fallback);
    // The facts the metrics and the admin API read: files and ACME alike.
    let facts = crate::tls::served(&store);
    let domains: Vec<(&str, CertSource)> = facts
        .iter()
        .map(|f| (f.domain.as_str(), f.origin))
        .collect();
    assert_eq!(
        domains,
        [
            ("api.example.com", CertSource::Acme),
            ("default", CertSource::File)
        ]
    );
    assert!(facts.iter().all(|f| f.not_after > f.not_before));
}
