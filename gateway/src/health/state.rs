//! One instance's health: the status, the counts that move it, and the last results.

use super::{kind_text, CheckSettings, PASSIVE_UNHEALTHY};
use crate::monitor::traffic::Proxied;
use anygate_plugins::access_log::rfc3339_millis;
use log::{info, warn};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No result yet (counted as up).
    Unknown,
    Up,
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Probed by `health_check`.
    Active,
    /// Judged by the requests proxied to it.
    Passive,
}

/// One result: a probe, or (passive) the last proxied request of a kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub time: String,
    pub ok: bool,
    /// The HTTP status the instance answered, if it answered.
    pub status: Option<u16>,
    /// What went wrong, in words (`connection refused`, `answered 503`...).
    pub error: Option<String>,
    pub duration_ms: Option<f64>,
}

impl Check {
    pub fn now(ok: bool, status: Option<u16>, error: Option<String>, took: Option<f64>) -> Check {
        Check {
            time: rfc3339_millis(SystemTime::now()),
            ok,
            status,
            error,
            duration_ms: took,
        }
    }
}

/// The admin API's view of an instance's health.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub status: Status,
    pub mode: Mode,
    /// When the status last changed (`null` while unknown).
    pub since: Option<String>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_check: Option<Check>,
    pub last_failure: Option<Check>,
}

pub(super) struct State {
    pub addr: SocketAddr,
    pub check: Option<CheckSettings>,
    pub status: Status,
    since: Option<SystemTime>,
    failures: u32,
    successes: u32,
    last: Option<Check>,
    last_failure: Option<Check>,
}

/// The wall-clock time of an `Instant` in the recent past.
fn wall(t: Instant) -> String {
    let ago = t.elapsed();
    rfc3339_millis(
        SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(SystemTime::now()),
    )
}

impl State {
    pub fn new(addr: SocketAddr, check: Option<CheckSettings>) -> State {
        State {
            addr,
            check,
            status: Status::Unknown,
            since: None,
            failures: 0,
            successes: 0,
            last: None,
            last_failure: None,
        }
    }

    fn set(&mut self, id: &str, status: Status, why: &str) {
        if self.status == status {
            return;
        }
        match status {
            Status::Down => warn!("instance {id} ({}) is DOWN: {why}", self.addr),
            _ if self.status == Status::Down => info!("instance {id} ({}) is up again", self.addr),
            _ => {}
        }
        self.status = status;
        self.since = Some(SystemTime::now());
    }

    /// An active probe's result: down after `unhealthy` failures in a row, up after `healthy`
    /// successes in a row (the first success of an unknown instance is enough).
    pub fn apply(&mut self, id: &str, result: Check, unhealthy: u32, healthy: u32) {
        if result.ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.status == Status::Unknown || self.successes >= healthy {
                self.set(id, Status::Up, "");
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= unhealthy {
                let why = format!(
                    "{} failed health checks in a row, the last: {}",
                    self.failures,
                    result.error.as_deref().unwrap_or("failed")
                );
                self.set(id, Status::Down, &why);
            }
            self.last_failure = Some(result.clone());
        }
        self.last = Some(result);
    }

    /// A second of proxied requests: down after [`PASSIVE_UNHEALTHY`] failures in a row, up
    /// as soon as the instance answers.
    pub fn apply_proxied(&mut self, id: &str, p: &Proxied) {
        let failure = p.last_failure.map(|(at, kind)| Check {
            time: wall(at),
            ok: false,
            status: None,
            error: Some(kind_text(kind).to_string()),
            duration_ms: None,
        });
        if let Some(f) = &failure {
            self.last_failure = Some(f.clone());
        }
        let answered_last = match (p.last_answer, p.last_failure) {
            (Some(a), Some((f, _))) => a >= f,
            (Some(_), None) => true,
            _ => false,
        };
        if answered_last {
            self.failures = 0;
            self.successes = self.successes.saturating_add(p.answered as u32);
            self.last = p.last_answer.map(|at| Check {
                time: wall(at),
                ok: true,
                status: None,
                error: None,
                duration_ms: None,
            });
            self.set(id, Status::Up, "");
            return;
        }
        self.successes = 0;
        let n = if p.answered > 0 {
            p.failed_since_answer
        } else {
            u64::from(self.failures) + p.failed
        };
        self.failures = u32::try_from(n).unwrap_or(u32::MAX);
        self.last = failure;
        if self.failures >= PASSIVE_UNHEALTHY {
            let why = format!(
                "{} proxied requests failed in a row, the last: {}",
                self.failures,
                self.last
                    .as_ref()
                    .and_then(|c| c.error.as_deref())
                    .unwrap_or("failed")
            );
            self.set(id, Status::Down, &why);
        }
    }

    pub fn view(&self) -> HealthView {
        HealthView {
            status: self.status,
            mode: if self.check.is_some() {
                Mode::Active
            } else {
                Mode::Passive
            },
            since: self.since.map(rfc3339_millis),
            consecutive_failures: self.failures,
            consecutive_successes: self.successes,
            last_check: self.last.clone(),
            last_failure: self.last_failure.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(ok: bool) -> Check {
        Check::now(
            ok,
            ok.then_some(200),
            (!ok).then(|| "connection refused".into()),
            None,
        )
    }

    #[test]
    fn active_thresholds() {
        let mut s = State::new(
            "127.0.0.1:1".parse().unwrap(),
            Some(CheckSettings::default()),
        );
        assert_eq!(s.status, Status::Unknown);
        s.apply("a", result(true), 3, 2);
        assert_eq!(
            s.status,
            Status::Up,
            "an unknown instance is up at its first success"
        );
        s.apply("a", result(false), 3, 2);
        s.apply("a", result(false), 3, 2);
        assert_eq!(s.status, Status::Up);
        s.apply("a", result(false), 3, 2);
        assert_eq!(s.status, Status::Down);
        assert_eq!(
            s.view().last_failure.unwrap().error.unwrap(),
            "connection refused"
        );
        s.apply("a", result(true), 3, 2);
        assert_eq!(s.status, Status::Down, "one success is not enough");
        s.apply("a", result(true), 3, 2);
        assert_eq!(s.status, Status::Up);
        assert_eq!(s.view().consecutive_successes, 2);
    }

    #[test]
    fn passive_goes_down_after_three_failures_and_up_at_an_answer() {
        let mut s = State::new("127.0.0.1:1".parse().unwrap(), None);
        let t0 = Instant::now();
        let fail = |n: u64| Proxied {
            failed: n,
            failed_since_answer: n,
            last_failure: Some((t0, "connect_refused")),
            ..Proxied::default()
        };
        s.apply_proxied("a", &fail(2));
        assert_eq!((s.status, s.failures), (Status::Unknown, 2));
        s.apply_proxied("a", &fail(1));
        assert_eq!(s.status, Status::Down);
        assert_eq!(
            s.view().last_check.unwrap().error.unwrap(),
            "connection refused"
        );
        let ok = Proxied {
            answered: 1,
            last_answer: Some(t0 + Duration::from_millis(1)),
            ..Proxied::default()
        };
        s.apply_proxied("a", &ok);
        assert_eq!((s.status, s.failures), (Status::Up, 0));
        assert_eq!(s.view().mode, Mode::Passive);
    }
}
