//! The etcd watcher: the background service that keeps a replica on the newest document.
//! It watches the key from the revision after the one it loaded, checks the cluster every
//! few seconds, and on any failure keeps serving, backs off and resyncs. A compacted start
//! revision means reading the key again.

use super::bootstrap::{compile_document, Bootstrap};
use super::cache;
use super::etcd::{Etcd, EtcdError};
use crate::config::{ConfigError, ConfigErrors, Mark};
use crate::reload::{Outcome, Reload};
use crate::snapshot::{self, Purpose, Store};
use crate::store::{ReloadRecord, Trigger};
use async_trait::async_trait;
use etcd_client::EventType;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntGauge;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::Signal;
use tokio::sync::{mpsc, oneshot};

/// A reload asked for by the admin API, and where to send what it did.
type Ask = oneshot::Sender<(Outcome, u64)>;

/// How often the watcher checks that etcd still answers (and that no change was missed).
const HEALTH: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Retry delays: doubling from [`FIRST_RETRY`] to [`MAX_RETRY`], with jitter so that many
/// replicas do not knock on etcd in step.
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (d * 2).min(MAX_RETRY);
        d.mul_f64(0.8 + fastrand::f64() * 0.4)
    }

    fn reset(&mut self) {
        self.0 = FIRST_RETRY;
    }
}

/// What the watcher knows of the key.
struct Seen {
    /// The last revision of the key acted on (served, or refused because it did not compile).
    revision: i64,
    /// The key was deleted after `revision` (reported once).
    deleted: bool,
}

/// Keeps the store on the newest document of the etcd key.
pub struct EtcdWatch {
    boot: Arc<Bootstrap>,
    store: Arc<Store>,
    /// `anygate_config_source_up`.
    up: IntGauge,
    /// The revision acted on at start.
    first: i64,
    asks: mpsc::Sender<Ask>,
    /// Taken by the service when it starts.
    asked: Mutex<Option<mpsc::Receiver<Ask>>>,
}

/// `POST /api/v1/reload` in cluster mode: the watcher reads the key again.
pub struct EtcdReload {
    asks: mpsc::Sender<Ask>,
    store: Arc<Store>,
}

#[async_trait]
impl Reload for EtcdReload {
    async fn reload(self: Arc<Self>, _trigger: Trigger) -> (Outcome, u64) {
        let serving = self.store.generation();
        let (tx, rx) = oneshot::channel();
        let failed = |msg: &str| {
            Outcome::Failed(ConfigErrors(vec![ConfigError {
                file: "etcd".into(),
                mark: Mark { line: 1, col: 1 },
                message: msg.to_string(),
            }]))
        };
        if self.asks.send(tx).await.is_err() {
            return (failed("the etcd watcher is not running"), serving);
        }
        match rx.await {
            Ok(answer) => answer,
            Err(_) => (failed("the etcd watcher stopped"), serving),
        }
    }
}

impl EtcdWatch {
    pub fn new(boot: Arc<Bootstrap>, store: Arc<Store>, up: IntGauge, first: i64) -> EtcdWatch {
        let (asks, asked) = mpsc::channel(8);
        EtcdWatch {
            boot,
            store,
            up,
            first,
            asks,
            asked: Mutex::new(Some(asked)),
        }
    }

    pub fn bootstrap(&self) -> Arc<Bootstrap> {
        self.boot.clone()
    }

    pub fn handle(&self) -> EtcdReload {
        EtcdReload {
            asks: self.asks.clone(),
            store: self.store.clone(),
        }
    }

    fn remember(&self, trigger: Trigger, generation: u64, errors: Vec<String>, took: Duration) {
        self.store
            .remember(ReloadRecord::now(trigger, generation, errors, took));
    }

    /// One watch after another on a reachable member, until etcd fails; returns why.
    async fn session(
        &self,
        etcd: &mut Etcd,
        seen: &mut Seen,
        hup: &mut Option<Signal>,
        asked: &mut mpsc::Receiver<Ask>,
        backoff: &mut Backoff,
    ) -> String {
        let key = self.boot.key.clone();
        loop {
            let from = seen.revision + 1;
            let mut stream = match etcd.watch(&key, from).await {
                Ok(s) => s,
                Err(e) => return format!("cannot watch: {e}"),
            };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEALTH, HEALTH);
            let mut created = false;
            // Each pass ends in a resync (compaction, a missed change) and a new watch.
            loop {
                tokio::select! {
                    msg = stream.message() => match msg {
                        Err(e) => return format!("the watch on {} failed: {e}", etcd.endpoint()),
                        Ok(None) => return format!("{} ended the watch", etcd.endpoint()),
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                warn!(
                                    "etcd compacted revision {from} of {key} away (it keeps revisions from {}): reading the key again",
                                    resp.compact_revision()
                                );
                                break;
                            }
                            if resp.canceled() {
                                return format!("etcd canceled the watch ({})", resp.cancel_reason());
                            }
                            if resp.created() && !created {
                                created = true;
                                self.up.set(1);
                                backoff.reset();
                                info!("config source: watching etcd key {key} from revision {from} on {}", etcd.endpoint());
                            }
                            if let Some(ev) = resp.events().last() {
                                self.event(ev, seen).await;
                            }
                        }
                    },
                    _ = tick.tick() => match etcd.stat(&key).await {
                        Err(e) => return format!("health check failed: {e}"),
                        Ok(r) => {
                            let now = r.kvs().first().map(|kv| kv.mod_revision());
                            let in_step = match now {
                                Some(rev) => rev == seen.revision && !seen.deleted,
                                None => seen.deleted,
                            };
                            if !in_step {
                                // The watch missed a change (or has not delivered it yet):
                                // read the key and start a new watch after it.
                                break;
                            }
                        }
                    },
                    _ = next_hup(hup) => {
                        info!("SIGHUP: reading etcd key {key} again");
                        if let Err(e) = self.resync(etcd, seen, Some(Trigger::Signal)).await {
                            return e.to_string();
                        }
                    }
                    Some(ask) = asked.recv() => {
                        let serving = self.store.generation();
                        match self.resync(etcd, seen, Some(Trigger::Api)).await {
                            Ok(outcome) => {
                                let _ = ask.send((outcome, serving));
                            }
                            Err(e) => {
                                let _ = ask.send((unreachable(&e.to_string()), serving));
                                return e.to_string();
                            }
                        }
                    }
                }
            }
            if let Err(e) = self.resync(etcd, seen, None).await {
                return e.to_string();
            }
        }
    }

    async fn event(&self, ev: &etcd_client::Event, seen: &mut Seen) {
        let Some(kv) = ev.kv() else { return };
        match ev.event_type() {
            EventType::Put => {
                self.apply(kv.mod_revision(), kv.value(), seen, None).await;
            }
            EventType::Delete => self.deleted(kv.mod_revision(), seen),
        }
    }

    fn deleted(&self, revision: i64, seen: &mut Seen) {
        if seen.deleted {
            return;
        }
        seen.revision = revision.max(seen.revision);
        seen.deleted = true;
        self.store.record_failure();
        let msg = format!(
            "etcd key {} was deleted (revision {revision})",
            self.boot.key
        );
        self.remember(
            Trigger::Etcd,
            self.store.generation(),
            vec![msg],
            Duration::ZERO,
        );
        error!(
            "etcd key {} was deleted (revision {revision}): generation {} keeps serving until a config is pushed",
            self.boot.key,
            self.store.generation()
        );
    }

    /// Reads the key and loads it if it is not what was seen, or whatever it is when asked
    /// (`force`: SIGHUP, the admin API).
    async fn resync(
        &self,
        etcd: &mut Etcd,
        seen: &mut Seen,
        force: Option<Trigger>,
    ) -> Result<Outcome, EtcdError> {
        let r = etcd.get(&self.boot.key, 0).await?;
        Ok(match r.kvs().first() {
            Some(kv) => {
                let changed = kv.mod_revision() != seen.revision || seen.deleted;
                match (changed, force) {
                    (_, Some(t)) => {
                        self.apply(kv.mod_revision(), kv.value(), seen, Some(t))
                            .await
                    }
                    (true, None) => {
                        self.apply(kv.mod_revision(), kv.value(), seen, Some(Trigger::Etcd))
                            .await
                    }
                    (false, None) => Outcome::Unchanged,
                }
            }
            None => {
                self.deleted(r.header().map_or(seen.revision, |h| h.revision()), seen);
                let msg = format!("etcd key {} does not exist", self.boot.key);
                Outcome::Failed(ConfigErrors(vec![ConfigError {
                    file: format!("etcd:{}", self.boot.key),
                    mark: Mark { line: 1, col: 1 },
                    message: msg,
                }]))
            }
        })
    }

    /// Compiles the document at `revision` and publishes it (after caching it), or counts a
    /// failed reload and keeps the current generation. A revision already acted on is
    /// skipped unless `force` names who asked for it again.
    async fn apply(
        &self,
        revision: i64,
        value: &[u8],
        seen: &mut Seen,
        force: Option<Trigger>,
    ) -> Outcome {
        if revision == seen.revision && !seen.deleted && force.is_none() {
            return Outcome::Unchanged;
        }
        let trigger = force.unwrap_or(Trigger::Etcd);
        if revision < seen.revision {
            warn!(
                "etcd key {} is at revision {revision}, older than revision {} seen here (etcd restored from a backup?): loading it",
                self.boot.key, seen.revision
            );
        }
        seen.revision = revision;
        seen.deleted = false;
        let name = self.boot.document_name(revision);
        let boot = self.boot.clone();
        let store = self.store.clone();
        let value = value.to_vec();
        let started = Instant::now();
        // Compiling reads files and may resolve names; the cache is written to disk.
        let task = tokio::task::spawn_blocking(move || load(&boot, &store, &name, revision, value));
        let name = self.boot.document_name(revision);
        match task.await {
            Ok(Ok((generation, summary))) => {
                let took = started.elapsed();
                self.remember(trigger, generation, Vec::new(), took);
                info!(
                    "config {name} loaded: generation {generation} in {} ms ({summary})",
                    took.as_millis()
                );
                Outcome::Applied { generation, took }
            }
            Ok(Err(errors)) => {
                let list = errors.0.iter().map(|e| e.to_string()).collect();
                self.remember(trigger, self.store.generation(), list, started.elapsed());
                error!(
                    "config {name} NOT loaded, generation {} keeps serving:\n{errors}",
                    self.store.generation()
                );
                Outcome::Failed(errors)
            }
            Err(e) => {
                error!("config load task failed: {e}");
                unreachable(&format!("the load task failed: {e}"))
            }
        }
    }
}

/// A failed reload that no document is to blame for.
fn unreachable(why: &str) -> Outcome {
    Outcome::Failed(ConfigErrors(vec![ConfigError {
        file: "etcd".into(),
        mark: Mark { line: 1, col: 1 },
        message: why.to_string(),
    }]))
}

fn load(
    boot: &Bootstrap,
    store: &Store,
    name: &str,
    revision: i64,
    value: Vec<u8>,
) -> Result<(u64, String), ConfigErrors> {
    let current = store.load();
    let text = String::from_utf8(value).map_err(|_| {
        ConfigErrors(vec![ConfigError {
            file: name.to_string(),
            mark: Mark { line: 1, col: 1 },
            message: "the document is not UTF-8".into(),
        }])
    });
    let compiled = text.and_then(|text| {
        let generation = u64::try_from(revision).unwrap_or(0);
        compile_document(
            boot,
            name,
            &text,
            generation,
            &snapshot::process_env,
            &current.telemetry,
            Some(&current),
            Purpose::Serve,
        )
        .snapshot
        .map(|s| (s, text))
    });
    match compiled {
        Ok((mut next, text)) => {
            crate::reload::keep_fixed_settings(&current, &mut next);
            if let Some(path) = &boot.cache {
                // Before publishing: the cache is never older than what was served.
                if let Err(e) = cache::write(path, &boot.key, revision, &text) {
                    error!(
                        "cannot write the config cache {}: {e} (a restart while etcd is down would start from an older document)",
                        path.display()
                    );
                }
            }
            let summary = format!(
                "chain [{}], {} instances, {} routes",
                next.chain.names().join(", "),
                next.routes.instances().count(),
                next.routes.routes().len()
            );
            let generation = next.generation;
            store.publish(next);
            Ok((generation, summary))
        }
        Err(errors) => {
            store.record_failure();
            Err(errors)
        }
    }
}

async fn next_hup(hup: &mut Option<Signal>) {
    match hup.as_mut() {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl BackgroundService for EtcdWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut etcd = Etcd::new(&self.boot);
        let mut seen = Seen {
            revision: self.first,
            deleted: false,
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("cannot handle SIGHUP ({e})");
                None
            }
        };
        let mut backoff = Backoff(FIRST_RETRY);
        let taken = self.asked.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut asked) = taken else {
            error!("the etcd watcher was started twice");
            return;
        };
        loop {
            let why = tokio::select! {
                _ = shutdown.changed() => return,
                why = self.session(&mut etcd, &mut seen, &mut hup, &mut asked, &mut backoff) => why,
            };
            self.up.set(0);
            etcd.rotate();
            let wait = backoff.next();
            warn!(
                "config source: etcd unavailable ({why}); generation {} keeps serving; retrying in {} ms",
                self.store.generation(),
                wait.as_millis()
            );
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = next_hup(&mut hup) => info!("SIGHUP: trying etcd again now"),
                Some(ask) = asked.recv() => {
                    // Answered at once: the admin API does not wait out an outage.
                    let msg = format!("etcd is unavailable ({why}); generation {} keeps serving", self.store.generation());
                    let _ = ask.send((unreachable(&msg), self.store.generation()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let mut b = Backoff(FIRST_RETRY);
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(200) && waits[0] <= Duration::from_millis(300));
        assert!(waits[1] >= Duration::from_millis(400) && waits[1] <= Duration::from_millis(600));
        assert!(waits.iter().all(|w| *w <= MAX_RETRY.mul_f64(1.2)));
        assert!(waits[7] >= MAX_RETRY.mul_f64(0.8));
        b.reset();
        assert!(b.next() <= Duration::from_millis(300));
    }
}
