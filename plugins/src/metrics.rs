//! `metrics`: records every request in the SPEC §10 metrics, in the logging phase so that
//! anygate's own answers (404, 413, 502...) are counted like proxied ones. The handles come
//! from the process's [`Telemetry`]; this plugin only observes.

use crate::ctx::Ctx;
use crate::plugin::{Phases, Plugin};
use crate::telemetry::{secs, status_label, upstream_error_kind, Telemetry};
use crate::{BuildCtx, PluginError};
use async_trait::async_trait;
use pingora_proxy::Session;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl Config {
    pub fn build(&self, cx: &BuildCtx) -> Result<Metrics, PluginError> {
        Ok(Metrics {
            telemetry: cx.telemetry.clone(),
        })
    }
}

pub struct Metrics {
    telemetry: Arc<Telemetry>,
}

/// The status the client got: what anygate recorded, else what Pingora wrote, else 0.
pub fn sent_status(session: &Session, ctx: &Ctx) -> u16 {
    if ctx.status != 0 {
        return ctx.status;
    }
    final_status(session).unwrap_or(0)
}

/// The final response status written to the client, if any. An interim `1xx` (a forwarded
/// `100 Continue`) is not one: a final answer, or an error, can still follow it. `101` is
/// final: the connection then belongs to the upgraded protocol.
pub fn final_status(session: &Session) -> Option<u16> {
    let h = session.response_written()?;
    let final_ = !h.status.is_informational() || h.status == http::StatusCode::SWITCHING_PROTOCOLS;
    final_.then(|| h.status.as_u16())
}

#[async_trait]
impl Plugin for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn phases(&self) -> Phases {
        Phases::LOGGING
    }

    fn logging(&self, session: &Session, ctx: &Ctx, error: Option<&pingora_error::Error>) {
        let t = &self.telemetry;
        let (entry, route, instance) = (ctx.entry.label(), ctx.route_label(), ctx.instance_label());
        let mut buf = [0; 3];
        let code = status_label(sent_status(session, ctx), &mut buf);
        if let Ok(c) = t
            .requests
            .get_metric_with_label_values(&[entry, route, instance, code])
        {
            c.inc();
        }
        if let Ok(h) = t
            .request_duration
            .get_metric_with_label_values(&[entry, route, instance])
        {
            h.observe(secs(ctx.start.elapsed()));
        }
        if let Some(d) = ctx.upstream_timecost {
            if let Some(h) = t.upstream_histogram(instance) {
                h.observe(secs(d));
            }
        }
        if ctx.instance.is_some() {
            if let Some(kind) = error.and_then(upstream_error_kind) {
                if let Ok(c) = t
                    .upstream_errors
                    .get_metric_with_label_values(&[instance, kind])
                {
                    c.inc();
                }
            }
        }
    }
}
