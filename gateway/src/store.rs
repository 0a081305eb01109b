//! The holder of the current [`Snapshot`]: one atomic pointer, swapped whole on a reload,
//! plus the reload counters the metrics export, the reload history the admin API shows, the
//! process's [`Monitor`] (recent requests, traffic, health), which outlives every generation,
//! and the TLS state that changes between reloads (certificates issued by ACME, pending
//! challenges).

use crate::monitor::Monitor;
use crate::snapshot::Snapshot;
use anygate_plugins::access_log::rfc3339_millis;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How many reloads the history keeps (SPEC §12: the last 50).
pub const HISTORY: usize = 50;

/// What started a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The first load, at start.
    Start,
    /// The file changed.
    File,
    /// SIGHUP.
    Signal,
    /// `POST /api/v1/reload`.
    Api,
    /// Cluster mode: the etcd key changed (or a resync found it changed).
    Etcd,
}

/// One load, as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadRecord {
    pub time: String,
    /// `success` or `failure`.
    pub result: &'static str,
    pub trigger: Trigger,
    /// The generation published, or (failure) the one that kept serving.
    pub generation: u64,
    /// Every error as `file:line:col: message` (empty on success).
    pub errors: Vec<String>,
    /// How long reading and compiling took (`null` for the first load).
    pub duration_ms: Option<f64>,
}

impl ReloadRecord {
    /// A reload (from the file or from etcd) that just ended, taking `took`.
    pub fn now(trigger: Trigger, generation: u64, errors: Vec<String>, took: Duration) -> Self {
        ReloadRecord {
            time: rfc3339_millis(SystemTime::now()),
            result: if errors.is_empty() {
                "success"
            } else {
                "failure"
            },
            trigger,
            generation,
            errors,
            duration_ms: Some(took.as_micros() as f64 / 1000.0),
        }
    }
}

/// Holds the current snapshot and the reload bookkeeping.
pub struct Store {
    current: ArcSwap<Snapshot>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Unix seconds of the last successful load.
    pub last_success: AtomicU64,
    /// ACME certificates and challenges: swapped on their own, beside the snapshot, so an
    /// issued certificate never waits for (or races with) a config reload.
    pub acme: crate::acme::Live,
    /// Unix milliseconds of the load of the current generation.
    loaded_at_ms: AtomicU64,
    history: Mutex<VecDeque<ReloadRecord>>,
    pub monitor: Monitor,
    /// The generation, for whoever must act when one is published (open streams).
    published: watch::Sender<u64>,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Store {
    pub fn new(first: Snapshot) -> Store {
        let monitor = Monitor::new(first.admin.recent_requests, first.listeners.admin.is_some());
        monitor.sync(&first);
        let now = unix_now();
        let start = ReloadRecord {
            time: rfc3339_millis(SystemTime::now()),
            result: "success",
            trigger: Trigger::Start,
            generation: first.generation,
            errors: Vec::new(),
            duration_ms: None,
        };
        let (published, _) = watch::channel(first.generation);
        Store {
            current: ArcSwap::from_pointee(first),
            published,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_success: AtomicU64::new(now.as_secs()),
            loaded_at_ms: AtomicU64::new(now.as_millis() as u64),
            history: Mutex::new(VecDeque::from([start])),
            monitor,
            acme: crate::acme::Live::default(),
        }
    }

    /// The snapshot a new request runs on.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How client connections wait for requests now (read once per request, without taking a
    /// reference on the snapshot).
    pub fn front_settings(&self) -> crate::front::FrontSettings {
        self.current.load().front
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Publishes a new snapshot in one step.
    pub fn publish(&self, next: Snapshot) {
        self.monitor.sync(&next);
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.published.send_replace(generation);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        let now = unix_now();
        self.last_success.store(now.as_secs(), Ordering::Relaxed);
        self.loaded_at_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
    }

    /// Changes to the published generation, from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    pub fn record_failure(&self) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Unix time of the load of the current generation.
    pub fn loaded_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.loaded_at_ms.load(Ordering::Relaxed))
    }

    /// Adds a load to the history (the oldest goes past [`HISTORY`]).
    pub fn remember(&self, record: ReloadRecord) {
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(record);
    }

    /// The history, newest first.
    pub fn history(&self) -> Vec<ReloadRecord> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().rev().cloned().collect()
    }
}
