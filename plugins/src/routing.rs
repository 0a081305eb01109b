//! `routing`: SPEC §4. SDK calls by instance id, HTTP access by host and trigger path, the
//! prefix strip, `auth: required`, and the body limits of each entry.

use crate::ctx::{Ctx, Entry};
use crate::error::ErrorCode;
use crate::headers::{wire, X_ANYSERVICE_AUTHORIZATION, X_ANYSERVICE_NAME, X_VM_SERVICE};
use crate::plugin::{Flow, Phases, Plugin, Reply, Step};
use crate::routes::{host_without_port, Auth, HttpMatch, RouteTable};
use crate::{BuildCtx, PluginError};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, Version};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use serde::Deserialize;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What `TRACE` (and IIS's `TRACK`) requests get.
    #[serde(default)]
    pub trace: Trace,
}

/// `trace:` of the routing plugin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trace {
    /// `405` with `Allow`, as nginx, Caddy and most gateways do: a `TRACE` echoes the request,
    /// cookies and credentials included, back to whoever can make a browser send it.
    #[default]
    Refuse,
    /// Forwarded to the instance like any other method.
    Forward,
}

impl Config {
    pub fn build(&self, _cx: &BuildCtx) -> Result<Routing, PluginError> {
        Ok(Routing { trace: self.trace })
    }
}

/// Stateless: the route table and limits come with each request (`ctx.routes`, `ctx.limits`)
/// from its snapshot, so the plugin itself survives reloads unchanged.
pub struct Routing {
    trace: Trace,
}

/// The methods a `405` advertises (anygate forwards any other method too).
pub const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A `405` in SPEC §8's shape: `INVALID_REQUEST` (the only codes clients know), with `Allow`.
pub fn method_not_allowed(message: &'static str) -> Reply {
    Reply::error_with(ErrorCode::InvalidRequest, message)
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .with_header("Allow", HeaderValue::from_static(ALLOW))
}

fn is_trace(method: &Method) -> bool {
    *method == Method::TRACE || method.as_str() == "TRACK"
}

impl Routing {
    fn route_sdk(
        &self,
        table: &RouteTable,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<(), Reply> {
        let service = ctx.wx_service.as_ref().map(|v| v.as_bytes());
        if service != Some(b"tcbanyservice".as_slice()) {
            return Err(Reply::error_with(
                ErrorCode::ServiceNotFound,
                "X-WX-SERVICE must be tcbanyservice",
            ));
        }
        let id = [&X_VM_SERVICE, &X_ANYSERVICE_NAME]
            .into_iter()
            .find_map(|h| req.headers.get(h).filter(|v| !v.is_empty()))
            .and_then(|v| v.to_str().ok());
        let Some(id) = id else {
            return Err(Reply::error_with(
                ErrorCode::ServiceNotFound,
                "X-Vm-Service (or X-AnyService-Name) is missing",
            ));
        };
        let Some(instance) = table.instance(id.trim()) else {
            return Err(Reply::error_with(
                ErrorCode::ServiceNotFound,
                "unknown instance",
            ));
        };
        ctx.entry = Entry::Sdk;
        ctx.instance = Some(instance.clone());
        ctx.body_limit = Some(ctx.limits.max_sdk_body);
        Ok(())
    }

    fn route_http(
        &self,
        table: &RouteTable,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<(), Reply> {
        let bad = |m: &'static str| Reply::error_with(ErrorCode::InvalidRequest, m);
        // The host as the runner read it: the target's authority, else the one `Host`.
        if ctx.host_repeated {
            return Err(bad("more than one Host header"));
        }
        let host: &[u8] = match &ctx.host {
            Some(h) => h.as_bytes(),
            None if req.version == Version::HTTP_11 => {
                return Err(bad("HTTP/1.1 request without Host"))
            }
            None => b"",
        };
        let host = std::str::from_utf8(host).map_err(|_| bad("Host is not valid text"))?;
        let raw = req.raw_path();
        let (path, query) = match raw.iter().position(|&b| b == b'?') {
            Some(q) => (&raw[..q], Some(&raw[q..])),
            None => (raw, None),
        };
        match table.match_http(host_without_port(host.trim()), path) {
            HttpMatch::Found {
                route,
                upstream_path,
            } => {
                if upstream_path.as_bytes() != path {
                    let mut target =
                        BytesMut::with_capacity(upstream_path.len() + query.map_or(0, <[u8]>::len));
                    target.put_slice(upstream_path.as_bytes());
                    if let Some(q) = query {
                        target.put_slice(q);
                    }
                    ctx.upstream_target = Some(Bytes::from(target));
                }
                ctx.entry = Entry::Http;
                ctx.instance = Some(route.instance.clone());
                ctx.body_limit = Some(ctx.limits.max_body);
                let required = route.auth == Auth::Required;
                ctx.route = Some(route);
                if required && ctx.identity.is_none() {
                    return Err(Reply::error_with(
                        ErrorCode::Unauthenticated,
                        "this route requires a verified identity",
                    ));
                }
                Ok(())
            }
            HttpMatch::InvalidHost => Err(Reply::error(ErrorCode::InvalidHost)),
            HttpMatch::InvalidPath => Err(Reply::error(ErrorCode::InvalidPath)),
            HttpMatch::BadRequest => Err(bad("invalid percent-encoding in the path")),
        }
    }

    /// The request phase's decision: `TRACE` refused if so set, the route chosen, a declared
    /// body over the limit refused.
    fn decide(&self, req: &RequestHeader, ctx: &mut Ctx) -> Flow {
        if self.trace == Trace::Refuse && is_trace(&req.method) {
            return Flow::Reply(method_not_allowed(
                "TRACE is refused by this gateway (the routing plugin's `trace` setting)",
            ));
        }
        let Some(table) = ctx.routes.clone() else {
            return Flow::Reply(Reply::error_with(ErrorCode::SysErr, "no route table"));
        };
        let routed = if ctx.wx_service.is_some() {
            self.route_sdk(&table, req, ctx)
        } else {
            self.route_http(&table, req, ctx)
        };
        if let Err(reply) = routed {
            return Flow::Reply(reply);
        }
        // A declared length over the limit is refused before any byte is read.
        if ctx.declared_length.is_some_and(|n| over_limit(ctx, n)) {
            return Flow::error(ErrorCode::ExceedMaxPayloadSize);
        }
        Flow::Continue
    }
}

fn over_limit(ctx: &Ctx, bytes: u64) -> bool {
    ctx.body_limit.is_some_and(|limit| bytes > limit)
}

impl Plugin for Routing {
    fn name(&self) -> &'static str {
        "routing"
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::REQUEST_BODY | Phases::UPSTREAM_REQUEST
    }

    fn request<'a>(&'a self, session: &'a mut Session, ctx: &'a mut Ctx) -> Step<'a> {
        Step::Done(self.decide(session.req_header(), ctx))
    }

    fn request_body(&self, chunk: Option<&Bytes>, _end: bool, ctx: &mut Ctx) -> Flow {
        ctx.request_body_bytes += chunk.map_or(0, |c| c.len() as u64);
        if over_limit(ctx, ctx.request_body_bytes) {
            return Flow::error(ErrorCode::ExceedMaxPayloadSize);
        }
        Flow::Continue
    }

    fn upstream_request(&self, _d: &RequestHeader, up: &mut RequestHeader, ctx: &mut Ctx) -> Flow {
        if let Some(target) = &ctx.upstream_target {
            if up.set_origin_path(target).is_err() {
                return Flow::error(ErrorCode::InvalidRequest);
            }
        }
        // Proves to the instance that the request came through the gateway (the client's own
        // copy was stripped with the other owned headers).
        if let Some(secret) = ctx.instance.as_ref().and_then(|i| i.origin_secret.clone()) {
            up.append_absent_static(
                X_ANYSERVICE_AUTHORIZATION,
                wire::X_ANYSERVICE_AUTHORIZATION,
                secret,
            );
        }
        Flow::Continue
    }
}
