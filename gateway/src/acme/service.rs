//! The ACME background service: follows the config's `tls: acme` domains, serves stored
//! certificates, and orders (a few at a time) the ones missing or due for renewal, retrying
//! failures with backoff. Never on the request path.

use super::account::load_or_create;
use super::files::FileStore;
use super::order::order;
use super::settings::Settings;
use super::storage::{CertStore, StoredCert};
use crate::snapshot::Store;
use crate::tls::{parse_pair, CertKey, Origin};
use anygate_plugins::units::parse_duration;
use async_trait::async_trait;
use instant_acme::Account;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

/// Orders (and storage checks) running at once; the rest wait their turn.
const MAX_RUNNING: usize = 3;
/// Every domain is looked at again at least this often (SPEC §11: at least hourly).
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How often the service looks for a new config generation.
const FOLLOW: Duration = Duration::from_secs(1);
/// A whole order, from new-order to certificate, gives up after this.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 8555's problem type for an account the CA does not know.
const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
/// Test-only: `MIN,MAX` retry backoff instead of 1m,1h (e.g. `1s,4s`). Not a config key.
pub const BACKOFF_ENV: &str = "ANYGATE_TEST_ACME_BACKOFF";

/// Retry delays after failed orders: doubling from `min` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn from_env() -> Backoff {
        let default = Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let Ok(v) = std::env::var(BACKOFF_ENV) else {
            return default;
        };
        let parsed = v.split_once(',').and_then(|(a, b)| {
            Some(Backoff {
                min: parse_duration(a).ok()?,
                max: parse_duration(b).ok()?,
            })
        });
        match parsed {
            Some(b) if !b.min.is_zero() && b.min <= b.max => {
                warn!(
                    "ACME: retry backoff {:?} to {:?} from {BACKOFF_ENV} (for tests only)",
                    b.min, b.max
                );
                b
            }
            _ => {
                warn!("ACME: ignoring {BACKOFF_ENV}={v:?} (write e.g. 1s,4s)");
                default
            }
        }
    }

    /// The wait after the `failures`-th failure in a row (1 = the first).
    fn after(&self, failures: u32) -> Duration {
        let doubled = self
            .min
            .checked_mul(1u32 << failures.saturating_sub(1).min(20))
            .unwrap_or(self.max);
        doubled.min(self.max)
    }
}

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
enum Outcome {
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
struct Ca {
    settings: Arc<Settings>,
    store: Arc<dyn CertStore>,
    /// Made (or loaded) at the first order; one at a time.
    account: Arc<Mutex<AccountState>>,
}

#[derive(Default)]
struct AccountState {
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

fn same_ca(a: &Settings, b: &Settings) -> bool {
    (&a.directory, &a.email, &a.ca_roots, &a.storage)
        == (&b.directory, &b.email, &b.ca_roots, &b.storage)
}

#[derive(Debug)]
struct Domain {
    next: Instant,
    failures: u32,
    running: bool,
    /// Whether a certificate for it was served since it was added.
    served: bool,
}

pub struct AcmeService {
    store: Arc<Store>,
    orders: IntCounterVec,
    backoff: Backoff,
}

impl AcmeService {
    /// Registers `anygate_acme_orders_total` in `registry`.
    pub fn new(store: Arc<Store>, registry: &Registry) -> Result<AcmeService, prometheus::Error> {
        let orders = IntCounterVec::new(
            Opts::new(
                "anygate_acme_orders_total",
                "ACME orders finished, by domain and result (success or failure).",
            ),
            &["domain", "result"],
        )?;
        registry.register(Box::new(orders.clone()))?;
        Ok(AcmeService {
            store,
            orders,
            backoff: Backoff::from_env(),
        })
    }

    fn open(&self, settings: &Arc<Settings>) -> Result<Arc<Ca>, String> {
        let files = FileStore::open(
            &settings.storage,
            &settings.directory,
            self.store.acme.challenges.clone(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(Ca {
            settings: settings.clone(),
            store: Arc::new(files),
            account: Arc::default(),
        }))
    }

    /// Serves the stored certificates before the listeners open, so that a restart never
    /// answers an ACME domain with the default certificate, not even for a moment.
    pub fn preload(&self) {
        let Some(settings) = self.store.load().tls.acme.clone() else {
            return;
        };
        // A storage that cannot be opened is reported by the service itself.
        let Ok(ca) = self.open(&settings) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
            return;
        };
        rt.block_on(async {
            for d in &settings.domains {
                if let Err(e) = serve_stored(&self.store, &ca, d).await {
                    warn!("ACME {d}: cannot read the stored certificate: {e}");
                }
            }
        });
    }

    fn count(&self, domain: &str, result: &str) {
        if let Ok(c) = self.orders.get_metric_with_label_values(&[domain, result]) {
            c.inc();
        }
    }
}

/// A stored certificate, checked: it parses, its key matches, it names the domain.
fn usable(domain: &str, stored: &StoredCert) -> Result<CertKey, String> {
    let c = parse_pair(
        stored.chain_pem.as_bytes(),
        stored.key_pem.as_bytes(),
        format!("acme:{domain}"),
        Origin::Acme,
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
async fn serve_stored(
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
async fn check(store: Arc<Store>, ca: Arc<Ca>, domain: String) -> Outcome {
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

/// `90s`, `5m`, `3h`, `89d`: for log lines.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut generation = 0;
        let mut ca: Option<Arc<Ca>> = None;
        let mut domains: HashMap<String, Domain> = HashMap::new();
        let mut running: JoinSet<(String, Outcome)> = JoinSet::new();
        loop {
            let snap = self.store.load();
            if snap.generation != generation {
                generation = snap.generation;
                let settings = snap.tls.acme.clone();
                drop(snap);
                if let Some(s) = &settings {
                    if !ca.as_ref().is_some_and(|c| same_ca(&c.settings, s)) {
                        ca = match self.open(s) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                error!("ACME: cannot use the storage: {e}; no certificates will be ordered");
                                None
                            }
                        };
                    }
                } else {
                    ca = None;
                }
                let wanted: Vec<String> = match (&ca, &settings) {
                    (Some(c), Some(s)) => {
                        // The domain list (and renew_before) can change without a new CA.
                        if c.settings != *s {
                            ca = Some(Arc::new(Ca {
                                settings: s.clone(),
                                store: c.store.clone(),
                                account: c.account.clone(),
                            }));
                        }
                        s.domains.clone()
                    }
                    _ => Vec::new(),
                };
                domains.retain(|d, _| wanted.contains(d));
                self.store.acme.retain(|d| wanted.iter().any(|w| w == d));
                for d in wanted {
                    domains.entry(d.clone()).or_insert_with(|| {
                        for r in ["success", "failure"] {
                            let _ = self.orders.get_metric_with_label_values(&[&d, r]);
                        }
                        Domain {
                            next: Instant::now(),
                            failures: 0,
                            running: false,
                            served: false,
                        }
                    });
                }
            }
            if let Some(ca) = &ca {
                let now = Instant::now();
                let mut due: Vec<(&String, &mut Domain)> = domains
                    .iter_mut()
                    .filter(|(_, d)| !d.running && d.next <= now)
                    .collect();
                due.sort_by_key(|(_, d)| d.next);
                for (name, d) in due
                    .into_iter()
                    .take(MAX_RUNNING.saturating_sub(running.len()))
                {
                    d.running = true;
                    let (store, ca, name) = (self.store.clone(), ca.clone(), name.clone());
                    running.spawn(async move {
                        let outcome = check(store, ca, name.clone()).await;
                        (name, outcome)
                    });
                }
            }
            let wake = domains
                .values()
                .filter(|d| !d.running)
                .map(|d| d.next)
                .min()
                .unwrap_or_else(Instant::now)
                .max(Instant::now())
                .min(Instant::now() + FOLLOW);
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    let Ok((name, outcome)) = done else { continue };
                    let Some(d) = domains.get_mut(&name) else {
                        // Dropped by a reload while it ran.
                        self.store.acme.retain(|x| domains.contains_key(x));
                        continue;
                    };
                    d.running = false;
                    let now = Instant::now();
                    match outcome {
                        Outcome::Current { due, not_after } => {
                            if !d.served {
                                info!(
                                    "ACME {name}: serving the stored certificate (valid until {not_after}, renewal in {})",
                                    human(until(due))
                                );
                            }
                            d.served = true;
                            d.failures = 0;
                            d.next = now + until(due).min(CHECK_EVERY);
                        }
                        Outcome::Issued { due } => {
                            self.count(&name, "success");
                            d.served = true;
                            d.failures = 0;
                            d.next = now + until(due).min(CHECK_EVERY);
                        }
                        Outcome::Busy => {
                            info!("ACME {name}: another process is ordering it; looking again in {}", human(self.backoff.min));
                            d.next = now + self.backoff.min;
                        }
                        Outcome::Failed(why) => {
                            self.count(&name, "failure");
                            d.failures += 1;
                            let wait = self.backoff.after(d.failures);
                            d.next = now + wait;
                            error!(
                                "ACME order for {name}: failure ({} in a row): {why}; retrying in {}",
                                d.failures,
                                human(wait)
                            );
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let waits: Vec<u64> = (1..=8).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(b.after(1000).as_secs(), 3600);
    }

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
