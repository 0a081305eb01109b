//! The ACME background service: follows the config's `tls: acme` domains, serves stored
//! certificates, and orders (a few at a time) the ones missing or due for renewal, retrying
//! failures with backoff. Never on the request path.

use super::domain::{check, same_ca, serve_stored, Ca, Outcome};
use super::files::FileStore;
use super::settings::Settings;
use crate::snapshot::Store;
use anygate_plugins::units::parse_duration;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinSet;

/// Orders (and storage checks) running at once; the rest wait their turn.
const MAX_RUNNING: usize = 3;
/// Every domain is looked at again at least this often (SPEC §11: at least hourly).
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How soon a domain another orderer holds is looked at again (its certificate is then
/// served from the shared store: etcd in cluster mode).
const BUSY_RETRY: Duration = Duration::from_secs(5);
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
    /// Cluster mode: the state lives in etcd, beside the config (SPEC §13).
    cluster: Option<Arc<crate::source::Bootstrap>>,
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
            cluster: None,
        })
    }

    /// Keeps the ACME state in etcd, under the config key of `cluster`'s bootstrap.
    pub fn in_cluster(mut self, cluster: Option<Arc<crate::source::Bootstrap>>) -> AcmeService {
        self.cluster = cluster;
        self
    }

    fn open(&self, settings: &Arc<Settings>) -> Result<Arc<Ca>, String> {
        let challenges = self.store.acme.challenges.clone();
        let store: Arc<dyn super::storage::CertStore> = match &self.cluster {
            Some(boot) => Arc::new(crate::source::EtcdStore::open(
                boot,
                &settings.directory,
                challenges,
            )),
            None => Arc::new(
                FileStore::open(&settings.storage, &settings.directory, challenges)
                    .map_err(|e| e.to_string())?,
            ),
        };
        Ok(Arc::new(Ca {
            settings: settings.clone(),
            store,
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
        // With I/O: the store may be etcd.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
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

/// The service's working state: the CA in use, every ACME domain's schedule, and the checks
/// running now.
struct Schedule {
    generation: u64,
    ca: Option<Arc<Ca>>,
    domains: HashMap<String, Domain>,
    running: JoinSet<(String, Outcome)>,
}

impl AcmeService {
    /// Takes in a new config generation: a new CA or storage starts every domain afresh; a
    /// reload re-checks the healthy domains at once (so a deleted certificate file is ordered
    /// again) but leaves failing ones to their backoff (so reloads cannot hammer the CA).
    fn follow(&self, s: &mut Schedule) {
        let snap = self.store.load();
        if snap.generation == s.generation {
            return;
        }
        s.generation = snap.generation;
        let settings = snap.tls.acme.clone();
        drop(snap);
        let now = Instant::now();
        match &settings {
            Some(new) if s.ca.as_ref().is_some_and(|c| same_ca(&c.settings, new)) => {
                // Same CA and storage: new domains or renew_before only.
                if let Some(c) = s.ca.as_ref().filter(|c| c.settings != *new) {
                    s.ca = Some(Arc::new(Ca {
                        settings: new.clone(),
                        store: c.store.clone(),
                        account: c.account.clone(),
                    }));
                }
            }
            Some(new) => {
                s.domains.clear();
                s.ca = match self.open(new) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        error!(
                            "ACME: cannot use the storage: {e}; no certificates will be ordered"
                        );
                        None
                    }
                };
            }
            None => s.ca = None,
        }
        let wanted: &[String] = match (&s.ca, &settings) {
            (Some(_), Some(new)) => &new.domains,
            _ => &[],
        };
        s.domains.retain(|d, _| wanted.contains(d));
        self.store.acme.retain(|d| wanted.iter().any(|w| w == d));
        for d in s.domains.values_mut().filter(|d| d.failures == 0) {
            d.next = now;
        }
        for d in wanted {
            s.domains.entry(d.clone()).or_insert_with(|| {
                for r in ["success", "failure"] {
                    let _ = self.orders.get_metric_with_label_values(&[d, r]);
                }
                Domain {
                    next: now,
                    failures: 0,
                    running: false,
                    served: false,
                }
            });
        }
    }

    /// Starts the checks that are due, oldest first, while fewer than [`MAX_RUNNING`] run.
    fn launch(&self, s: &mut Schedule) {
        let Some(ca) = &s.ca else {
            return;
        };
        let now = Instant::now();
        let mut due: Vec<(&String, &mut Domain)> = s
            .domains
            .iter_mut()
            .filter(|(_, d)| !d.running && d.next <= now)
            .collect();
        due.sort_by_key(|(_, d)| d.next);
        for (name, d) in due
            .into_iter()
            .take(MAX_RUNNING.saturating_sub(s.running.len()))
        {
            d.running = true;
            let (store, ca, name) = (self.store.clone(), ca.clone(), name.clone());
            s.running.spawn(async move {
                let outcome = check(store, ca, name.clone()).await;
                (name, outcome)
            });
        }
    }

    /// Counts, logs and schedules the next check of a finished one.
    fn finished(&self, s: &mut Schedule, name: String, outcome: Outcome) {
        let Some(d) = s.domains.get_mut(&name) else {
            // Dropped by a reload while it ran.
            self.store.acme.retain(|x| s.domains.contains_key(x));
            return;
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
                let wait = self.backoff.min.min(BUSY_RETRY);
                info!(
                    "ACME {name}: another process is ordering it; looking again in {}",
                    human(wait)
                );
                d.next = now + wait;
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
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut s = Schedule {
            generation: 0,
            ca: None,
            domains: HashMap::new(),
            running: JoinSet::new(),
        };
        let mut published = self.store.subscribe();
        loop {
            self.follow(&mut s);
            self.launch(&mut s);
            // Wake for the next due check (when a check could start: else a finished one
            // wakes us), for a new config generation, or at least every CHECK_EVERY.
            let now = Instant::now();
            let full = s.running.len() >= MAX_RUNNING;
            let wake = s
                .domains
                .values()
                .filter(|d| !d.running && !full)
                .map(|d| d.next)
                .min()
                .unwrap_or(now + CHECK_EVERY)
                .clamp(now, now + CHECK_EVERY);
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(done) = s.running.join_next(), if !s.running.is_empty() => {
                    if let Ok((name, outcome)) = done {
                        self.finished(&mut s, name, outcome);
                    }
                }
                Ok(()) = published.changed() => {}
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
}
