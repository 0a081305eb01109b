//! Per-second traffic by route and instance (SPEC §12 `GET /api/v1/traffic`). Requests add
//! themselves to one of a few shards (picked per worker thread, so two threads rarely share a
//! lock), keyed by the identity of their route and instance; once a second the ticker drains
//! every shard into one [`Second`]: requests, errors and p50/p99 per route and instance, and
//! what each instance's proxied requests did (for passive health).

use super::histogram::Histogram;
use anygate_plugins::routes::{Instance, Route};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const SHARDS: usize = 8;
/// A key without requests for this many seconds is dropped (with its route and instance).
const IDLE_TICKS: u32 = 60;

/// What happened between anygate and the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Not proxied (anygate answered itself).
    None,
    /// The instance answered with this status.
    Answered,
    /// The instance failed: the `upstream_errors_total` kind.
    Failed(&'static str),
}

/// One finished request, as traffic needs it.
pub struct Observation<'a> {
    pub route: Option<&'a Arc<Route>>,
    pub instance: Option<&'a Arc<Instance>>,
    pub status: u16,
    pub duration_us: u64,
    pub upstream: Upstream,
    /// When the request ended (its last answer or failure, for the instance's state).
    pub at: Instant,
}

#[derive(Default)]
struct Cell {
    route: Option<Arc<Route>>,
    instance: Option<Arc<Instance>>,
    requests: u64,
    errors: u64,
    hist: Histogram,
    answered: u64,
    failed: u64,
    failed_since_answer: u64,
    last_answer: Option<Instant>,
    last_failure: Option<(Instant, &'static str)>,
    idle: u32,
}

impl Cell {
    /// Starts the next second (keeping the histogram's allocation).
    fn reset(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.hist.clear();
        self.answered = 0;
        self.failed = 0;
        self.failed_since_answer = 0;
        self.last_answer = None;
        self.last_failure = None;
        self.idle = 0;
    }
}

type Key = (usize, usize);

#[derive(Default)]
struct Shard {
    cells: HashMap<Key, Cell, ahash::RandomState>,
}

/// A route's or an instance's second.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One second of traffic: one server-sent event.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Second {
    /// When the second ended.
    pub time: String,
    pub requests: u64,
    /// Requests answered with a 5xx status (by anygate or by the instance).
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub routes: Vec<Series>,
    pub instances: Vec<Series>,
}

/// What one instance's proxied requests did in a second (passive health's input).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxied {
    pub answered: u64,
    pub failed: u64,
    /// Failures after the last answer (summed over shards: an estimate when both happened).
    pub failed_since_answer: u64,
    pub last_answer: Option<Instant>,
    pub last_failure: Option<(Instant, &'static str)>,
}

pub struct Traffic {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Each thread sticks to one shard.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

fn ptr<T>(a: Option<&Arc<T>>) -> usize {
    a.map_or(0, |a| Arc::as_ptr(a) as usize)
}

#[derive(Default)]
struct Acc {
    requests: u64,
    errors: u64,
    hist: Histogram,
}

impl Acc {
    fn add(&mut self, c: &Cell) {
        self.requests += c.requests;
        self.errors += c.errors;
        self.hist.merge(&c.hist);
    }

    fn series(&self, name: String) -> Series {
        Series {
            name,
            requests: self.requests,
            errors: self.errors,
            p50_ms: self.hist.quantile_ms(0.5),
            p99_ms: self.hist.quantile_ms(0.99),
        }
    }
}

impl Traffic {
    pub fn observe(&self, o: &Observation) {
        let i = SHARD.with(|s| *s);
        let mut shard = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
        // The key is the route's and instance's address: the cell holds both, so an address
        // is never reused for another route while its cell exists.
        let cell = shard
            .cells
            .entry((ptr(o.route), ptr(o.instance)))
            .or_insert_with(|| Cell {
                route: o.route.cloned(),
                instance: o.instance.cloned(),
                ..Cell::default()
            });
        cell.requests += 1;
        cell.errors += u64::from(o.status >= 500);
        cell.hist.record(o.duration_us);
        match o.upstream {
            Upstream::None => {}
            Upstream::Answered => {
                cell.answered += 1;
                cell.failed_since_answer = 0;
                cell.last_answer = Some(o.at);
            }
            Upstream::Failed(kind) => {
                cell.failed += 1;
                cell.failed_since_answer += 1;
                cell.last_failure = Some((o.at, kind));
            }
        }
    }

    /// Drains the second that just ended. `routes` and `instances` name the running config's
    /// routes and instances: each gets a series, with zeros when it had no request.
    pub fn tick(
        &self,
        time: String,
        routes: &[String],
        instances: &[String],
    ) -> (Second, BTreeMap<String, Proxied>) {
        let mut total = Acc::default();
        let mut by_route: BTreeMap<String, Acc> =
            routes.iter().map(|r| (r.clone(), Acc::default())).collect();
        let mut by_instance: BTreeMap<String, Acc> = instances
            .iter()
            .map(|i| (i.clone(), Acc::default()))
            .collect();
        let mut proxied: BTreeMap<String, Proxied> = BTreeMap::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.cells.retain(|_, c| {
                if c.requests == 0 {
                    c.idle += 1;
                    return c.idle < IDLE_TICKS;
                }
                total.add(c);
                if let Some(r) = &c.route {
                    by_route.entry(r.label.clone()).or_default().add(c);
                }
                if let Some(i) = &c.instance {
                    by_instance.entry(i.id.clone()).or_default().add(c);
                    if c.answered + c.failed > 0 {
                        let p = proxied.entry(i.id.clone()).or_default();
                        p.answered += c.answered;
                        p.failed += c.failed;
                        p.failed_since_answer += c.failed_since_answer;
                        p.last_answer = p.last_answer.max(c.last_answer);
                        if c.last_failure.map(|f| f.0) > p.last_failure.map(|f| f.0) {
                            p.last_failure = c.last_failure;
                        }
                    }
                }
                c.reset();
                true
            });
        }
        let second = Second {
            time,
            requests: total.requests,
            errors: total.errors,
            p50_ms: total.hist.quantile_ms(0.5),
            p99_ms: total.hist.quantile_ms(0.99),
            routes: by_route.into_iter().map(|(k, a)| a.series(k)).collect(),
            instances: by_instance.into_iter().map(|(k, a)| a.series(k)).collect(),
        };
        (second, proxied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anygate_plugins::routes::{Auth, DomainKey, Timeouts};
    use http::HeaderValue;

    fn instance(id: &str) -> Arc<Instance> {
        Arc::new(Instance::new(
            id.into(),
            "127.0.0.1:1".parse().unwrap(),
            HeaderValue::from_static("Lighthouse"),
            None,
            Timeouts::default(),
        ))
    }

    fn route(label: &str, i: &Arc<Instance>) -> Arc<Route> {
        Arc::new(Route {
            label: label.into(),
            label_plain: true,
            domain: DomainKey::Default,
            path: "/api".into(),
            instance: i.clone(),
            passthrough: false,
            auth: Auth::Optional,
            series: Default::default(),
        })
    }

    #[test]
    fn a_second_sums_routes_and_instances_and_then_starts_over() {
        let t = Traffic::default();
        let a = instance("a");
        let r = route("default/api", &a);
        for (status, us, up) in [
            (200, 1_000, Upstream::Answered),
            (200, 2_000, Upstream::Answered),
            (502, 30_000, Upstream::Failed("connect_refused")),
        ] {
            t.observe(&Observation {
                route: Some(&r),
                instance: Some(&a),
                status,
                duration_us: us,
                upstream: up,
                at: Instant::now(),
            });
        }
        t.observe(&Observation {
            route: None,
            instance: None,
            status: 404,
            duration_us: 100,
            upstream: Upstream::None,
            at: Instant::now(),
        });
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (s, proxied) = t.tick(
            "t".into(),
            &names(&["default/api", "default/idle"]),
            &names(&["a", "b"]),
        );
        assert_eq!((s.requests, s.errors), (4, 1));
        assert_eq!(s.routes.len(), 2);
        assert_eq!(s.routes[0].name, "default/api");
        assert_eq!((s.routes[0].requests, s.routes[0].errors), (3, 1));
        assert_eq!(s.routes[1].requests, 0, "configured routes show zeros");
        assert_eq!(s.routes[1].p99_ms, None);
        assert_eq!(s.instances[1].name, "b");
        let p = &proxied["a"];
        assert_eq!((p.answered, p.failed, p.failed_since_answer), (2, 1, 1));
        assert_eq!(p.last_failure.map(|f| f.1), Some("connect_refused"));
        let p99 = s.routes[0].p99_ms.unwrap();
        assert!((p99 - 30.0).abs() < 2.0, "{p99}");

        let (next, proxied) = t.tick("t2".into(), &[], &[]);
        assert_eq!(next.requests, 0);
        assert!(proxied.is_empty());
    }
}
