//! Metric handles resolved once per route, instance and status code, so that recording a
//! request does not hash its label values and search the metric families on every request.
//!
//! Each [`Route`](crate::routes::Route) and [`Instance`](crate::routes::Instance) carries a
//! [`Handles`] slot, filled from the process's [`Telemetry`] the first time a request is
//! recorded against it (routes and instances are rebuilt by a reload; the metrics are not, so a
//! new route resolves to the same series).

use crate::telemetry::{Telemetry, UPSTREAM_ERROR_KINDS};
use prometheus::{Histogram, IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// Status codes with a slot of their own; others are looked up by label.
const COMMON: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 413, 429, 500, 502, 503, 504,
];

fn slot(code: u16) -> Option<usize> {
    COMMON.iter().position(|&c| c == code)
}

/// `anygate_requests_total` for one `entry`, `route`, `instance`, by status code.
pub struct Codes {
    slots: [OnceLock<IntCounter>; COMMON.len()],
}

impl Codes {
    fn new() -> Codes {
        Codes {
            slots: Default::default(),
        }
    }

    /// Counts one request answered with `code` (`label` is its text, `"0"` when none).
    pub fn inc(&self, vec: &IntCounterVec, labels: [&str; 3], code: u16, label: &str) {
        let counter = match slot(code) {
            Some(i) => self.slots[i]
                .get_or_init(|| vec.with_label_values(&[labels[0], labels[1], labels[2], label])),
            None => {
                if let Ok(c) =
                    vec.get_metric_with_label_values(&[labels[0], labels[1], labels[2], label])
                {
                    c.inc();
                }
                return;
            }
        };
        counter.inc();
    }
}

/// The series of one `entry` × `route` × `instance` combination.
pub struct Series {
    pub duration: Histogram,
    pub codes: Codes,
}

impl Series {
    fn new(t: &Telemetry, labels: [&str; 3]) -> Series {
        Series {
            duration: t.request_duration.with_label_values(&labels),
            codes: Codes::new(),
        }
    }
}

/// An instance's own series.
pub struct InstanceSeries {
    pub upstream: Histogram,
    /// By [`UPSTREAM_ERROR_KINDS`] order.
    pub errors: Vec<IntCounter>,
    /// SDK calls to this instance (`entry="sdk"`, `route="none"`).
    pub sdk: Series,
}

impl InstanceSeries {
    fn new(t: &Telemetry, id: &str) -> InstanceSeries {
        InstanceSeries {
            upstream: t.upstream_duration.with_label_values(&[id]),
            errors: UPSTREAM_ERROR_KINDS
                .iter()
                .map(|k| t.upstream_errors.with_label_values(&[id, k]))
                .collect(),
            sdk: Series::new(t, ["sdk", "none", id]),
        }
    }

    pub fn error(&self, kind: &str) -> Option<&IntCounter> {
        let i = UPSTREAM_ERROR_KINDS.iter().position(|k| *k == kind)?;
        self.errors.get(i)
    }
}

/// A lazily filled slot for handles of type `T`.
pub struct Handles<T>(OnceLock<T>);

impl<T> std::fmt::Debug for Handles<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Handles(resolved)"
        } else {
            "Handles(-)"
        })
    }
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles(OnceLock::new())
    }
}

impl Handles<Series> {
    /// The `entry="http"` series of a route.
    pub fn route(&self, t: &Telemetry, route: &str, instance: &str) -> &Series {
        self.0
            .get_or_init(|| Series::new(t, ["http", route, instance]))
    }
}

impl Handles<InstanceSeries> {
    pub fn instance(&self, t: &Telemetry, id: &str) -> &InstanceSeries {
        self.0.get_or_init(|| InstanceSeries::new(t, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_and_looked_up_codes_count_in_the_same_series() {
        let t = Telemetry::new().unwrap();
        let h: Handles<Series> = Handles::default();
        let s = h.route(&t, "default/api", "lhins-a");
        let labels = ["http", "default/api", "lhins-a"];
        s.codes.inc(&t.requests, labels, 200, "200");
        s.codes.inc(&t.requests, labels, 200, "200");
        s.codes.inc(&t.requests, labels, 418, "418");
        let get = |code| {
            t.requests
                .with_label_values(&["http", "default/api", "lhins-a", code])
                .get()
        };
        assert_eq!(get("200"), 2);
        assert_eq!(get("418"), 1);
        s.duration.observe(0.01);
        assert_eq!(
            t.request_duration
                .with_label_values(&labels)
                .get_sample_count(),
            1
        );
    }
}
