//! `metrics`: records every request in the SPEC §10 metrics, in the logging phase so that
//! anygate's own answers (404, 413, 502...) are counted like proxied ones. The handles come
//! from the process's [`Telemetry`]; this plugin only observes.

use crate::ctx::{Ctx, Entry};
use crate::plugin::{Phases, Plugin, Served};
use crate::telemetry::{secs, status_label, upstream_error_kind, Telemetry};
use crate::{BuildCtx, PluginError};
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

impl Plugin for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn phases(&self) -> Phases {
        Phases::LOGGING
    }

    fn logging(&self, served: &Served, ctx: &Ctx, error: Option<&pingora_error::Error>) {
        let t = &self.telemetry;
        let status = served.status;
        let mut buf = [0; 3];
        let code = status_label(status, &mut buf);
        let elapsed = secs(ctx.elapsed());
        // The usual cases use handles resolved once per route or instance; anything else
        // (requests that matched nothing) looks its series up by label.
        let series = match (ctx.entry, &ctx.route, &ctx.instance) {
            (Entry::Http, Some(r), Some(i)) if Arc::ptr_eq(&r.instance, i) => Some((
                r.series.route(t, &r.label, &i.id),
                ["http", r.label.as_str(), i.id.as_str()],
            )),
            (Entry::Sdk, None, Some(i)) => Some((
                &i.series.instance(t, &i.id).sdk,
                ["sdk", "none", i.id.as_str()],
            )),
            _ => None,
        };
        match series {
            Some((s, labels)) => {
                s.codes.inc(&t.requests, labels, status, code);
                s.duration.observe(elapsed);
            }
            None => {
                let labels = [ctx.entry.label(), ctx.route_label(), ctx.instance_label()];
                if let Ok(c) = t
                    .requests
                    .get_metric_with_label_values(&[labels[0], labels[1], labels[2], code])
                {
                    c.inc();
                }
                if let Ok(h) = t.request_duration.get_metric_with_label_values(&labels) {
                    h.observe(elapsed);
                }
            }
        }
        let Some(i) = &ctx.instance else {
            return;
        };
        let own = i.series.instance(t, &i.id);
        if let Some(d) = ctx.upstream_timecost {
            own.upstream.observe(secs(d));
        }
        if let Some(c) = error
            .and_then(upstream_error_kind)
            .and_then(|k| own.error(k))
        {
            c.inc();
        }
    }
}
