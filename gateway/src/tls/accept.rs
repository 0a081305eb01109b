//! The certificate callback of the HTTPS listener.

use crate::snapshot::Store;
use async_trait::async_trait;
use log::{debug, warn};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::ext;
use pingora_core::tls::ssl::NameType;
use std::sync::Arc;

use super::{alpn, CertKey};

/// Picks the certificate by SNI from the snapshot that is current when the handshake starts,
/// and for ACME domains from the table of issued certificates.
pub struct SniCertificates {
    store: Arc<Store>,
}

impl SniCertificates {
    pub fn new(store: Arc<Store>) -> SniCertificates {
        SniCertificates { store }
    }

    /// The certificate a handshake with this SNI gets now (`None`: refused).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertKey>> {
        let issued = self.store.acme.issued.load();
        self.store.load().tls.certs.select(sni, &issued).cloned()
    }
}

fn use_cert(ssl: &mut TlsRef, c: &CertKey) -> Result<(), pingora_core::tls::error::ErrorStack> {
    ext::ssl_use_certificate(ssl, &c.leaf)?;
    ext::ssl_use_private_key(ssl, &c.key)?;
    for intermediate in &c.chain {
        ext::ssl_add_chain_cert(ssl, intermediate)?;
    }
    Ok(())
}

#[async_trait]
impl TlsAccept for SniCertificates {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        // An ACME CA validating a TLS-ALPN-01 challenge gets the challenge certificate, and
        // nothing else: without a pending challenge for the name its handshake fails.
        let chosen = if alpn::is_acme_validation(ssl) {
            let c = sni
                .as_deref()
                .and_then(|name| self.store.acme.challenges.tls_alpn(name));
            if c.is_none() {
                debug!("TLS: acme-tls/1 handshake for {sni:?} without a pending challenge");
            }
            c
        } else {
            self.select(sni.as_deref())
        };
        match chosen {
            Some(c) => {
                if let Err(e) = use_cert(ssl, &c) {
                    warn!("TLS: cannot use the certificate {}: {e}", c.source);
                }
            }
            // Without a certificate OpenSSL ends the handshake with an alert.
            None => debug!("TLS: refusing a handshake for unknown SNI {sni:?}"),
        }
    }
}

/// Settings of the HTTPS listener: Mozilla intermediate, HTTP/2 preferred by ALPN, HTTP/1.1
/// allowed, `acme-tls/1` for ACME validations.
pub fn listener_settings(store: Arc<Store>) -> pingora_error::Result<TlsSettings> {
    let mut s = TlsSettings::with_callbacks(Box::new(SniCertificates::new(store)))?;
    // Instead of `s.enable_h2()`, whose ALPN callback would refuse `acme-tls/1`.
    alpn::install(&mut s);
    Ok(s)
}
