//! What the admin API knows about requests: the recent-request buffer, per-second traffic and
//! instance health. One [`Monitor`] per process (it outlives every config generation); every
//! request passes through [`Monitor::record`] once, in the logging phase, after the plugins.
//! Without an admin listener nobody could read any of it, and recording is off.

pub mod histogram;
pub mod recent;
pub mod traffic;

use crate::health::{Health, Target};
use crate::snapshot::Snapshot;
use anygate_plugins::access_log::rfc3339_millis;
use anygate_plugins::telemetry::upstream_error_kind;
use anygate_plugins::{Ctx, Served};
use async_trait::async_trait;
use http::HeaderValue;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use recent::{Fields, Recent};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use traffic::{Observation, Traffic, Upstream};

/// Seconds of traffic kept for a console that connects (its chart's width).
pub const TRAFFIC_HISTORY: usize = 300;

pub struct Monitor {
    enabled: bool,
    pub recent: Recent,
    pub traffic: Traffic,
    pub health: Health,
    /// The last [`TRAFFIC_HISTORY`] seconds as JSON, numbered from 1.
    seconds: Mutex<VecDeque<(u64, Arc<str>)>>,
    /// The number of the newest second.
    tick: tokio::sync::watch::Sender<u64>,
    pub started: SystemTime,
    /// Route labels and instance ids of the last config synced: metric series are pruned
    /// only when a reload removed some (a scan of every series costs hundreds of ms with
    /// 10,000 routes).
    known: Mutex<(HashSet<String>, HashSet<String>)>,
}

impl Monitor {
    /// `enabled`: whether requests are recorded (there is an admin listener to read them).
    pub fn new(recent_requests: usize, enabled: bool) -> Monitor {
        Monitor {
            enabled,
            recent: Recent::new(if enabled { recent_requests } else { 0 }),
            traffic: Traffic::default(),
            health: Health::default(),
            seconds: Mutex::new(VecDeque::with_capacity(TRAFFIC_HISTORY)),
            tick: tokio::sync::watch::channel(0).0,
            started: SystemTime::now(),
            known: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records one finished request. Runs on every request: no clock read (the request's
    /// wall-clock start and its duration are in its context), no allocation for typical
    /// values, two short uncontended locks.
    // Kept out of line so that profiles show its cost on its own (docs/console.md).
    #[inline(never)]
    pub fn record(&self, served: &Served, ctx: &Ctx, error: Option<&pingora_error::Error>) {
        if !self.enabled {
            return;
        }
        let elapsed = ctx.elapsed();
        let at = ctx.start + elapsed;
        let status = served.status;
        let failure = match (&ctx.instance, error) {
            (Some(_), Some(e)) => upstream_error_kind(e),
            _ => None,
        };
        let duration_us = elapsed.as_micros() as u64;
        let upstream = match (failure, ctx.upstream_status) {
            (Some(kind), _) => Upstream::Failed(kind),
            (None, Some(_)) => Upstream::Answered,
            (None, None) => Upstream::None,
        };
        self.traffic.observe(&Observation {
            route: ctx.route.as_ref(),
            instance: ctx.instance.as_ref(),
            status,
            duration_us,
            upstream,
            at,
        });
        if self.recent.capacity() == 0 {
            return;
        }
        self.recent.record(&Fields {
            request_id: ctx.request_id_bytes().unwrap_or_default(),
            // The wall-clock start the request id and the access log use too.
            start_us: ctx.unix_start.as_micros() as u64,
            entry: ctx.entry,
            // Empty for a request that could not be parsed.
            method: served.method().unwrap_or_default(),
            host: ctx.host.as_ref().map(HeaderValue::as_bytes),
            path: served.path().unwrap_or_default(),
            route: ctx.route.as_ref().map(|r| r.label.as_str()),
            instance: ctx.instance.as_ref().map(|i| i.id.as_str()),
            client_ip: ctx.client_ip,
            status,
            upstream_status: ctx.upstream_status,
            upstream_timecost_ms: ctx.upstream_timecost.map(|d| d.as_millis() as u64),
            error: ctx.error,
            upstream_error: failure,
            duration_us,
            generation: ctx.generation,
        });
    }

    /// Follows a config about to be published: health states, the zero series of its
    /// instances and routes, and no series for those it no longer has.
    pub fn sync(&self, snap: &Snapshot) {
        self.health.sync(snap.routes.instances().map(|i| Target {
            id: &i.id,
            addr: i.addr,
            check: snap.health_checks.get(&i.id),
        }));
        if snap.chain.names().contains(&"metrics") {
            let t = &snap.telemetry;
            for i in snap.routes.instances() {
                t.prime_instance(&i.id);
            }
            for r in snap.routes.routes() {
                t.prime_route(&r.label, &r.instance.id);
            }
        }
        let routes: HashSet<String> = snap
            .routes
            .routes()
            .iter()
            .map(|r| r.label.clone())
            .collect();
        let instances: HashSet<String> = snap.routes.instances().map(|i| i.id.clone()).collect();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if !known.0.is_subset(&routes) || !known.1.is_subset(&instances) {
            let r = routes.iter().map(String::as_str).collect();
            let i = instances.iter().map(String::as_str).collect();
            snap.telemetry.retain(&r, &i);
        }
        *known = (routes, instances);
    }

    /// Closes the second that just ended: traffic event, passive health.
    pub fn close_second(&self, snap: &Snapshot) {
        let routes: Vec<String> = snap
            .routes
            .routes()
            .iter()
            .map(|r| r.label.clone())
            .collect();
        let mut instances: Vec<String> = snap.routes.instances().map(|i| i.id.clone()).collect();
        instances.sort();
        let (second, proxied) =
            self.traffic
                .tick(rfc3339_millis(SystemTime::now()), &routes, &instances);
        self.health.proxied(&proxied);
        let json: Arc<str> = serde_json::to_string(&second).unwrap_or_default().into();
        let n = *self.tick.borrow() + 1;
        {
            let mut s = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() == TRAFFIC_HISTORY {
                s.pop_front();
            }
            s.push_back((n, json));
        }
        self.tick.send_replace(n);
    }

    /// The seconds after number `after`, oldest first.
    pub fn seconds_after(&self, after: u64) -> Vec<(u64, Arc<str>)> {
        let s = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().filter(|(n, _)| *n > after).cloned().collect()
    }

    /// Wakes when a new second is closed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tick.subscribe()
    }
}

/// Closes a second every second.
pub struct TickService {
    store: Arc<crate::snapshot::Store>,
}

impl TickService {
    pub fn new(store: Arc<crate::snapshot::Store>) -> TickService {
        TickService { store }
    }
}

#[async_trait]
impl BackgroundService for TickService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = every.tick() => self.store.monitor.close_second(&self.store.load()),
            }
        }
    }
}
