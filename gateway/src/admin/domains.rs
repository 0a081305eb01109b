//! `GET /api/v1/domains`: the default domain and every custom domain, with their routes and
//! the facts of the certificate each is served with (read from the running snapshot's TLS
//! table and the ACME certificates beside it: what a client gets now).

use super::Answer;
use crate::snapshot::Snapshot;
use crate::tls::{CertKey, Issued};
use anygate_plugins::access_log::rfc3339_millis;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertView {
    /// `file` or `acme`.
    pub source: &'static str,
    /// The certificate file, for a `file` certificate.
    pub file: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub sans: Vec<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// Whole days until `notAfter` (negative once expired).
    pub days_left: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DomainView {
    name: String,
    /// `default` (`<env>.<default_domain_suffix>`) or `custom`.
    kind: &'static str,
    force_https: bool,
    routes: Vec<String>,
    /// What the HTTPS listener serves for this name (`null`: no certificate of its own).
    certificate: Option<CertView>,
}

fn common_name(name: &X509NameRef) -> Option<String> {
    let e = name.entries_by_nid(Nid::COMMONNAME).next()?;
    e.data().to_string().ok()
}

/// Unix seconds of an ASN.1 time, by its distance from the epoch.
fn unix(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

fn time(secs: i64) -> String {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH
    };
    rfc3339_millis(t)
}

/// What the admin API shows of a certificate (public facts only: never the key).
pub fn facts(c: &CertKey) -> CertView {
    let leaf: &X509 = &c.leaf;
    let mut sans = Vec::new();
    if let Some(names) = leaf.subject_alt_names() {
        for n in names.iter() {
            if let Some(d) = n.dnsname() {
                sans.push(d.to_string());
            } else if let Some(ip) = n.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    sans.push(ip.to_string());
                }
            }
        }
    }
    let not_after = unix(leaf.not_after());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    CertView {
        source: c.origin.as_str(),
        file: (c.origin == crate::tls::CertSource::File).then(|| c.source.clone()),
        subject: common_name(leaf.subject_name()),
        issuer: common_name(leaf.issuer_name()),
        sans,
        not_before: unix(leaf.not_before()).map(time),
        not_after: not_after.map(time),
        days_left: not_after.map(|t| (t - now).div_euclid(86_400)),
    }
}

/// `issued`: the certificates ACME issued (the `tls: acme` domains' certificates live there,
/// not in the snapshot).
pub fn domains(snap: &Snapshot, issued: &Issued) -> Answer {
    let routes_of = |domain: &str| -> Vec<String> {
        snap.routes
            .routes()
            .iter()
            .filter(|r| r.domain.as_str() == domain)
            .map(|r| r.label.clone())
            .collect()
    };
    let certs = &snap.tls.certs;
    let mut list = vec![DomainView {
        name: snap.routes.default_host().to_string(),
        kind: "default",
        force_https: false,
        routes: routes_of("default"),
        certificate: certs
            .served_for(snap.routes.default_host(), issued)
            .map(|c| facts(c)),
    }];
    for d in &snap.domains {
        list.push(DomainView {
            name: d.name.clone(),
            kind: "custom",
            force_https: d.force_https,
            routes: routes_of(&d.name),
            certificate: certs.served_for(&d.name, issued).map(|c| facts(c)),
        });
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Domains {
        domains: Vec<DomainView>,
        /// Routes of `domain: "*"` (any host).
        any_host_routes: Vec<String>,
        /// The certificate for names no domain matches (unless `tls.unknown_sni: refuse`).
        default_certificate: Option<CertView>,
    }
    Answer::json(&Domains {
        domains: list,
        any_host_routes: routes_of("*"),
        default_certificate: certs.default_cert().map(|c| facts(c)),
    })
}
