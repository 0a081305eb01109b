//! The HTTPS listener: certificates chosen by SNI from the current snapshot on every
//! handshake (so a reload swaps them for new connections), HTTP/2 by ALPN, and the
//! `force_https` redirect of the plain listener.
//!
//! Backend: Pingora's OpenSSL build. Its `TlsAccept::certificate_callback` pauses each
//! handshake after the ClientHello, so the certificate can be picked by SNI from whatever
//! snapshot is current (rustls would do it with a `ResolvesServerCert`; see the README).

mod accept;
mod alpn;
mod certs;
mod facts;
mod redirect;

pub use accept::{listener_settings, SniCertificates};
pub use certs::{
    first_reason, load_pair, parse_pair, CertKey, CertSource, CertTable, Issued, PairError,
};
pub use facts::{served, CertFacts, CertificateMetrics};
pub use redirect::HttpsRedirect;

use crate::config::model::DomainTls;
use crate::config::{ConfigError, FileConfig, Item, Mark};
use crate::snapshot::{relative_to, Listeners};
use std::sync::Arc;

/// The TLS part of a snapshot.
#[derive(Debug, Default)]
pub struct Tls {
    pub certs: CertTable,
    /// `None` when no domain has `force_https`.
    pub redirect: Option<HttpsRedirect>,
    /// `None` when no domain has `tls: acme`.
    pub acme: Option<Arc<crate::acme::Settings>>,
}

/// Loads one `{cert, key}` pair; problems are reported at `<prefix>cert` / `<prefix>key`.
fn load<T>(
    file: &FileConfig,
    item: &Item<T>,
    prefix: &str,
    tls: &crate::config::model::Tls,
    errors: &mut Vec<ConfigError>,
) -> Option<CertKey> {
    let cert = relative_to(&file.path, &tls.cert);
    let key = relative_to(&file.path, &tls.key);
    match load_pair(&cert, &key) {
        Ok(c) => Some(c),
        Err(PairError::Cert(m)) => {
            errors.push(file.error(item.mark_of(&format!("{prefix}cert")), m));
            None
        }
        Err(PairError::Key(m)) => {
            errors.push(file.error(item.mark_of(&format!("{prefix}key")), m));
            None
        }
    }
}

/// Reads every certificate of the file (paths relative to it), the `force_https` domains and
/// the `acme` section.
pub fn compile(file: &FileConfig, listeners: &Listeners, errors: &mut Vec<ConfigError>) -> Tls {
    let https = listeners.https;
    let settings = &file.tls.value;
    let mut certs = CertTable::new(settings.unknown_sni);
    let port = settings
        .redirect_port
        .or(https.map(|a| a.port()))
        .unwrap_or(443);
    let mut redirect = HttpsRedirect::new(port);
    let before = errors.len();
    for d in &file.domains {
        let name = d.value.name.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        match &d.value.tls {
            Some(DomainTls::Files(tls)) => {
                if let Some(c) = load(file, d, "tls.", tls, errors) {
                    certs.add(name, Arc::new(c));
                }
            }
            Some(DomainTls::Acme) => certs.add_acme(name),
            None => {}
        }
        if d.value.force_https {
            if https.is_none() {
                errors.push(file.error(
                    d.mark_of("force_https"),
                    "`force_https` needs an HTTPS listener (`listen.https`)",
                ));
            }
            redirect.add(name);
        }
    }
    if let Some(tls) = &settings.default {
        if let Some(c) = load(file, &file.tls, "default.", tls, errors) {
            certs.set_default(Arc::new(c));
        }
    }
    if https.is_some() && certs.is_empty() && errors.len() == before {
        let at: Mark = file.listen.mark_of("https");
        errors.push(file.error(
            at,
            "`listen.https` needs a certificate: give a domain `tls: { cert, key }` or `tls: acme`, or set `tls.default`",
        ));
    }
    let acme = crate::acme::settings::compile(file, listeners, errors).map(Arc::new);
    Tls {
        certs,
        redirect: (!redirect.is_empty()).then_some(redirect),
        acme,
    }
}

#[cfg(test)]
mod tests;
