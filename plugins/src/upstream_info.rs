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

/// The numbers 0..=999 as static header values, made once per process: a status code and a
/// time cost in milliseconds are nearly always among them. Cloning a static value touches no
/// reference count, and a value made per response (`HeaderValue::from(u64)`) allocated.
fn small_number(n: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0u16..1000)
            .map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str())))
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

impl Plugin for UpstreamInfo {
    fn name(&self) -> &'static str {
        "upstream_info"
    }

    fn phases(&self) -> Phases {
        Phases::RESPONSE
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        let status = ctx
            .upstream_status
            .map_or(DASH, |code| small_number(u64::from(code)));
        let timecost = ctx
            .upstream_timecost
            .map_or(DASH, |d| small_number(d.as_millis() as u64));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_numbers_come_from_the_table_and_others_are_made() {
        for n in [0u64, 7, 42, 200, 504, 999, 1000, 65_536, u64::MAX] {
            assert_eq!(small_number(n).to_str().ok(), Some(n.to_string().as_str()));
        }
    }
}
