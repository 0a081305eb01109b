//! `request_id`: gives every request its `X-Cloudbase-Request-Id` (SPEC §7), sent upstream and
//! back to the client.

use crate::ctx::Ctx;
use crate::headers::{wire, X_CLOUDBASE_REQUEST_ID};
use crate::plugin::{Flow, Phases, Plugin, Step};
use crate::{BuildCtx, PluginError};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use serde::Deserialize;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl Config {
    pub fn build(&self, _cx: &BuildCtx) -> Result<RequestId, PluginError> {
        Ok(RequestId)
    }
}

pub struct RequestId;

impl Plugin for RequestId {
    fn name(&self) -> &'static str {
        "request_id"
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::UPSTREAM_REQUEST | Phases::RESPONSE
    }

    fn request<'a>(&'a self, _session: &'a mut Session, ctx: &'a mut Ctx) -> Step<'a> {
        // Made now so that ids sort by arrival time.
        ctx.request_id();
        Step::Done(Flow::Continue)
    }

    fn upstream_request(&self, _d: &RequestHeader, up: &mut RequestHeader, ctx: &mut Ctx) -> Flow {
        let id = ctx.request_id().clone();
        up.append_absent_static(X_CLOUDBASE_REQUEST_ID, wire::X_CLOUDBASE_REQUEST_ID, id);
        Flow::Continue
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        let id = ctx.request_id().clone();
        resp.append_absent_static(X_CLOUDBASE_REQUEST_ID, wire::X_CLOUDBASE_REQUEST_ID, id);
    }
}
