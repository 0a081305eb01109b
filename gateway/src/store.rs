//! The holder of the current [`Snapshot`]: one atomic pointer, swapped whole on a reload,
//! plus the reload counters the metrics export, and the TLS state that changes between
//! reloads (certificates issued by ACME, pending challenges).

use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

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
    /// The generation, for whoever must act when one is published (open streams).
    published: watch::Sender<u64>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    pub fn new(first: Snapshot) -> Store {
        let (published, _) = watch::channel(first.generation);
        Store {
            current: ArcSwap::from_pointee(first),
            published,
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_success: AtomicU64::new(unix_now()),
            acme: crate::acme::Live::default(),
        }
    }

    /// The snapshot a new request runs on.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Publishes a new snapshot in one step.
    pub fn publish(&self, next: Snapshot) {
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.published.send_replace(generation);
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        self.last_success.store(unix_now(), Ordering::Relaxed);
    }

    /// Changes to the published generation, from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    pub fn record_failure(&self) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
    }
}
