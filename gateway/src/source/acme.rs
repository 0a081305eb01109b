//! ACME state in etcd (SPEC §13): the cluster backend of [`CertStore`]. Under
//! `<key>/acme/<ca>/` it keeps the account (`account.json`), each domain's certificate and key
//! (`certs/<domain>`, one key so they change together), the pending challenge answers
//! (`challenges/http-01/<token>`, `challenges/tls-alpn-01/<domain>`) and the order locks
//! (`locks/<domain>`, attached to a lease). Every replica watches the challenges and answers
//! them, whichever replica ordered; one replica orders a domain at a time (the lease expires
//! if it dies), and the others serve the certificate it stored.

use super::bootstrap::Bootstrap;
use super::etcd::{Etcd, EtcdError};
use crate::acme::files::ca_dir_name;
use crate::acme::storage::{CertStore, OrderLock, PendingChallenge, StoredCert};
use crate::acme::Challenges;
use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use log::{info, warn};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// The order lock's lease: an orderer that dies frees the domain after this long.
const LOCK_TTL: i64 = 20;
const PATIENCE: Duration = Duration::from_secs(6);
/// How long a published challenge is given to reach every replica's watch (milliseconds
/// when etcd is healthy) before the CA is asked to validate: the CA may reach any replica.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct CertJson {
    chain_pem: String,
    key_pem: String,
}

fn io_err(what: &str, e: EtcdError) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

pub struct EtcdStore {
    etcd: Arc<Mutex<Etcd>>,
    /// `<key>/acme/<ca>/`
    prefix: String,
    endpoints: String,
    challenges: Arc<Challenges>,
    watcher: Option<JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

impl EtcdStore {
    /// The store of the CA at `directory`. Inside a runtime, it also starts following the
    /// pending challenges into `challenges` (what this replica's listeners answer).
    pub fn open(boot: &Bootstrap, directory: &str, challenges: Arc<Challenges>) -> EtcdStore {
        let prefix = format!("{}/acme/{}/", boot.key, ca_dir_name(directory));
        let watcher = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (boot, prefix, challenges) = (boot.clone(), prefix.clone(), challenges.clone());
            rt.spawn(follow_challenges(boot, prefix, challenges))
        });
        EtcdStore {
            etcd: Arc::new(Mutex::new(Etcd::new(boot))),
            prefix,
            endpoints: boot.endpoints.join(", "),
            challenges,
            watcher,
        }
    }

    async fn get(&self, key: String) -> io::Result<Option<Vec<u8>>> {
        let mut etcd = self.etcd.lock().await;
        let resp = etcd
            .call_patiently(PATIENCE, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(|e| io_err("cannot read from etcd", e))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: String, value: Vec<u8>) -> io::Result<()> {
        let mut etcd = self.etcd.lock().await;
        etcd.call_patiently(PATIENCE, |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await
        .map(|_| ())
        .map_err(|e| io_err("cannot write to etcd", e))
    }

    async fn delete(&self, key: String) -> io::Result<()> {
        let mut etcd = self.etcd.lock().await;
        etcd.call_patiently(PATIENCE, |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await
        .map(|_| ())
        .map_err(|e| io_err("cannot delete from etcd", e))
    }
}

/// The etcd key of a pending challenge and its value.
fn challenge_entry(prefix: &str, c: &PendingChallenge) -> (String, String) {
    match c {
        PendingChallenge::Http01 {
            token,
            key_authorization,
        } => (
            format!("{prefix}challenges/http-01/{token}"),
            key_authorization.clone(),
        ),
        PendingChallenge::TlsAlpn01 { domain, digest } => (
            format!("{prefix}challenges/tls-alpn-01/{domain}"),
            digest.iter().map(|b| format!("{b:02x}")).collect(),
        ),
    }
}

/// The challenge a key (under `<prefix>challenges/`) and its value stand for.
fn challenge_of(name: &str, value: &[u8]) -> Option<PendingChallenge> {
    let value = std::str::from_utf8(value).ok()?;
    if let Some(token) = name.strip_prefix("http-01/") {
        return Some(PendingChallenge::Http01 {
            token: token.to_string(),
            key_authorization: value.to_string(),
        });
    }
    let domain = name.strip_prefix("tls-alpn-01/")?;
    let mut digest = [0u8; 32];
    if value.len() != 64 {
        return None;
    }
    for (i, b) in digest.iter_mut().enumerate() {
        *b = u8::from_str_radix(value.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(PendingChallenge::TlsAlpn01 {
        domain: domain.to_string(),
        digest,
    })
}

/// Keeps `challenges` in step with `<prefix>challenges/`: read it all, then watch, and again
/// after any failure.
async fn follow_challenges(boot: Bootstrap, prefix: String, challenges: Arc<Challenges>) {
    let root = format!("{prefix}challenges/");
    let mut etcd = Etcd::new(&boot);
    let mut known: HashSet<String> = HashSet::new();
    let mut wait = Duration::from_millis(250);
    loop {
        let why = follow_once(&mut etcd, &root, &challenges, &mut known, &mut wait).await;
        warn!("ACME: cannot follow the challenges in etcd ({why}); again in {wait:?}");
        etcd.rotate();
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn follow_once(
    etcd: &mut Etcd,
    root: &str,
    challenges: &Challenges,
    known: &mut HashSet<String>,
    wait: &mut Duration,
) -> String {
    let all = match etcd.get_prefix(root).await {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let mut now = HashSet::new();
    for kv in all.kvs() {
        let name = String::from_utf8_lossy(&kv.key()[root.len()..]).into_owned();
        if let Some(c) = challenge_of(&name, kv.value()) {
            if challenges.insert(&c).is_ok() {
                now.insert(name);
            }
        }
    }
    for gone in known.difference(&now) {
        if let Some(c) = challenge_of(gone, b"").or_else(|| challenge_of(gone, &[b'0'; 64])) {
            challenges.remove(&c);
        }
    }
    *known = now;
    let from = all.header().map_or(0, |h| h.revision()) + 1;
    let root_owned = root.to_string();
    let stream = etcd
        .call(move |mut c| {
            let root = root_owned.clone();
            async move {
                c.watch(
                    root,
                    Some(WatchOptions::new().with_prefix().with_start_revision(from)),
                )
                .await
            }
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                if resp.canceled() || resp.compact_revision() > 0 {
                    return "the watch was canceled".into();
                }
                *wait = Duration::from_millis(250);
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let name =
                        String::from_utf8_lossy(kv.key().get(root.len()..).unwrap_or_default())
                            .into_owned();
                    match ev.event_type() {
                        EventType::Put => {
                            if let Some(c) = challenge_of(&name, kv.value()) {
                                if challenges.insert(&c).is_ok() {
                                    known.insert(name);
                                }
                            }
                        }
                        EventType::Delete => {
                            let c = challenge_of(&name, b"")
                                .or_else(|| challenge_of(&name, &[b'0'; 64]));
                            if let Some(c) = c {
                                challenges.remove(&c);
                            }
                            known.remove(&name);
                        }
                    }
                }
            }
            Ok(None) => return "the watch ended".into(),
            Err(e) => return e.to_string(),
        }
    }
}

/// A domain's order lock: a key attached to a lease kept alive while the order runs.
struct EtcdLock {
    etcd: Arc<Mutex<Etcd>>,
    lease: i64,
    keepalive: JoinHandle<()>,
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        // Without `release` (a panic, a cancelled task) the lease runs out on its own.
        self.keepalive.abort();
    }
}

#[async_trait]
impl OrderLock for EtcdLock {
    async fn release(self: Box<Self>) {
        self.keepalive.abort();
        let lease = self.lease;
        let mut etcd = self.etcd.lock().await;
        // Revoking the lease deletes the lock key; if it fails, the lease runs out.
        let _ = etcd
            .call(move |mut c| async move { c.lease_revoke(lease).await })
            .await;
    }
}

fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{}@{host}", std::process::id())
}

#[async_trait]
impl CertStore for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd keys under {} at {}", self.prefix, self.endpoints)
    }

    async fn account(&self) -> io::Result<Option<Vec<u8>>> {
        self.get(format!("{}account.json", self.prefix)).await
    }

    async fn put_account(&self, credentials: &[u8]) -> io::Result<()> {
        self.put(format!("{}account.json", self.prefix), credentials.to_vec())
            .await
    }

    async fn certificate(&self, domain: &str) -> io::Result<Option<StoredCert>> {
        let Some(bytes) = self.get(format!("{}certs/{domain}", self.prefix)).await? else {
            return Ok(None);
        };
        let c: CertJson = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("etcd key {}certs/{domain} is damaged: {e}", self.prefix),
            )
        })?;
        Ok(Some(StoredCert {
            chain_pem: c.chain_pem,
            key_pem: c.key_pem,
        }))
    }

    async fn put_certificate(&self, domain: &str, cert: &StoredCert) -> io::Result<()> {
        let json = serde_json::to_vec(&CertJson {
            chain_pem: cert.chain_pem.clone(),
            key_pem: cert.key_pem.clone(),
        })
        .map_err(io::Error::other)?;
        // Committed by a quorum of members before this returns: durable.
        self.put(format!("{}certs/{domain}", self.prefix), json)
            .await
    }

    async fn put_challenge(&self, challenge: &PendingChallenge) -> io::Result<()> {
        // Answered here at once, by the other replicas once their watch sees it.
        self.challenges
            .insert(challenge)
            .map_err(io::Error::other)?;
        let (key, value) = challenge_entry(&self.prefix, challenge);
        self.put(key, value.into_bytes()).await?;
        tokio::time::sleep(SETTLE).await;
        Ok(())
    }

    async fn remove_challenge(&self, challenge: &PendingChallenge) -> io::Result<()> {
        self.challenges.remove(challenge);
        let (key, _) = challenge_entry(&self.prefix, challenge);
        self.delete(key).await
    }

    async fn lock_order(&self, domain: &str) -> io::Result<Option<Box<dyn OrderLock>>> {
        let key = format!("{}locks/{domain}", self.prefix);
        let mut etcd = self.etcd.lock().await;
        let lease = etcd
            .call_patiently(PATIENCE, |mut c| async move {
                c.lease_grant(LOCK_TTL, None).await
            })
            .await
            .map_err(|e| io_err("cannot take a lease in etcd", e))?
            .id();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                holder(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let won = etcd
            .txn(txn, PATIENCE)
            .await
            .map_err(|e| io_err("cannot take the order lock in etcd", e))?
            .succeeded();
        if !won {
            let _ = etcd
                .call(move |mut c| async move { c.lease_revoke(lease).await })
                .await;
            return Ok(None);
        }
        let (mut keeper, mut answers) = etcd
            .call(move |mut c| async move { c.lease_keep_alive(lease).await })
            .await
            .map_err(|e| io_err("cannot keep the order lock alive", e))?;
        drop(etcd);
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs((LOCK_TTL / 3) as u64)).await;
                if keeper.keep_alive().await.is_err()
                    || !matches!(answers.message().await, Ok(Some(_)))
                {
                    warn!("ACME: lost the order lock's lease keep-alive; the lock ends with the lease");
                    return;
                }
            }
        });
        info!("ACME {domain}: ordering (lock {key} held by {})", holder());
        Ok(Some(Box::new(EtcdLock {
            etcd: self.etcd.clone(),
            lease,
            keepalive,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_round_trip_through_their_keys() {
        let p = "/anygate/config/acme/ca/";
        for c in [
            PendingChallenge::Http01 {
                token: "tok-1".into(),
                key_authorization: "tok-1.thumb".into(),
            },
            PendingChallenge::TlsAlpn01 {
                domain: "a.example.com".into(),
                digest: [7; 32],
            },
        ] {
            let (key, value) = challenge_entry(p, &c);
            let name = &key[p.len() + "challenges/".len()..];
            assert_eq!(challenge_of(name, value.as_bytes()), Some(c));
        }
        assert_eq!(challenge_of("tls-alpn-01/x", b"zz"), None);
        assert_eq!(challenge_of("other/x", b"v"), None);
    }
}
