//! Checking one ACME domain: serve its stored certificate if it is good, else order one
//! (under the domain's lock), store it, then serve it.

use super::account::load_or_create;
use super::order::order;
use super::settings::Settings;
use super::storage::{CertStore, StoredCert};
use crate::snapshot::Store;
use crate::tls::{parse_pair, CertKey, CertSource};
use instant_acme::Account;
use log::{info, warn};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// A whole order, from new-order to certificate, gives up after this.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 8555's problem type for an account the CA does not know.
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
/// When a certificate is due for renewal: `renew_before` its end, but not before half its
/// lifetime (a CA issuing shorter certificates than `renew_before` would otherwise be asked
/// again as soon as it answers).
pub fn due(c: &CertKey, renew_before: Duration) -> SystemTime {
    let lifetime = u64::try_from(c.not_after - c.not_before).unwrap_or(0);
    let before = renew_before.min(Duration::from_secs(lifetime / 2));
    let end = UNIX_EPOCH + Duration::from_secs(u64::try_from(c.not_after).unwrap_or(0));
    end.checked_sub(before).unwrap_or(UNIX_EPOCH)
}

/// What checking a domain came to.
pub enum Outcome {
    /// A stored certificate is served and good until `due`; it expires at `not_after`.
    Current {
        due: SystemTime,
        not_after: String,
    },
    /// A new certificate was ordered, stored and swapped in.
    Issued {
        due: SystemTime,
    },
    /// Another orderer holds the domain's lock.
    Busy,
    Failed(String),
}

/// The backend and account of one `acme` section (rebuilt when the CA or storage changes).
pub struct Ca {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn CertStore>,
    /// Made (or loaded) at the first order; one at a time.
    pub account: Arc<Mutex<AccountState>>,
}

#[derive(Default)]
pub struct AccountState {
    account: Option<Account>,
    /// The CA no longer knows the stored account: make a new one.
    gone: bool,
}

impl Ca {
    async fn account(&self) -> Result<Account, String> {
        let mut a = self.account.lock().await;
        if let Some(account) = &a.account {
            return Ok(account.clone());
        }
        let account = load_or_create(&self.settings, self.store.as_ref(), a.gone).await?;
        a.account = Some(account.clone());
        a.gone = false;
        Ok(account)
    }

    async fn forget_account(&self) {
        *self.account.lock().await = AccountState {
            account: None,
            gone: true,
        };
    }
}

pub fn same_ca(a: &Settings, b: &Settings) -> bool {
    (&a.directory, &a.email, &a.ca_roots, &a.storage)
        == (&b.directory, &b.email, &b.ca_roots, &b.storage)
}

/// A stored certificate, checked: it parses, its key matches, it names the domain.
fn usable(domain: &str, stored: &StoredCert) -> Result<CertKey, String> {
    let c = parse_pair(
        stored.chain_pem.as_bytes(),
        stored.key_pem.as_bytes(),
        format!("acme:{domain}"),
        CertSource::Acme,
    )?;
    if !c.covers(domain) {
        return Err(format!("it names {:?}, not {domain}", c.names));
    }
    Ok(c)
}

/// Serves `c` for `domain` unless the very same certificate is served already.
fn install(store: &Store, domain: &str, c: CertKey) {
    let same = store
        .acme
        .issued
        .load()
        .get(domain)
        .is_some_and(|old| old.leaf.to_der().ok() == c.leaf.to_der().ok());
    if !same {
        store.acme.install(domain, Arc::new(c));
    }
}

/// Loads the stored certificate of `domain` and serves it; `Some((due, notAfter))` when it
/// needs no renewal yet.
pub async fn serve_stored(
    store: &Store,
    ca: &Ca,
    domain: &str,
) -> Result<Option<(SystemTime, String)>, String> {
    let Some(stored) = ca
        .store
        .certificate(domain)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let c = match usable(domain, &stored) {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "ACME {domain}: ignoring the stored certificate ({}): {e}",
                ca.store.describe()
            );
            return Ok(None);
        }
    };
    let due = due(&c, ca.settings.renew_before);
    let not_after = c.leaf.not_after().to_string();
    // Even an expiring one is served while its successor is ordered: it never gets worse.
    install(store, domain, c);
    Ok((SystemTime::now() < due).then_some((due, not_after)))
}

/// Checks one domain: the stored certificate if it is good, else a new order.
pub async fn check(store: Arc<Store>, ca: Arc<Ca>, domain: String) -> Outcome {
    match serve_stored(&store, &ca, &domain).await {
        Ok(Some((due, not_after))) => return Outcome::Current { due, not_after },
        Ok(None) => {}
        Err(e) => return Outcome::Failed(e),
    }
    let lock = match ca.store.lock_order(&domain).await {
        Ok(Some(l)) => l,
        Ok(None) => return Outcome::Busy,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    // Another orderer may have finished while we waited for the lock.
    let outcome = match serve_stored(&store, &ca, &domain).await {
        Ok(Some((due, not_after))) => Outcome::Current { due, not_after },
        Ok(None) => match tokio::time::timeout(ORDER_TIMEOUT, issue(&store, &ca, &domain)).await {
            Ok(Ok(due)) => Outcome::Issued { due },
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(format!("no certificate after {ORDER_TIMEOUT:?}")),
        },
        Err(e) => Outcome::Failed(e),
    };
    lock.release().await;
    outcome
}

/// Orders, stores, then serves a certificate for `domain`.
async fn issue(store: &Store, ca: &Ca, domain: &str) -> Result<SystemTime, String> {
    let started = Instant::now();
    let account = ca.account().await?;
    let stored = match order(&account, domain, ca.settings.challenge, ca.store.as_ref()).await {
        Ok(s) => s,
        // The CA lost or closed the account (a test CA restarted, staging reset): the next
        // attempt registers a new one.
        Err(e) if e.contains(ACCOUNT_GONE) => {
            ca.forget_account().await;
            return Err(format!("{e}; a new account will be registered"));
        }
        Err(e) => return Err(e),
    };
    let c =
        usable(domain, &stored).map_err(|e| format!("the CA sent an unusable certificate: {e}"))?;
    ca.store
        .put_certificate(domain, &stored)
        .await
        .map_err(|e| format!("cannot store the certificate: {e}"))?;
    let due = due(&c, ca.settings.renew_before);
    info!(
        "ACME order for {domain}: success in {} ms: certificate from {} valid until {}, stored in {}",
        started.elapsed().as_millis(),
        ca.settings.directory,
        c.leaf.not_after(),
        ca.store.describe()
    );
    install(store, domain, c);
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_renew_before_the_end_but_not_before_half_life() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        let start = rcgen::date_time_ymd(2030, 1, 1);
        params.not_before = start;
        params.not_after = start + std::time::Duration::from_secs(90 * 86_400);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("c.key"), key.serialize_pem()).unwrap();
        let c =
            crate::tls::load_pair(&dir.path().join("c.pem"), &dir.path().join("c.key")).unwrap();
        let day = |n: u64| Duration::from_secs(n * 86_400);
        let end = UNIX_EPOCH + Duration::from_secs(c.not_after as u64);
        assert_eq!(due(&c, day(30)), end - day(30));
        // Longer than the certificate lives: at half-life.
        assert_eq!(due(&c, day(365)), end - day(45));
    }
}
