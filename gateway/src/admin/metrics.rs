//! Metrics read from the store at scrape time: `anygate_config_*` (SPEC §10) and
//! `anygate_instance_up` (SPEC §12).

use crate::snapshot::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// `anygate_config_*`.
pub struct ConfigMetrics {
    store: Arc<Store>,
    reloads: IntCounterVec,
    generation: IntGauge,
    last_success: Gauge,
    /// One scrape at a time brings the counters up to date.
    sync: Mutex<()>,
}

impl ConfigMetrics {
    pub fn new(store: Arc<Store>) -> Result<ConfigMetrics, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "anygate_config_reloads_total",
                "Config reloads since start, by result (success or failure).",
            ),
            &["result"],
        )?;
        for r in ["success", "failure"] {
            let _ = reloads.get_metric_with_label_values(&[r]);
        }
        Ok(ConfigMetrics {
            store,
            reloads,
            generation: IntGauge::new(
                "anygate_config_generation",
                "Generation of the config serving new requests (1 = the one loaded at start).",
            )?,
            last_success: Gauge::new(
                "anygate_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load.",
            )?,
            sync: Mutex::new(()),
        })
    }

    fn catch_up(&self, result: &str, total: u64) {
        if let Ok(c) = self.reloads.get_metric_with_label_values(&[result]) {
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        }
    }
}

impl Collector for ConfigMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.reloads.desc();
        d.extend(self.generation.desc());
        d.extend(self.last_success.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.sync.lock();
        let s = &self.store;
        self.catch_up("success", s.reloads_ok.load(Ordering::Relaxed));
        self.catch_up("failure", s.reloads_failed.load(Ordering::Relaxed));
        self.generation
            .set(i64::try_from(s.generation()).unwrap_or(i64::MAX));
        self.last_success
            .set(s.last_success.load(Ordering::Relaxed) as f64);
        let mut out = self.reloads.collect();
        out.extend(self.generation.collect());
        out.extend(self.last_success.collect());
        out
    }
}

/// `anygate_instance_up{instance}`: one series per instance of the running config (an
/// instance removed by a reload loses its series, so no alert fires for it forever).
pub struct HealthMetrics {
    store: Arc<Store>,
    up: IntGaugeVec,
    sync: Mutex<()>,
}

impl HealthMetrics {
    pub fn new(store: Arc<Store>) -> Result<HealthMetrics, prometheus::Error> {
        Ok(HealthMetrics {
            store,
            up: IntGaugeVec::new(
                Opts::new(
                    "anygate_instance_up",
                    "1 unless the instance is known to be down (health checks, or failed proxied requests).",
                ),
                &["instance"],
            )?,
            sync: Mutex::new(()),
        })
    }
}

impl Collector for HealthMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.up.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.sync.lock();
        self.up.reset();
        for (id, up) in self.store.monitor.health.up() {
            if let Ok(g) = self.up.get_metric_with_label_values(&[&id]) {
                g.set(i64::from(up));
            }
        }
        self.up.collect()
    }
}
