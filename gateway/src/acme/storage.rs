//! Where ACME state lives, behind one trait: the account, each domain's certificate and key,
//! the pending challenge answers, and the lock that lets one orderer at a time order a domain.
//!
//! [`super::files::FileStore`] keeps them under `acme.storage`. A cluster backend (etcd, under
//! `<key>/acme/`) implements the same trait: `put_challenge` writes the answer where every
//! replica sees it (each replica then fills its own [`super::Challenges`] from a watch), and
//! `lock_order` takes a lease. The ordering logic only talks to this trait.

use async_trait::async_trait;
use std::io;

/// A certificate as stored: the chain (leaf first) and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert").finish_non_exhaustive()
    }
}

/// An answer the CA will ask for while it validates an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingChallenge {
    /// `GET /.well-known/acme-challenge/<token>` answers `key_authorization`.
    Http01 {
        token: String,
        key_authorization: String,
    },
    /// A handshake for `domain` with ALPN `acme-tls/1` gets a certificate carrying `digest`
    /// (the SHA-256 of the key authorization) in its acmeIdentifier extension.
    TlsAlpn01 { domain: String, digest: [u8; 32] },
}

/// The right to order one domain; released when dropped or by [`OrderLock::release`].
#[async_trait]
pub trait OrderLock: Send + Sync {
    async fn release(self: Box<Self>);
}

/// The storage backend of the ACME service. Errors are I/O errors with a message that names
/// what failed (they end up in the log line of the order).
#[async_trait]
pub trait CertStore: Send + Sync {
    /// What and where, for logs (`files under /var/lib/anygate/acme/...`).
    fn describe(&self) -> String;

    /// The account credentials (instant-acme's JSON), if an account was made before.
    async fn account(&self) -> io::Result<Option<Vec<u8>>>;
    async fn put_account(&self, credentials: &[u8]) -> io::Result<()>;

    async fn certificate(&self, domain: &str) -> io::Result<Option<StoredCert>>;
    /// Stores a newly issued certificate; it must be durable before this returns (it is
    /// served right after).
    async fn put_certificate(&self, domain: &str, cert: &StoredCert) -> io::Result<()>;

    /// Publishes an answer so that the listeners (of every replica) give it to the CA.
    async fn put_challenge(&self, challenge: &PendingChallenge) -> io::Result<()>;
    async fn remove_challenge(&self, challenge: &PendingChallenge) -> io::Result<()>;

    /// Takes the right to order `domain`: `None` when another orderer holds it.
    async fn lock_order(&self, domain: &str) -> io::Result<Option<Box<dyn OrderLock>>>;
}
