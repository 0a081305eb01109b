//! Certificates by SNI: loaded and checked when a config is compiled, chosen on every
//! handshake from the snapshot that is current at that moment.

use crate::config::model::UnknownSni;
use pingora_core::tls::pkey::{PKey, Private};
use pingora_core::tls::x509::X509;
use std::collections::HashMap;
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
    pub origin: CertSource,
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
    let mut certs = X509::stack_from_pem(&pem).map_err(|e| {
        PairError::Cert(format!(
            "`{cn}` is not a PEM certificate: {}",
            first_reason(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(PairError::Cert(format!("`{cn}` holds no PEM certificate")));
    }
    let leaf = certs.remove(0);
    let key_pem = std::fs::read(key)
        .map_err(|e| PairError::Key(format!("cannot read the private key `{kn}`: {e}")))?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|e| {
        PairError::Key(format!(
            "`{kn}` is not a PEM private key: {}",
            first_reason(&e)
        ))
    })?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(PairError::Key(format!(
            "the private key `{kn}` does not belong to the certificate `{cn}`"
        )));
    }
    Ok(CertKey {
        leaf,
        chain: certs,
        key,
        source: cn.to_string(),
        origin: CertSource::File,
    })
}

/// OpenSSL's first reason, without its numeric prefix.
fn first_reason(e: &pingora_core::tls::error::ErrorStack) -> String {
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
    unknown_sni: UnknownSni,
}

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
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none()
    }

    /// The certificate of the domain written `name` in the config (`*.parent` for a
    /// wildcard), if it has one.
    pub fn by_name(&self, name: &str) -> Option<&Arc<CertKey>> {
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.get(parent),
            None => self.exact.get(name),
        }
    }

    /// The certificate for names no domain matches.
    pub fn default_cert(&self) -> Option<&Arc<CertKey>> {
        self.default.as_ref()
    }

    /// The certificate for a client that sent `sni`: the domain of that exact name, then a
    /// `*.parent` domain one label up, then the default (unless unknown names are refused).
    /// `None` refuses the handshake.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertKey>> {
        if let Some(name) = sni {
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            if let Some(c) = self.exact.get(&name) {
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
