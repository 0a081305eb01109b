//! The stream metrics of SPEC §14, registered once per process on the admin registry. Every
//! series of every stream listener exists from the start, at 0.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// How a connection was handled (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Passed `allow` and the limit, and the instance took the connection.
    Accepted,
    /// The client address is outside `allow` (or the stream is gone from the config).
    Denied,
    /// `max_connections` were already open.
    Limited,
    /// The instance could not be reached.
    UpstreamFailed,
}

impl Admission {
    pub const ALL: [Admission; 4] = [
        Admission::Accepted,
        Admission::Denied,
        Admission::Limited,
        Admission::UpstreamFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Admission::Accepted => "accepted",
            Admission::Denied => "denied",
            Admission::Limited => "limited",
            Admission::UpstreamFailed => "upstream_failed",
        }
    }
}

/// The metric families.
pub struct Families {
    connections: IntCounterVec,
    active: IntGaugeVec,
    bytes: IntCounterVec,
}

impl Families {
    pub fn register(registry: &Registry) -> Result<Families, prometheus::Error> {
        let connections = IntCounterVec::new(
            Opts::new(
                "anygate_stream_connections_total",
                "Connections to a stream listener, by how they were handled.",
            ),
            &["stream", "result"],
        )?;
        let active = IntGaugeVec::new(
            Opts::new(
                "anygate_stream_active",
                "Stream connections open right now.",
            ),
            &["stream"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "anygate_stream_bytes_total",
                "Bytes relayed by a stream: `in` from the client to the instance, `out` from the instance to the client.",
            ),
            &["stream", "direction"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(Families {
            connections,
            active,
            bytes,
        })
    }

    /// The handles of one stream (its series created at 0).
    pub fn stream(&self, name: &str) -> StreamMetrics {
        let result = |a: Admission| self.connections.with_label_values(&[name, a.label()]);
        StreamMetrics {
            accepted: result(Admission::Accepted),
            denied: result(Admission::Denied),
            limited: result(Admission::Limited),
            upstream_failed: result(Admission::UpstreamFailed),
            active: self.active.with_label_values(&[name]),
            bytes_in: self.bytes.with_label_values(&[name, "in"]),
            bytes_out: self.bytes.with_label_values(&[name, "out"]),
        }
    }
}

/// One stream's handles, resolved once so a connection never looks a label up.
#[derive(Clone)]
pub struct StreamMetrics {
    accepted: IntCounter,
    denied: IntCounter,
    limited: IntCounter,
    upstream_failed: IntCounter,
    pub active: IntGauge,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
}

impl StreamMetrics {
    pub fn count(&self, a: Admission) {
        match a {
            Admission::Accepted => &self.accepted,
            Admission::Denied => &self.denied,
            Admission::Limited => &self.limited,
            Admission::UpstreamFailed => &self.upstream_failed,
        }
        .inc();
    }
}
