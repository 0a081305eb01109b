//! `instances[].health_check`, compiled and checked.

use crate::config::model::{HealthCheck, Instance};
use crate::config::{ConfigError, FileConfig, Item};
use std::time::Duration;

/// A compiled `health_check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy: u32,
    pub healthy: u32,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy: 3,
            healthy: 2,
        }
    }
}

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_THRESHOLD: u32 = 100;

/// Checks one instance's `health_check`; every problem is reported at its key.
pub fn compile_check(
    file: &FileConfig,
    item: &Item<Instance>,
    hc: &HealthCheck,
    errors: &mut Vec<ConfigError>,
) -> Option<CheckSettings> {
    let before = errors.len();
    let mut err = |key: &str, message: String| {
        errors.push(file.error(item.mark_of(&format!("health_check.{key}")), message));
    };
    let mut c = CheckSettings::default();
    if let Some(p) = &hc.path {
        let visible = p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'#');
        if !p.starts_with('/') || !visible {
            err(
                "path",
                format!("`health_check.path` `{p}` must start with `/` and hold no spaces, control characters or `#`"),
            );
        }
        c.path = p.clone();
    }
    if let Some(d) = hc.interval {
        if d.0 < MIN_INTERVAL {
            err(
                "interval",
                format!(
                    "`health_check.interval` must be at least {}ms",
                    MIN_INTERVAL.as_millis()
                ),
            );
        }
        c.interval = d.0;
    }
    if let Some(d) = hc.timeout {
        if d.0.is_zero() {
            err(
                "timeout",
                "`health_check.timeout` must be more than 0".into(),
            );
        }
        c.timeout = d.0;
    }
    if c.timeout > c.interval {
        err(
            if hc.timeout.is_some() {
                "timeout"
            } else {
                "interval"
            },
            format!(
                "`health_check.timeout` ({:?}) must not be longer than its `interval` ({:?})",
                c.timeout, c.interval
            ),
        );
    }
    for (key, v, slot) in [
        ("unhealthy", hc.unhealthy, &mut c.unhealthy),
        ("healthy", hc.healthy, &mut c.healthy),
    ] {
        if let Some(n) = v {
            if n == 0 || n > MAX_THRESHOLD {
                err(
                    key,
                    format!("`health_check.{key}` must be between 1 and {MAX_THRESHOLD}"),
                );
            }
            *slot = n;
        }
    }
    (errors.len() == before).then_some(c)
}
