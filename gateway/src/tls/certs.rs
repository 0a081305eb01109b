//! Certificates by SNI: loaded and checked when a config is compiled, chosen on every
//! handshake from the snapshot that is current at that moment.

use crate::config::model::UnknownSni;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use pingora_core::tls::pkey::{PKey, Private};
use pingora_core::tls::x509::X509;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Where a certificate came from (the admin API's `source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertSource {
    /// `tls: { cert, key }` files.
    #[default]
    File,
    /// Issued by the ACME client.
    Acme,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::File => "file",
            CertSource::Acme => "acme",
        }
    }
}

/// A certificate chain and its private key, parsed and known to match.
pub struct CertKey {
    pub leaf: X509,
    /// Intermediates sent after the leaf, in file order.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// The certificate file, for logs.
    pub source: String,
    /// Where it came from: a file of the config, or an ACME CA.
    pub origin: CertSource,
    /// The leaf's DNS names (subjectAltName).
    pub names: Vec<String>,
    /// The leaf's validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Unix seconds of an ASN.1 time.
fn unix_secs(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

impl CertKey {
    /// A chain (leaf first) and its key; `Err` says what is wrong (`Cert` or `Key`).
    pub fn new(
        mut certs: Vec<X509>,
        key: PKey<Private>,
        source: String,
        origin: CertSource,
    ) -> Result<CertKey, PairError> {
        if certs.is_empty() {
            return Err(PairError::Cert(format!(
                "`{source}` holds no PEM certificate"
            )));
        }
        let leaf = certs.remove(0);
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(PairError::Key(format!(
                "the private key does not belong to the certificate `{source}`"
            )));
        }
        let names = leaf
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                    .collect()
            })
            .unwrap_or_default();
        let not_before = unix_secs(leaf.not_before()).unwrap_or(0);
        let not_after = unix_secs(leaf.not_after()).unwrap_or(0);
        Ok(CertKey {
            leaf,
            chain: certs,
            key,
            source,
            origin,
            names,
            not_before,
            not_after,
        })
    }

    /// Whether the leaf names `domain` (exactly, or by a wildcard one label up).
    pub fn covers(&self, domain: &str) -> bool {
        self.names.iter().any(|n| {
            n == domain
                || n.strip_prefix("*.").is_some_and(|parent| {
                    domain
                        .split_once('.')
                        .is_some_and(|(_, rest)| rest == parent)
                })
        })
    }
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Which of the two files a problem is about (so the error points at `cert` or `key`).
#[derive(Debug, PartialEq, Eq)]
pub enum PairError {
    Cert(String),
    Key(String),
}

/// Reads a PEM certificate chain (leaf first) and a PEM private key, and checks that the key
/// belongs to the leaf.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertKey, PairError> {
    let (cn, kn) = (cert.display(), key.display());
    let pem = std::fs::read(cert)
        .map_err(|e| PairError::Cert(format!("cannot read the certificate `{cn}`: {e}")))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        PairError::Cert(format!(
            "`{cn}` is not a PEM certificate: {}",
            first_reason(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(PairError::Cert(format!("`{cn}` holds no PEM certificate")));
    }
    let key_pem = std::fs::read(key)
        .map_err(|e| PairError::Key(format!("cannot read the private key `{kn}`: {e}")))?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|e| {
        PairError::Key(format!(
            "`{kn}` is not a PEM private key: {}",
            first_reason(&e)
        ))
    })?;
    CertKey::new(certs, key, cn.to_string(), CertSource::File).map_err(|e| match e {
        PairError::Key(_) => PairError::Key(format!(
            "the private key `{kn}` does not belong to the certificate `{cn}`"
        )),
        other => other,
    })
}

/// Parses a PEM chain (leaf first) and a PEM key held in memory (as an ACME store keeps
/// them).
pub fn parse_pair(
    chain_pem: &[u8],
    key_pem: &[u8],
    source: String,
    origin: CertSource,
) -> Result<CertKey, String> {
    let certs = X509::stack_from_pem(chain_pem)
        .map_err(|e| format!("`{source}` is not a PEM certificate: {}", first_reason(&e)))?;
    let key = PKey::private_key_from_pem(key_pem).map_err(|e| {
        format!(
            "the key of `{source}` is not a PEM private key: {}",
            first_reason(&e)
        )
    })?;
    CertKey::new(certs, key, source, origin).map_err(|e| match e {
        PairError::Cert(m) | PairError::Key(m) => m,
    })
}

/// OpenSSL's first reason, without its numeric prefix.
pub fn first_reason(e: &pingora_core::tls::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason())
        .unwrap_or("unreadable")
        .to_string()
}

/// The certificates of the HTTPS listener, by the domain names they serve.
#[derive(Debug, Default)]
pub struct CertTable {
    exact: HashMap<String, Arc<CertKey>>,
    /// `*.example.com` domains, keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertKey>>,
    default: Option<Arc<CertKey>>,
    /// Whether `tls.default` set the default (else it is the first domain's).
    explicit_default: bool,
    /// Domains with `tls: acme`: their certificates live in the ACME table, not here.
    acme: HashSet<String>,
    unknown_sni: UnknownSni,
}

/// Certificates issued by ACME, by domain name (lower case).
pub type Issued = HashMap<String, Arc<CertKey>>;

impl CertTable {
    pub fn new(unknown_sni: UnknownSni) -> CertTable {
        CertTable {
            unknown_sni,
            ..CertTable::default()
        }
    }

    /// Adds the certificate of domain `name` (lower-case; `*.parent` for a wildcard). The
    /// first domain added is the default unless [`CertTable::set_default`] says otherwise.
    pub fn add(&mut self, name: &str, cert: Arc<CertKey>) {
        if self.default.is_none() {
            self.default = Some(cert.clone());
        }
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), cert),
            None => self.exact.insert(name.to_string(), cert),
        };
    }

    pub fn set_default(&mut self, cert: Arc<CertKey>) {
        self.default = Some(cert);
        self.explicit_default = true;
    }

    /// Declares an exact domain whose certificate ACME issues.
    pub fn add_acme(&mut self, name: &str) {
        self.acme.insert(name.to_string());
    }

    /// No certificate at all, and none to come from ACME.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.acme.is_empty()
    }

    /// The certificate of the domain written `name` in the config (`*.parent` for a
    /// wildcard), if it has one.
    pub fn by_name(&self, name: &str) -> Option<&Arc<CertKey>> {
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.get(parent),
            None => self.exact.get(name),
        }
    }

    /// Like [`CertTable::by_name`], and for a `tls: acme` domain its certificate in `issued`
    /// (once there is one): what a client naming the domain gets now.
    pub fn served_for<'a>(&'a self, name: &str, issued: &'a Issued) -> Option<&'a Arc<CertKey>> {
        self.by_name(name)
            .or_else(|| issued.get(name).filter(|_| self.acme.contains(name)))
    }

    /// The certificate for names no domain matches.
    pub fn default_cert(&self) -> Option<&Arc<CertKey>> {
        self.default.as_ref()
    }

    /// The domains with `tls: acme`.
    pub fn acme_domains(&self) -> impl Iterator<Item = &str> {
        self.acme.iter().map(String::as_str)
    }

    /// Every certificate of the config by the domain it serves (`*.parent` for wildcards),
    /// and `default` for `tls.default`.
    pub fn files(&self) -> impl Iterator<Item = (String, &Arc<CertKey>)> {
        let exact = self.exact.iter().map(|(n, c)| (n.clone(), c));
        let wild = self.wildcard.iter().map(|(n, c)| (format!("*.{n}"), c));
        let default = self
            .default
            .iter()
            .filter(|_| self.explicit_default)
            .map(|c| ("default".to_string(), c));
        exact.chain(wild).chain(default)
    }

    /// The certificate for a client that sent `sni`: the domain of that exact name (its
    /// files, or for an ACME domain the certificate in `issued`, once there is one), then a
    /// `*.parent` domain one label up, then the default (unless unknown names are refused).
    /// `None` refuses the handshake.
    pub fn select<'a>(&'a self, sni: Option<&str>, issued: &'a Issued) -> Option<&'a Arc<CertKey>> {
        if let Some(name) = sni {
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            if let Some(c) = self.exact.get(&name) {
                return Some(c);
            }
            // Until issued, an ACME domain is served as an unknown name (SPEC §11).
            if let Some(c) = issued.get(&name).filter(|_| self.acme.contains(&name)) {
                return Some(c);
            }
            if let Some(c) = name
                .split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
            {
                return Some(c);
            }
        }
        match self.unknown_sni {
            UnknownSni::Default => self.default.as_ref(),
            UnknownSni::Refuse => None,
        }
    }
}
