//! What the HTTPS listener serves, read in one place: the certificates of the current
//! snapshot (files) and the ones ACME issued. The metrics (and the admin API) read this.

use crate::snapshot::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};
use std::sync::{Arc, Mutex};

use super::CertSource;

/// One served certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// The domain it serves as written under `domains` (`*.parent` for a wildcard), or
    /// `default` for `tls.default`.
    pub domain: String,
    pub origin: CertSource,
    /// The certificate file, or `acme:<domain>`.
    pub source: String,
    /// The leaf's DNS names.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Every certificate new handshakes can get now, sorted by domain. ACME domains not issued
/// yet are left out.
pub fn served(store: &Store) -> Vec<CertFacts> {
    let snap = store.load();
    let issued = store.acme.issued.load();
    let certs = &snap.tls.certs;
    let files = certs
        .files()
        .map(|(domain, c)| (domain, CertSource::File, c.clone()));
    let acme = certs.acme_domains().filter_map(|d| {
        issued
            .get(d)
            .map(|c| (d.to_string(), CertSource::Acme, c.clone()))
    });
    let mut out: Vec<CertFacts> = files
        .chain(acme)
        .map(|(domain, origin, c)| CertFacts {
            domain,
            origin,
            source: c.source.clone(),
            names: c.names.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
        })
        .collect();
    out.sort_by(|a, b| a.domain.cmp(&b.domain));
    out
}

/// `anygate_certificate_expiry_timestamp_seconds{domain}`, computed from [`served`] at scrape
/// time (so a reload that drops a domain drops its series).
pub struct CertificateMetrics {
    store: Arc<Store>,
    expiry: GaugeVec,
    sync: Mutex<()>,
}

impl CertificateMetrics {
    pub fn new(store: Arc<Store>) -> Result<CertificateMetrics, prometheus::Error> {
        let expiry = GaugeVec::new(
            Opts::new(
                "anygate_certificate_expiry_timestamp_seconds",
                "Unix time at which each served certificate expires (notAfter), by domain.",
            ),
            &["domain"],
        )?;
        Ok(CertificateMetrics {
            store,
            expiry,
            sync: Mutex::new(()),
        })
    }
}

impl Collector for CertificateMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.expiry.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.sync.lock();
        self.expiry.reset();
        for f in served(&self.store) {
            if let Ok(g) = self.expiry.get_metric_with_label_values(&[&f.domain]) {
                g.set(f.not_after as f64);
            }
        }
        self.expiry.collect()
    }
}
