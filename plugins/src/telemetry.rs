//! The process's metric handles (SPEC §10), created once per process with their own
//! [`Registry`] and handed to plugins through `BuildCtx`, so rebuilding a config never
//! registers a metric twice.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Histogram buckets for a gateway: 0.5 ms to 60 s (the longest default upstream timeout).
pub const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Why an access log line was not written (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The writer was behind and its queue was full.
    QueueFull,
    /// The file or stdout refused the write (full disk, closed pipe, read-only file...).
    WriteError,
}

impl DropReason {
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::WriteError => "write_error",
        }
    }
}

/// Every metric anygate records about requests, and the registry `/metrics` serves.
pub struct Telemetry {
    pub registry: Registry,
    /// `anygate_requests_total{entry,route,instance,code}`
    pub requests: IntCounterVec,
    /// `anygate_request_duration_seconds{entry,route,instance}`
    pub request_duration: HistogramVec,
    /// `anygate_upstream_duration_seconds{instance}`
    pub upstream_duration: HistogramVec,
    /// `anygate_upstream_errors_total{instance,kind}`
    pub upstream_errors: IntCounterVec,
    /// `anygate_requests_in_flight`
    pub in_flight: IntGauge,
    /// `anygate_access_log_dropped_total{reason}`
    pub access_log_dropped: IntCounterVec,
    /// `anygate_rate_limit_store_errors_total`: decisions `rate_limit` took by its `on_error`
    /// because its shared store (Redis) failed, timed out or was known to be down.
    pub rate_limit_store_errors: IntCounter,
    /// `anygate_client_connections`: client connections open now (HTTP and HTTPS listeners).
    pub client_connections: IntGauge,
    /// `anygate_client_connections_closed_total{reason}`: client connections the gateway
    /// closed or refused because of its own limits.
    pub client_closed: IntCounterVec,
}

/// Reasons in `anygate_client_connections_closed_total`.
pub const CLIENT_CLOSE_REASONS: [&str; 4] = [
    "header_timeout",
    "header_too_large",
    "max_connections",
    "max_connections_per_ip",
];

/// Counts a client connection in `anygate_client_connections` while it lives.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Telemetry {
    /// A fresh registry with every request metric registered.
    pub fn new() -> Result<Telemetry, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "anygate_requests_total",
                "Requests answered, by entry, route, instance and the status sent to the client.",
            ),
            &["entry", "route", "instance", "code"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "anygate_request_duration_seconds",
                "Time from the request header to the end of the response.",
            )
            .buckets(BUCKETS.to_vec()),
            &["entry", "route", "instance"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "anygate_upstream_duration_seconds",
                "Time from the request sent upstream to the instance's response header.",
            )
            .buckets(BUCKETS.to_vec()),
            &["instance"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "anygate_upstream_errors_total",
                "Requests that failed because of the instance, by kind of failure.",
            ),
            &["instance", "kind"],
        )?;
        let in_flight = IntGauge::new(
            "anygate_requests_in_flight",
            "Requests being handled right now.",
        )?;
        let access_log_dropped = IntCounterVec::new(
            Opts::new(
                "anygate_access_log_dropped_total",
                "Access log lines that were not written.",
            ),
            &["reason"],
        )?;
        let client_connections = IntGauge::new(
            "anygate_client_connections",
            "Client connections open now, on the HTTP and HTTPS listeners.",
        )?;
        let client_closed = IntCounterVec::new(
            Opts::new(
                "anygate_client_connections_closed_total",
                "Client connections the gateway closed or refused because of its own limits.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(client_connections.clone()))?;
        registry.register(Box::new(client_closed.clone()))?;
        for r in CLIENT_CLOSE_REASONS {
            let _ = client_closed.get_metric_with_label_values(&[r]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        let rate_limit_store_errors = IntCounter::new(
            "anygate_rate_limit_store_errors_total",
            "Rate-limit decisions taken by `on_error` because the shared store (Redis) failed, timed out or was down.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(rate_limit_store_errors.clone()))?;
        // Present from the start, so `rate()` sees the first drop.
        for r in [DropReason::QueueFull, DropReason::WriteError] {
            let _ = access_log_dropped.get_metric_with_label_values(&[r.label()]);
        }
        Ok(Telemetry {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            access_log_dropped,
            client_connections,
            client_closed,
            rate_limit_store_errors,
        })
    }

    /// Counts an open client connection until the returned guard drops.
    pub fn client_connection(&self) -> OpenConnection {
        self.client_connections.inc();
        OpenConnection(self.client_connections.clone())
    }

    /// Counts a connection closed or refused for `reason` (one of [`CLIENT_CLOSE_REASONS`]).
    pub fn client_closed(&self, reason: &str) {
        if let Ok(c) = self.client_closed.get_metric_with_label_values(&[reason]) {
            c.inc();
        }
    }

    /// Counts `n` access log lines that were not written.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        if let Ok(c) = self
            .access_log_dropped
            .get_metric_with_label_values(&[reason.label()])
        {
            c.inc_by(n);
        }
    }

    /// The upstream duration histogram of one instance.
    pub fn upstream_histogram(&self, instance: &str) -> Option<Histogram> {
        self.upstream_duration
            .get_metric_with_label_values(&[instance])
            .ok()
    }

    /// Creates an instance's series at zero (SPEC §10: a dashboard sees 0, not "no data"):
    /// its upstream errors of every kind, its upstream histogram and its SDK entry.
    pub fn prime_instance(&self, instance: &str) {
        for kind in UPSTREAM_ERROR_KINDS {
            let _ = self
                .upstream_errors
                .get_metric_with_label_values(&[instance, kind]);
        }
        let _ = self.upstream_histogram(instance);
        let _ = self
            .request_duration
            .get_metric_with_label_values(&["sdk", "none", instance]);
    }

    /// Creates a route's request histogram at zero.
    pub fn prime_route(&self, route: &str, instance: &str) {
        let _ = self
            .request_duration
            .get_metric_with_label_values(&["http", route, instance]);
    }

    /// Drops the series of routes and instances a new config no longer has, so that a config
    /// that keeps adding and removing routes (a push every few seconds, a generated file) does
    /// not grow the exposition and the process's memory without bound. `none` (requests that
    /// matched no route or instance) always stays.
    pub fn retain(&self, routes: &HashSet<&str>, instances: &HashSet<&str>) {
        let stale = |labels: &HashMap<&str, &str>| {
            labels.iter().any(|(name, value)| {
                *value != "none"
                    && match *name {
                        "route" => !routes.contains(value),
                        "instance" => !instances.contains(value),
                        _ => false,
                    }
            })
        };
        for family in self.registry.gather() {
            let name = family.name();
            for m in family.get_metric() {
                let labels: HashMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if !stale(&labels) {
                    continue;
                }
                let _ = match name {
                    "anygate_requests_total" => self.requests.remove(&labels),
                    "anygate_request_duration_seconds" => self.request_duration.remove(&labels),
                    "anygate_upstream_duration_seconds" => self.upstream_duration.remove(&labels),
                    "anygate_upstream_errors_total" => self.upstream_errors.remove(&labels),
                    _ => Ok(()),
                };
            }
        }
    }

    /// The text exposition of everything registered.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }
}

/// Every `kind` of `anygate_upstream_errors_total`.
pub const UPSTREAM_ERROR_KINDS: [&str; 9] = [
    "connect_refused",
    "connect_timeout",
    "connect_error",
    "tls",
    "timeout",
    "closed",
    "reset",
    "bad_response",
    "other",
];

/// The `kind` label of a failed request's error, when the instance is to blame.
pub fn upstream_error_kind(e: &pingora_error::Error) -> Option<&'static str> {
    use pingora_error::{ErrorSource, ErrorType::*};
    if *e.esource() == ErrorSource::Downstream {
        return None;
    }
    let kind = match e.etype() {
        ConnectRefused => "connect_refused",
        ConnectTimedout => "connect_timeout",
        ConnectNoRoute | ConnectError | BindError | SocketError | ConnectProxyFailure => {
            "connect_error"
        }
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => "tls",
        _ if *e.esource() != ErrorSource::Upstream => return None,
        ReadTimedout | WriteTimedout => "timeout",
        ConnectionClosed => "closed",
        ReadError | WriteError => "reset",
        InvalidHTTPHeader | H1Error | H2Error | InvalidH2 | H2Downgrade => "bad_response",
        _ => "other",
    };
    Some(kind)
}

/// Seconds as the float Prometheus wants.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A status code as a label without allocating (`0` when nothing was sent).
pub fn status_label(code: u16, buf: &mut [u8; 3]) -> &str {
    if !(100..=999).contains(&code) {
        return "0";
    }
    buf[0] = b'0' + (code / 100) as u8;
    buf[1] = b'0' + (code / 10 % 10) as u8;
    buf[2] = b'0' + (code % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_error::{Error, ErrorType};

    #[test]
    fn registering_twice_in_one_process_is_fine() {
        let a = Telemetry::new().unwrap();
        let b = Telemetry::new().unwrap();
        a.in_flight.inc();
        assert_eq!(b.in_flight.get(), 0, "each has its own registry");
        assert!(a.render().contains("anygate_requests_in_flight 1"));
    }

    #[test]
    fn buckets_span_half_a_millisecond_to_a_minute() {
        assert_eq!(BUCKETS.first(), Some(&0.0005));
        assert_eq!(BUCKETS.last(), Some(&60.0));
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_labels() {
        let mut b = [0; 3];
        assert_eq!(status_label(200, &mut b), "200");
        assert_eq!(status_label(502, &mut b), "502");
        assert_eq!(status_label(0, &mut b), "0");
        assert_eq!(status_label(1000, &mut b), "0");
    }

    #[test]
    fn error_kinds() {
        let up = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_up();
            upstream_error_kind(&e)
        };
        let down = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_down();
            upstream_error_kind(&e)
        };
        assert_eq!(
            upstream_error_kind(&Error::new(ErrorType::ConnectRefused)),
            Some("connect_refused")
        );
        assert_eq!(up(ErrorType::ReadTimedout), Some("timeout"));
        assert_eq!(up(ErrorType::ConnectionClosed), Some("closed"));
        assert_eq!(up(ErrorType::InvalidHTTPHeader), Some("bad_response"));
        assert_eq!(up(ErrorType::ReadError), Some("reset"));
        assert_eq!(down(ErrorType::ConnectionClosed), None, "the client left");
        assert_eq!(down(ErrorType::ReadTimedout), None);
        assert_eq!(
            upstream_error_kind(&Error::new(ErrorType::HTTPStatus(413))),
            None,
            "anygate's own answer"
        );
        for t in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectTimedout,
            ErrorType::ConnectNoRoute,
            ErrorType::TLSHandshakeFailure,
            ErrorType::ReadTimedout,
            ErrorType::ConnectionClosed,
            ErrorType::ReadError,
            ErrorType::InvalidHTTPHeader,
            ErrorType::InternalError,
        ] {
            let kind = up(t).unwrap();
            assert!(UPSTREAM_ERROR_KINDS.contains(&kind), "{kind} is primed");
        }
    }
}
