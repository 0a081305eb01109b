//! The admin listener (SPEC §10): `/metrics`, `/healthz`, `/readyz`, on its own address and
//! never on the public one. It reads the shutdown signal itself so that `/readyz` turns 503 as
//! soon as the process starts draining.

use crate::snapshot::Store;
use anygate_plugins::telemetry::Telemetry;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, StatusCode};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::{RequestHeader, ResponseHeader};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntCounterVec, IntGauge, Opts};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};

/// The Prometheus text format's content type.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Admin {
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    process: Once,
}

/// What the admin listener answers: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// `/readyz`: ready once a config is loaded, and no longer once the process drains.
pub fn readiness(loaded: bool, draining: bool) -> Answer {
    match (loaded, draining) {
        (_, true) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        ),
        (false, false) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no config loaded\n",
        ),
        (true, false) => text(StatusCode::OK, "ready\n"),
    }
}

/// Picks the answer for a request; `metrics` renders the scrape only when asked for.
pub fn route(
    req: &RequestHeader,
    loaded: bool,
    draining: bool,
    metrics: impl FnOnce() -> String,
) -> Answer {
    if req.method != Method::GET && req.method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri.path() {
        "/metrics" => Answer {
            status: StatusCode::OK,
            content_type: METRICS_TYPE,
            body: Bytes::from(metrics()),
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readiness(loaded, draining),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

impl Admin {
    /// The admin app; registers the config metrics of `store` in the telemetry registry.
    pub fn new(telemetry: Arc<Telemetry>, store: Arc<Store>) -> Result<Admin, prometheus::Error> {
        telemetry
            .registry
            .register(Box::new(ConfigMetrics::new(store.clone())?))?;
        Ok(Admin {
            telemetry,
            store,
            process: Once::new(),
        })
    }

    fn scrape(&self) -> String {
        // Registered on the first scrape: the collector keeps the pid it was made with, and
        // Pingora may have forked into a daemon since start-up.
        #[cfg(target_os = "linux")]
        self.process.call_once(|| {
            let c = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = self.telemetry.registry.register(Box::new(c)) {
                log::warn!("admin: process metrics unavailable: {e}");
            }
        });
        self.telemetry.render()
    }

    fn answer(&self, req: &RequestHeader, draining: bool) -> Option<(ResponseHeader, Bytes)> {
        let loaded = self.store.generation() > 0;
        let a = route(req, loaded, draining, || self.scrape());
        let mut h = ResponseHeader::build(a.status, Some(4)).ok()?;
        h.insert_header(CONTENT_TYPE, a.content_type).ok()?;
        h.insert_header(CONTENT_LENGTH, a.body.len()).ok()?;
        h.insert_header(CACHE_CONTROL, "no-store").ok()?;
        if a.status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert_header(ALLOW, "GET, HEAD").ok()?;
        }
        Some((h, a.body))
    }
}

#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        let draining = *shutdown.borrow();
        // Request bodies are not read: a connection that sent one is not reused.
        let keepalive = !draining && http.is_body_empty();
        http.set_keepalive(keepalive.then_some(60));
        let (header, body) = self.answer(http.req_header(), draining)?;
        let head = http.req_header().method == Method::HEAD;
        http.write_response_header(Box::new(header)).await.ok()?;
        if !head && !body.is_empty() {
            http.write_response_body(body, true).await.ok()?;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        http.finish()
            .await
            .ok()
            .flatten()
            .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
    }
}

/// `anygate_config_*`: read from the snapshot store at scrape time.
struct ConfigMetrics {
    store: Arc<Store>,
    reloads: IntCounterVec,
    generation: IntGauge,
    last_success: Gauge,
    /// One scrape at a time brings the counters up to date.
    sync: Mutex<()>,
}

impl ConfigMetrics {
    fn new(store: Arc<Store>) -> Result<ConfigMetrics, prometheus::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> RequestHeader {
        RequestHeader::build("GET", path.as_bytes(), None).unwrap()
    }

    #[test]
    fn readiness_follows_the_config_and_shutdown() {
        assert_eq!(
            readiness(false, false).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(readiness(true, false).status, StatusCode::OK);
        assert_eq!(
            readiness(true, true).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let r = route(&get("/readyz"), false, false, String::new);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.body, "not ready: no config loaded\n");
    }

    #[test]
    fn paths_and_methods() {
        let never = || -> String { panic!("no scrape for this path") };
        assert_eq!(
            route(&get("/healthz"), false, true, never).status,
            StatusCode::OK
        );
        assert_eq!(
            route(&get("/nope"), true, false, never).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&get("/metricsx"), true, false, never).status,
            StatusCode::NOT_FOUND
        );
        let post = RequestHeader::build("POST", b"/metrics", None).unwrap();
        assert_eq!(
            route(&post, true, false, never).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let m = route(&get("/metrics?x=1"), true, false, || "m 1\n".into());
        assert_eq!((m.status, m.body.as_ref()), (StatusCode::OK, &b"m 1\n"[..]));
        assert_eq!(m.content_type, METRICS_TYPE);
    }
}
