//! `upstream_info`: the CloudBase debugging headers of SPEC §7 on every response:
//! `X-Cloudbase-Upstream-Status-Code`, `-Timecost` and `-Type`, or `-` when there was no
//! upstream answer. Upstream-sent `X-Cloudbase-*` headers are removed by the runner first.

use crate::ctx::Ctx;
use crate::headers::{
    wire, X_CLOUDBASE_UPSTREAM_STATUS_CODE, X_CLOUDBASE_UPSTREAM_TIMECOST,
    X_CLOUDBASE_UPSTREAM_TYPE,
};
use crate::plugin::{Phases, Plugin};
use crate::{BuildCtx, PluginError};
use http::HeaderValue;
use pingora_http::ResponseHeader;
use serde::Deserialize;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl Config {
    pub fn build(&self, _cx: &BuildCtx) -> Result<UpstreamInfo, PluginError> {
        Ok(UpstreamInfo)
    }
}

pub struct UpstreamInfo;

const DASH: HeaderValue = HeaderValue::from_static("-");

/// Status codes 0..=999 as header values, made once (cloning one is a reference count).
fn status_value(code: u16) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0u16..1000).map(HeaderValue::from).collect());
    table
        .get(usize::from(code))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(code))
}

impl Plugin for UpstreamInfo {
    fn name(&self) -> &'static str {
        "upstream_info"
    }

    fn phases(&self) -> Phases {
        Phases::RESPONSE
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        let status = ctx.upstream_status.map_or(DASH, status_value);
        let timecost = ctx
            .upstream_timecost
            .map_or(DASH, |d| HeaderValue::from(d.as_millis() as u64));
        let kind = ctx
            .instance
            .as_ref()
            .map_or(DASH, |i| i.upstream_type.clone());
        resp.append_absent_static(
            X_CLOUDBASE_UPSTREAM_STATUS_CODE,
            wire::X_CLOUDBASE_UPSTREAM_STATUS_CODE,
            status,
        );
        resp.append_absent_static(
            X_CLOUDBASE_UPSTREAM_TIMECOST,
            wire::X_CLOUDBASE_UPSTREAM_TIMECOST,
            timecost,
        );
        resp.append_absent_static(
            X_CLOUDBASE_UPSTREAM_TYPE,
            wire::X_CLOUDBASE_UPSTREAM_TYPE,
            kind,
        );
    }
}
