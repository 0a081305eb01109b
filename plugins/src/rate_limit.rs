//! `rate_limit`: requests per second per caller — the openid when the identity plugin verified
//! one, else the client address of SPEC §6 — optionally per route. Over the limit: 429
//! `EXCEED_RATELIMIT` with `Retry-After`.
//!
//! The algorithm is GCRA (the `governor` crate): a bucket of `burst` requests (default
//! `per_second`) refilled at `per_second`, exact per key. `pingora-limits`' `Rate` was not
//! used: it counts in a count-min sketch, which over-counts every key that shares a cell with
//! a busy one, so with many clients innocent callers would be refused.
//!
//! With `store: { redis: ... }` the counts live in Redis instead, shared by every replica
//! ([`store`], SPEC §13); the in-memory limiter is the default.
//!
//! Memory: at most `max_clients` callers are tracked. Once a second the callers whose bucket
//! is full again (idle for `(burst + 1) / per_second`) are dropped; while the table is full, new
//! callers are judged as fresh without being remembered (tracked callers stay limited).

use crate::ctx::{Ctx, Entry};
use crate::error::ErrorCode;
use crate::plugin::{Flow, Phases, Plugin, Reply, Step};
use crate::{BuildCtx, PluginError};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use http::HeaderValue;
use log::warn;
use pingora_proxy::Session;
use serde::Deserialize;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod store;

const DEFAULT_MAX_CLIENTS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sustained requests per second per caller.
    pub per_second: u32,
    /// Requests a caller may send at once after being idle (default `per_second`).
    pub burst: Option<u32>,
    /// Count each route (HTTP access) or instance (SDK call) separately.
    #[serde(default)]
    pub per_route: bool,
    /// Most callers tracked at once (default 100000).
    pub max_clients: Option<usize>,
    /// Keep the counts in a shared store (Redis), so the limit holds across replicas.
    pub store: Option<store::StoreConfig>,
}

impl Config {
    pub fn build(&self, cx: &BuildCtx) -> Result<RateLimit, PluginError> {
        let per_second = NonZeroU32::new(self.per_second)
            .ok_or_else(|| PluginError::new("per_second", "`per_second` must be at least 1"))?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.per_second))
            .ok_or_else(|| PluginError::new("burst", "`burst` must be at least 1"))?;
        let max_clients = self.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
        if max_clients == 0 {
            return Err(PluginError::new(
                "max_clients",
                "`max_clients` must be at least 1",
            ));
        }
        if self.per_route && !cx.comes_after("routing") {
            return Err(PluginError::new(
                "per_route",
                "`per_route` needs `rate_limit` after `routing` in the chain",
            ));
        }
        if cx.comes_before("identity") {
            return Err(PluginError::general(
                "put `rate_limit` after `identity` in the chain, so that it counts per openid",
            ));
        }
        let shared = match &self.store {
            Some(_) if self.max_clients.is_some() => {
                return Err(PluginError::new(
                    "max_clients",
                    "`max_clients` bounds the in-memory table; with `store` callers are kept in Redis (each key expires once idle)",
                ));
            }
            Some(s) => Some(s.build(cx, per_second.get(), burst.get())?),
            None => None,
        };
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Ok(RateLimit {
            shared,
            limiter: Limiter::new(quota, max_clients, DefaultClock::default()),
            per_route: self.per_route,
            started: Instant::now(),
            last_sweep_ms: AtomicU64::new(0),
        })
    }
}

/// Who is counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    Openid(Box<str>),
    Ip(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub who: Who,
    /// The route label (or `sdk:<instance>`) with `per_route`.
    pub route: Option<Box<str>>,
}

/// A DashMap state store that refuses to grow past `max` keys.
pub struct Bounded<K: Hash + Eq + Clone> {
    map: DashMapStateStore<K>,
    max: usize,
}

impl<K: Hash + Eq + Clone> StateStore for Bounded<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.map.contains_key(key) || self.map.len() < self.max {
            return self.map.measure_and_replace(key, f);
        }
        // Full: decide as for a caller never seen, and forget it.
        f(None).map(|(decision, _)| decision)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Bounded<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The keyed GCRA limiter, generic over the clock so tests can drive time.
pub struct Limiter<C: Clock> {
    inner: RateLimiter<Key, Bounded<Key>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    max: usize,
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn new(quota: Quota, max: usize, clock: C) -> Limiter<C> {
        let store = Bounded {
            map: DashMapStateStore::default(),
            max,
        };
        Limiter {
            inner: RateLimiter::new(quota, store, clock.clone()),
            clock,
            max,
        }
    }

    /// `Ok` admits the request; `Err` is how long until this caller would be admitted.
    pub fn check(&self, key: &Key) -> Result<(), Duration> {
        self.inner
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops callers whose bucket is full again. (No shrinking: the table's capacity is
    /// already bounded by `max`, and shrinking every second would only churn.)
    pub fn sweep(&self) {
        self.inner.retain_recent();
        if self.inner.len() >= self.max {
            warn!(
                "rate_limit: {} callers tracked (max_clients); new callers pass unlimited until some go idle",
                self.max
            );
        }
    }

    /// Callers tracked now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

pub struct RateLimit {
    /// The Redis store, when configured; else `limiter` decides.
    shared: Option<store::Shared>,
    limiter: Limiter<DefaultClock>,
    per_route: bool,
    started: Instant,
    last_sweep_ms: AtomicU64,
}

impl RateLimit {
    /// The key a request is counted under; `None` (not limited) without openid or address.
    pub fn key(&self, ctx: &Ctx) -> Option<Key> {
        key_for(ctx, self.per_route)
    }

    /// Sweeps at most once a second, on whichever request comes first.
    fn maybe_sweep(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.sweep();
        }
    }
}

pub fn key_for(ctx: &Ctx, per_route: bool) -> Option<Key> {
    let who = match (&ctx.identity, ctx.client_ip) {
        (Some(id), _) if !id.openid.is_empty() => Who::Openid(id.openid.as_str().into()),
        (_, Some(ip)) => Who::Ip(ip),
        _ => return None,
    };
    let route = match (per_route, ctx.entry) {
        (false, _) => None,
        (true, Entry::Sdk) => Some(format!("sdk:{}", ctx.instance_label()).into()),
        (true, _) => Some(ctx.route_label().into()),
    };
    Some(Key { who, route })
}

/// The request phase's answer for a limit's decision (`Err`: the time until a request would
/// be admitted).
fn decided(decision: Result<(), Duration>) -> Flow {
    match decision {
        Ok(()) => Flow::Continue,
        Err(wait) => Flow::Reply(
            Reply::error(ErrorCode::ExceedRatelimit)
                .with_header("Retry-After", HeaderValue::from(retry_after(wait))),
        ),
    }
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    fn request<'a>(&'a self, _session: &'a mut Session, ctx: &'a mut Ctx) -> Step<'a> {
        let Some(key) = self.key(ctx) else {
            return Step::Done(Flow::Continue);
        };
        match &self.shared {
            // A limit shared in Redis waits for its answer.
            Some(shared) => Step::Wait(Box::pin(async move {
                decided(match shared.check(&key).await {
                    store::Decision::Admit => Ok(()),
                    store::Decision::Refuse(wait) => Err(wait),
                })
            })),
            None => {
                self.maybe_sweep();
                Step::Done(decided(self.limiter.check(&key)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Identity;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        per_second: u32,
        burst: u32,
        max: usize,
    ) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap());
        (Limiter::new(quota, max, clock.clone()), clock)
    }

    fn ip_key(ip: &str) -> Key {
        Key {
            who: Who::Ip(ip.parse().unwrap()),
            route: None,
        }
    }

    #[test]
    fn exact_admission_at_the_boundary() {
        let (l, clock) = limiter(2, 2, 100);
        let k = ip_key("192.0.2.1");
        assert_eq!(l.check(&k), Ok(()));
        assert_eq!(l.check(&k), Ok(()));
        // The third within the same instant: refused until one 1/2 s token is back.
        assert_eq!(l.check(&k), Err(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(499));
        assert_eq!(l.check(&k), Err(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.check(&k), Ok(()));
        assert_eq!(l.check(&k), Err(Duration::from_millis(500)));
        // Refusals cost nothing: after a full second the whole burst is back.
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check(&k), Ok(()));
        assert_eq!(l.check(&k), Ok(()));
        assert!(l.check(&k).is_err());
    }

    #[test]
    fn burst_can_differ_from_the_rate() {
        let (l, clock) = limiter(1, 3, 100);
        let k = ip_key("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(l.check(&k), Ok(()));
        }
        assert_eq!(l.check(&k), Err(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check(&k), Ok(()));
        assert!(l.check(&k).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(500)), 1);
        assert_eq!(retry_after(Duration::from_secs(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after(Duration::ZERO), 1);
    }

    fn ctx_with(ip: &str, openid: Option<&str>) -> Ctx {
        let mut ctx = Ctx::new(1);
        ctx.client_ip = Some(ip.parse().unwrap());
        ctx.identity = openid.map(|o| {
            std::sync::Arc::new(Identity {
                appid: "wx1".into(),
                openid: o.into(),
                ..Identity::default()
            })
        });
        ctx
    }

    #[test]
    fn openid_is_the_key_when_known_else_the_client_address() {
        let (l, _clock) = limiter(1, 1, 100);
        // Two users behind the same address are counted apart.
        let alice = key_for(&ctx_with("198.51.100.1", Some("o-alice")), false).unwrap();
        let bob = key_for(&ctx_with("198.51.100.1", Some("o-bob")), false).unwrap();
        let anon = key_for(&ctx_with("198.51.100.1", None), false).unwrap();
        assert_eq!(alice.who, Who::Openid("o-alice".into()));
        assert_eq!(anon.who, Who::Ip("198.51.100.1".parse().unwrap()));
        assert_eq!(l.check(&alice), Ok(()));
        assert!(l.check(&alice).is_err(), "alice is over");
        assert_eq!(l.check(&bob), Ok(()), "bob is not alice");
        assert_eq!(
            l.check(&anon),
            Ok(()),
            "anonymous callers count per address"
        );
        // The same user from another address is still the same user.
        let alice_elsewhere = key_for(&ctx_with("203.0.113.9", Some("o-alice")), false).unwrap();
        assert!(l.check(&alice_elsewhere).is_err());
        // Without an address or identity there is nothing to count.
        assert_eq!(key_for(&Ctx::new(1), false), None);
    }

    #[test]
    fn per_route_counts_each_route_apart() {
        let mut ctx = ctx_with("198.51.100.1", None);
        let plain = key_for(&ctx, true).unwrap();
        assert_eq!(plain.route.as_deref(), Some("none"));
        ctx.entry = Entry::Sdk;
        let sdk = key_for(&ctx, true).unwrap();
        assert_eq!(sdk.route.as_deref(), Some("sdk:none"));
        assert_ne!(plain, sdk);
        assert_eq!(key_for(&ctx, false).unwrap().route, None);
    }

    #[test]
    fn memory_stays_bounded_with_many_callers() {
        let (l, clock) = limiter(1, 1, 1000);
        let tracked = ip_key("10.255.255.255");
        assert_eq!(l.check(&tracked), Ok(()));
        for i in 0..100_000u32 {
            let k = Key {
                who: Who::Ip(IpAddr::from(i.to_be_bytes())),
                route: None,
            };
            assert_eq!(l.check(&k), Ok(()), "a new caller is never refused");
        }
        assert!(l.len() <= 1000, "{} callers tracked", l.len());
        // A caller tracked before the flood stays limited.
        assert!(l.check(&tracked).is_err());
        // Idle callers are dropped once their bucket is full again (governor keeps one more
        // interval to be safe).
        clock.advance(Duration::from_millis(1999));
        l.sweep();
        assert!(!l.is_empty(), "not before");
        clock.advance(Duration::from_millis(1));
        l.sweep();
        assert!(l.is_empty(), "{} left", l.len());
    }
}
