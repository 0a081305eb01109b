//! Automatic HTTPS (SPEC §11): certificates for the `tls: acme` domains from any RFC 8555 CA,
//! ordered, stored, renewed and swapped in by one background service, [`AcmeService`].
//!
//! - The config part ([`settings`]) is checked with the rest of the file, without network.
//! - Issued certificates live in [`Live::issued`], an atomically swapped table beside the
//!   snapshot (not in it): the TLS callback reads the snapshot for *which* domains are ACME
//!   domains and this table for *their* certificates, so an issued certificate is served on
//!   the next handshake without rebuilding the snapshot, and a reload (which compiles from
//!   the file) can never publish a snapshot that lost a certificate issued meanwhile.
//! - Challenge answers live in [`Live::challenges`], read by the plain listener (HTTP-01) and
//!   the TLS callback (TLS-ALPN-01).
//! - State that must survive a restart goes through the [`storage::CertStore`] trait (files
//!   today, [`files::FileStore`]).

mod account;
pub mod challenge;
mod domain;
pub mod files;
mod order;
mod service;
pub mod settings;
pub mod storage;

pub use challenge::Challenges;
pub use service::AcmeService;
pub use settings::Settings;

use crate::tls::{CertKey, Issued};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// ACME state the listeners read on every handshake or challenge request.
#[derive(Default)]
pub struct Live {
    /// Certificates issued (or loaded from storage) by domain.
    pub issued: ArcSwap<Issued>,
    pub challenges: Arc<Challenges>,
}

impl Live {
    /// Serves `cert` for `domain` from the next handshake on.
    pub fn install(&self, domain: &str, cert: Arc<CertKey>) {
        self.issued.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(domain.to_string(), cert.clone());
            m
        });
    }

    /// Keeps only the domains `keep` says yes to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if self.issued.load().keys().all(|d| keep(d)) {
            return;
        }
        self.issued.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.retain(|d, _| keep(d));
            m
        });
    }
}
