//! Hot reload (SPEC §9): the config file is watched (inotify through `notify`, with a polling
//! fallback) and every change is compiled off the request path and published in one step. An
//! invalid file changes nothing: the old snapshot keeps serving and the error is logged with
//! `file:line:col`. SIGHUP reloads at once.

use crate::config::{self, ConfigErrors};
use crate::snapshot::{self, Snapshot, Store};
use crate::store::{ReloadRecord, Trigger};
use async_trait::async_trait;
use log::{error, info, warn};
use notify::{RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events closer together than this are one change (editors write in several steps).
const QUIET: Duration = Duration::from_millis(50);
/// ...but a stream of events never delays a reload by more than this.
const MAX_DEBOUNCE: Duration = Duration::from_millis(300);
/// Safety-net poll when inotify works, and the only mechanism when it does not.
const POLL_WITH_WATCHER: Duration = Duration::from_secs(1);
const POLL_WITHOUT_WATCHER: Duration = Duration::from_millis(250);

/// What a check of the file did.
#[derive(Debug)]
pub enum Outcome {
    /// Same content as the last attempt: nothing to do.
    Unchanged,
    /// Published as this generation, compiled in this long.
    Applied { generation: u64, took: Duration },
    /// Kept the old snapshot.
    Failed(ConfigErrors),
}

/// Identity of the file behind the path (following symlinks), to notice changes cheaply.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    target: Option<PathBuf>,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        target: std::fs::canonicalize(path).ok(),
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct Seen {
    /// Hash of the content last attempted (applied or failed), or of the read error.
    hash: Option<u64>,
    stamp: Option<Stamp>,
}

/// Compiles and publishes the config file when its content changes.
pub struct Reloader {
    path: PathBuf,
    store: Arc<Store>,
    seen: Mutex<Seen>,
    /// One check at a time (the file watcher, SIGHUP and the admin API may ask together):
    /// each compiles the generation after the current one.
    one: Mutex<()>,
    /// Watch the file (else only SIGHUP reloads).
    watch: bool,
}

impl Reloader {
    /// `loaded` is the text the running snapshot was compiled from.
    pub fn new(path: PathBuf, store: Arc<Store>, loaded: &[u8], watch: bool) -> Reloader {
        let seen = Seen {
            hash: Some(hash_of(loaded)),
            stamp: stamp(&path),
        };
        Reloader {
            path,
            store,
            seen: Mutex::new(seen),
            one: Mutex::new(()),
            watch,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the file's identity or timestamps moved since the last check.
    pub fn stamp_changed(&self) -> bool {
        stamp(&self.path) != self.seen().stamp
    }

    /// Reads the file and, if its content changed (or unless `trigger` is a file change),
    /// compiles and publishes it.
    pub fn check(&self, trigger: Trigger) -> Outcome {
        let force = trigger != Trigger::File;
        let _one = self.one.lock().unwrap_or_else(|e| e.into_inner());
        let now_stamp = stamp(&self.path);
        let read = std::fs::read(&self.path);
        let hash = match &read {
            Ok(bytes) => hash_of(bytes),
            Err(e) => hash_of(e.to_string().as_bytes()),
        };
        // An in-place write truncates first: an empty file is far more often half-written than
        // meant, and would be refused anyway (`env` is required). Wait for its content.
        if !force && read.as_ref().is_ok_and(|b| b.is_empty()) {
            warn!(
                "config {} is empty (being written?); generation {} keeps serving",
                self.path.display(),
                self.store.generation()
            );
            return Outcome::Unchanged;
        }
        {
            let mut seen = self.seen();
            seen.stamp = now_stamp;
            if !force && seen.hash == Some(hash) {
                return Outcome::Unchanged;
            }
            seen.hash = Some(hash);
        }
        let started = Instant::now();
        let current = self.store.load();
        let result = read
            .map_err(|e| {
                ConfigErrors(vec![config::ConfigError {
                    file: self.path.display().to_string(),
                    mark: config::Mark { line: 1, col: 1 },
                    message: format!("cannot read the file: {e}"),
                }])
            })
            .and_then(|bytes| {
                let text = String::from_utf8(bytes).map_err(|_| {
                    ConfigErrors(vec![config::ConfigError {
                        file: self.path.display().to_string(),
                        mark: config::Mark { line: 1, col: 1 },
                        message: "the file is not UTF-8".into(),
                    }])
                })?;
                let file = config::load_str(&self.path, &text)?;
                snapshot::compile(
                    &file,
                    current.generation + 1,
                    &snapshot::process_env,
                    &current.telemetry,
                    Some(&current),
                )
            });
        match result {
            Ok(mut next) => {
                keep_fixed_settings(&current, &mut next);
                let generation = next.generation;
                let summary = format!(
                    "chain [{}], {} instances, {} routes",
                    next.chain.names().join(", "),
                    next.routes.instances().count(),
                    next.routes.routes().len()
                );
                self.store.publish(next);
                let took = started.elapsed();
                self.remember(trigger, generation, Vec::new(), took);
                info!(
                    "config {} reloaded: generation {generation} in {} ms ({summary})",
                    self.path.display(),
                    took.as_millis()
                );
                Outcome::Applied { generation, took }
            }
            Err(errors) => {
                self.store.record_failure();
                let list = errors.0.iter().map(|e| e.to_string()).collect();
                self.remember(trigger, current.generation, list, started.elapsed());
                error!(
                    "config {} NOT reloaded, generation {} keeps serving:\n{errors}",
                    self.path.display(),
                    current.generation
                );
                Outcome::Failed(errors)
            }
        }
    }
}

/// What loads the config again on demand (`POST /api/v1/reload`): the file's [`Reloader`],
/// or in cluster mode the etcd watcher ([`crate::source`]).
#[async_trait]
pub trait Reload: Send + Sync {
    /// Loads the config now, whatever changed. Returns what happened and the generation that
    /// was serving before.
    async fn reload(self: Arc<Self>, trigger: Trigger) -> (Outcome, u64);
}

#[async_trait]
impl Reload for Reloader {
    async fn reload(self: Arc<Self>, trigger: Trigger) -> (Outcome, u64) {
        let serving = self.store.generation();
        // Compiling reads files and may resolve names: keep it off the async threads.
        match tokio::task::spawn_blocking(move || self.check(trigger)).await {
            Ok(outcome) => (outcome, serving),
            Err(e) => (
                Outcome::Failed(ConfigErrors(vec![config::ConfigError {
                    file: String::new(),
                    mark: config::Mark { line: 1, col: 1 },
                    message: format!("the reload task failed: {e}"),
                }])),
                serving,
            ),
        }
    }
}

impl Reloader {
    fn remember(&self, trigger: Trigger, generation: u64, errors: Vec<String>, took: Duration) {
        self.store
            .remember(ReloadRecord::now(trigger, generation, errors, took));
    }
}

/// Listener addresses and Pingora settings are bound at start: a change is logged and ignored
/// until a restart (graceful upgrade).
pub(crate) fn keep_fixed_settings(current: &Snapshot, next: &mut Snapshot) {
    if next.listeners != current.listeners {
        warn!(
            "listener addresses changed ({:?} -> {:?}): this needs a restart (graceful upgrade, `anygate run -u`); still listening on the old ones",
            current.listeners, next.listeners
        );
        next.listeners = current.listeners.clone();
    }
    crate::streams::warn_listener_changes(&current.streams, &next.streams);
    if next.server != current.server {
        warn!(
            "`server` settings changed ({:?} -> {:?}): this needs a restart (graceful upgrade, `anygate run -u`); the old ones stay in force",
            current.server, next.server
        );
        next.server = current.server.clone();
    }
    if next.admin.recent_requests != current.admin.recent_requests {
        warn!(
            "`admin.recent_requests` changed ({} -> {}): the buffer is sized at start, this needs a restart; it keeps {} records",
            current.admin.recent_requests, next.admin.recent_requests, current.admin.recent_requests
        );
        next.admin.recent_requests = current.admin.recent_requests;
    }
}

/// The directories to watch: the one holding the path as given (renames and Kubernetes'
/// `..data` swaps land there) and the one holding the file it resolves to (in-place edits of
/// a symlink's target land there).
fn watch_dirs(path: &Path) -> HashSet<PathBuf> {
    let mut dirs = HashSet::new();
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dirs.insert(parent(path));
    if let Ok(target) = std::fs::canonicalize(path) {
        dirs.insert(parent(&target));
    }
    dirs
}

/// The Pingora background service that drives the [`Reloader`]: file events (debounced),
/// SIGHUP, and a periodic stat as a safety net.
pub struct ReloadService {
    reloader: Arc<Reloader>,
}

impl ReloadService {
    pub fn new(reloader: Arc<Reloader>) -> ReloadService {
        ReloadService { reloader }
    }

    async fn run_check(&self, trigger: Trigger) {
        let r = self.reloader.clone();
        // Compiling reads files and may resolve names: keep it off the async threads.
        if let Err(e) = tokio::task::spawn_blocking(move || r.check(trigger)).await {
            error!("config reload task failed: {e}");
        }
    }
}

struct Watch {
    watcher: notify::RecommendedWatcher,
    dirs: HashSet<PathBuf>,
    names: Arc<std::sync::RwLock<HashSet<std::ffi::OsString>>>,
}

/// Whether an event in a watched directory can concern the config file: its own name or its
/// target's, a Kubernetes ConfigMap's `..data` swap, or an event without paths (a rescan).
/// Anything else there (an access log written next to the config) is not worth a look.
fn concerns(event: &notify::Event, names: &HashSet<std::ffi::OsString>) -> bool {
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."))
        })
}

impl Watch {
    fn new(tx: mpsc::UnboundedSender<()>) -> Option<Watch> {
        let names: Arc<std::sync::RwLock<HashSet<std::ffi::OsString>>> = Arc::default();
        let seen = names.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let wanted = match &event {
                Ok(e) => seen.read().map_or(true, |n| concerns(e, &n)),
                Err(_) => false,
            };
            if wanted {
                let _ = tx.send(());
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(Watch {
                watcher,
                dirs: HashSet::new(),
                names,
            }),
            Err(e) => {
                warn!("cannot watch the config file ({e}); polling it every {POLL_WITHOUT_WATCHER:?} instead");
                None
            }
        }
    }

    /// Follows the path to where it resolves now (a symlink may have moved).
    fn update(&mut self, path: &Path) {
        let mut names: HashSet<std::ffi::OsString> =
            path.file_name().map(Into::into).into_iter().collect();
        if let Some(n) = std::fs::canonicalize(path)
            .ok()
            .and_then(|t| t.file_name().map(Into::into))
        {
            names.insert(n);
        }
        if let Ok(mut n) = self.names.write() {
            *n = names;
        }
        let want = watch_dirs(path);
        for gone in self.dirs.difference(&want) {
            let _ = self.watcher.unwatch(gone);
        }
        for dir in want.difference(&self.dirs) {
            if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                warn!("cannot watch {}: {e}", dir.display());
            }
        }
        self.dirs = want;
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut watch = if self.reloader.watch {
            Watch::new(tx.clone())
        } else {
            info!(
                "not watching {} (--no-watch): SIGHUP reloads it",
                self.reloader.path().display()
            );
            None
        };
        if let Some(w) = watch.as_mut() {
            w.update(self.reloader.path());
        }
        let poll = if watch.is_some() {
            POLL_WITH_WATCHER
        } else {
            POLL_WITHOUT_WATCHER
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("cannot handle SIGHUP ({e}); reload by changing the file");
                None
            }
        };
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if self.reloader.watch {
            info!(
                "watching {} for changes (SIGHUP reloads at once)",
                self.reloader.path().display()
            );
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = rx.recv() => {
                    let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    while let Ok(Some(())) = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + QUIET),
                        rx.recv(),
                    )
                    .await
                    {}
                    self.run_check(Trigger::File).await;
                }
                Some(()) = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    info!("SIGHUP: reloading {}", self.reloader.path().display());
                    self.run_check(Trigger::Signal).await;
                }
                _ = tick.tick(), if self.reloader.watch => {
                    if self.reloader.stamp_changed() {
                        self.run_check(Trigger::File).await;
                    }
                }
            }
            if let Some(w) = watch.as_mut() {
                w.update(self.reloader.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::concerns;
    use std::collections::HashSet;
    use std::path::PathBuf;

    fn event(paths: &[&str]) -> notify::Event {
        let mut e = notify::Event::new(notify::EventKind::Any);
        e.paths = paths.iter().map(PathBuf::from).collect();
        e
    }

    #[test]
    fn only_events_about_the_config_file_count() {
        let names: HashSet<_> = ["anygate.yaml".into()].into_iter().collect();
        assert!(concerns(&event(&["/etc/anygate/anygate.yaml"]), &names));
        assert!(concerns(&event(&["/etc/anygate/..data"]), &names));
        assert!(concerns(
            &event(&["/etc/anygate/..2026_11_29_10_00"]),
            &names
        ));
        assert!(concerns(&event(&[]), &names));
        assert!(!concerns(&event(&["/etc/anygate/access.log"]), &names));
        assert!(!concerns(
            &event(&["/etc/anygate/anygate.yaml.swp"]),
            &names
        ));
    }
}
