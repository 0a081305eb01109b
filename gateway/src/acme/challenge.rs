//! The answers the listeners give the CA while an order is validated: HTTP-01 tokens on the
//! plain listener, TLS-ALPN-01 certificates on the HTTPS one. Read lock-free on the request
//! path; written a few times per order.

use crate::tls::{CertKey, CertSource};
use anygate_plugins::Reply;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashMap;
use std::sync::Arc;

use super::storage::PendingChallenge;

/// The HTTP-01 path prefix (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges {
    /// token → key authorization.
    http01: ArcSwap<HashMap<String, Bytes>>,
    /// domain → the RFC 8737 certificate.
    tls_alpn: ArcSwap<HashMap<String, Arc<CertKey>>>,
}

impl Challenges {
    /// Starts answering `c`.
    pub fn insert(&self, c: &PendingChallenge) -> Result<(), String> {
        match c {
            PendingChallenge::Http01 {
                token,
                key_authorization,
            } => {
                let answer = Bytes::from(key_authorization.clone());
                self.http01.rcu(|m| {
                    let mut m = HashMap::clone(m);
                    m.insert(token.clone(), answer.clone());
                    m
                });
            }
            PendingChallenge::TlsAlpn01 { domain, digest } => {
                let cert = Arc::new(alpn_certificate(domain, digest)?);
                self.tls_alpn.rcu(|m| {
                    let mut m = HashMap::clone(m);
                    m.insert(domain.clone(), cert.clone());
                    m
                });
            }
        }
        Ok(())
    }

    /// Stops answering `c`.
    pub fn remove(&self, c: &PendingChallenge) {
        match c {
            PendingChallenge::Http01 { token, .. } => {
                self.http01.rcu(|m| {
                    let mut m = HashMap::clone(m);
                    m.remove(token);
                    m
                });
            }
            PendingChallenge::TlsAlpn01 { domain, .. } => {
                self.tls_alpn.rcu(|m| {
                    let mut m = HashMap::clone(m);
                    m.remove(domain);
                    m
                });
            }
        }
    }

    /// The answer to a plain-HTTP request, if it asks for a pending HTTP-01 token. Anything
    /// else (other paths, unknown tokens) goes on to the chain as usual, so a backend can
    /// still answer its own challenges.
    pub fn http01(&self, req: &RequestHeader) -> Option<Reply> {
        let token = req.uri.path().strip_prefix(HTTP01_PREFIX)?;
        let answer = self.http01.load().get(token)?.clone();
        let mut h = ResponseHeader::build(StatusCode::OK, Some(3)).ok()?;
        h.insert_header("Content-Type", HeaderValue::from_static("text/plain"))
            .ok()?;
        h.insert_header("Content-Length", HeaderValue::from(answer.len()))
            .ok()?;
        h.insert_header("Cache-Control", HeaderValue::from_static("no-store"))
            .ok()?;
        Some(Reply::Response {
            header: Box::new(h),
            body: answer,
        })
    }

    /// The challenge certificate for a TLS-ALPN-01 handshake naming `sni`.
    pub fn tls_alpn(&self, sni: &str) -> Option<Arc<CertKey>> {
        let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
        self.tls_alpn.load().get(&name).cloned()
    }

    /// How many answers are pending (both kinds).
    pub fn len(&self) -> usize {
        self.http01.load().len() + self.tls_alpn.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// RFC 8737 §3: a self-signed certificate for `domain` alone, with the critical
/// acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_certificate(domain: &str, digest: &[u8; 32]) -> Result<CertKey, String> {
    let fail = |e: rcgen::Error| format!("cannot make the TLS-ALPN-01 certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    crate::tls::parse_pair(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        format!("acme-tls/1:{domain}"),
        CertSource::Acme,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_answers_pending_tokens_only() {
        let c = Challenges::default();
        let pending = PendingChallenge::Http01 {
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        };
        c.insert(&pending).unwrap();
        let req = |p: &str| RequestHeader::build("GET", p.as_bytes(), None).unwrap();
        match c.http01(&req("/.well-known/acme-challenge/tok")) {
            Some(Reply::Response { header, body }) => {
                assert_eq!(header.status, 200);
                assert_eq!(body, "tok.thumb");
            }
            other => panic!("{other:?}"),
        }
        assert!(c
            .http01(&req("/.well-known/acme-challenge/other"))
            .is_none());
        assert!(c.http01(&req("/tok")).is_none());
        c.remove(&pending);
        assert!(c.http01(&req("/.well-known/acme-challenge/tok")).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn tls_alpn_certificate_carries_the_digest() {
        let c = Challenges::default();
        let digest = [7u8; 32];
        let pending = PendingChallenge::TlsAlpn01 {
            domain: "api.example.com".into(),
            digest,
        };
        c.insert(&pending).unwrap();
        let cert = c.tls_alpn("API.example.com.").unwrap();
        assert_eq!(cert.names, ["api.example.com"]);
        let der = cert.leaf.to_der().unwrap();
        // The extension's value: OCTET STRING (0x04 0x20) of the digest.
        let mut inner = vec![0x04, 0x20];
        inner.extend_from_slice(&digest);
        assert!(der.windows(inner.len()).any(|w| w == inner.as_slice()));
        c.remove(&pending);
        assert!(c.tls_alpn("api.example.com").is_none());
    }
}
