//! The `ProxyHttp` implementation: dispatch only. Each Pingora phase hands the request to the
//! chain of the snapshot the request started with.

use crate::front::Refusal;
use crate::reply;
use crate::snapshot::{Snapshot, Store};
use anygate_plugins::headers::{
    has_underscore, is_cloudbase, is_forwarding, is_owned, is_wx, remove_response_headers,
    X_WX_SERVICE,
};
use anygate_plugins::log_limit::{self, Admit};
use anygate_plugins::metrics::final_status;
use anygate_plugins::net::canonical;
use anygate_plugins::{Chain, Ctx, Entry, ErrorCode, Flow, Reply, Served};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, USER_AGENT};
use http::{HeaderName, HeaderValue};
use log::{error, warn, Level};
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use prometheus::IntGauge;
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    store: Arc<Store>,
}

impl Gateway {
    pub fn new(store: Arc<Store>) -> Gateway {
        Gateway { store }
    }
}

/// The request's snapshot and its plugin context.
pub struct RequestCtx {
    pub snap: Arc<Snapshot>,
    /// In a box of its own: Pingora moves the request's context several times (out of
    /// `new_ctx`, into the request's future and within it), and the chain's context is some
    /// 500 bytes; a box moves as a pointer.
    pub ctx: Box<Ctx>,
    /// A reply decided in a phase that can only fail (body, upstream request); written by
    /// `fail_to_proxy`.
    pending: Option<Reply>,
    /// Set when the connection is over a connection cap (the front decides, this answers).
    refused: Option<Refusal>,
    _in_flight: InFlight,
}

/// Counts a request in `anygate_requests_in_flight` while its context lives: the context is
/// dropped on every path (answered, failed, cancelled), so the gauge cannot leak.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Removes every client-sent header anygate owns (SPEC §5); `X-WX-*` stay only for a trusted
/// front, and never in `_` form (a front writes `-`; an `_` name is a client's that the front
/// passed along, which a CGI-style backend would read as the real one).
///
/// The same walk over the request's fields keeps in `ctx` what the chain reads later, so that
/// no plugin looks it up again: the host (the target's authority, else the first `Host`), whether
/// `Host` came more than once, the first `User-Agent`, `X-WX-SERVICE` (read before it is
/// stripped), and whether forwarding fields came. Returns whether a `Content-Length` came.
fn read_fields(req: &mut RequestHeader, ctx: &mut Ctx) -> bool {
    let keep_wx = ctx.trusted_front;
    ctx.host = req
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let mut hosts = 0u32;
    let mut forwarding = false;
    let mut content_length = false;
    let mut doomed: Vec<HeaderName> = Vec::new();
    // Every value is visited, a repeated name's values one after the other.
    for (name, value) in req.headers.iter() {
        if *name == HOST {
            hosts += 1;
            if ctx.host.is_none() {
                ctx.host = Some(value.clone());
            }
            continue;
        }
        if *name == USER_AGENT {
            if ctx.user_agent.is_none() {
                ctx.user_agent = Some(value.clone());
            }
            continue;
        }
        if *name == CONTENT_LENGTH {
            content_length = true;
            continue;
        }
        if *name == X_WX_SERVICE && ctx.wx_service.is_none() {
            ctx.wx_service = Some(value.clone());
        }
        let n = name.as_str();
        forwarding |= is_forwarding(n);
        if is_owned(n)
            && !(keep_wx && is_wx(n) && !has_underscore(n))
            && doomed.last() != Some(name)
        {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        req.remove_header(name);
    }
    ctx.host_repeated = hosts > 1;
    ctx.forwarding_sent = forwarding;
    content_length
}

/// The request's declared length. Identical `Content-Length` values, in a list or on repeated
/// lines, which the parser took as one length (RFC 9110 §8.6; it refuses values that disagree or
/// do not parse), go to the instance as that one plain number: instances that refuse a list or a
/// repeated field (Node's llhttp and Go's net/http do) would otherwise answer `400` to a request
/// anygate accepted.
fn declared_length(req: &mut RequestHeader) -> Option<u64> {
    let mut values = req.headers.get_all(CONTENT_LENGTH).iter();
    let first = match (values.next(), values.next()) {
        (Some(only), None)
            if !only.is_empty() && only.as_bytes().iter().all(u8::is_ascii_digit) =>
        {
            return only.to_str().ok()?.parse().ok();
        }
        (Some(first), _) => first,
        (None, _) => return None,
    };
    let length = first
        .to_str()
        .ok()
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = length {
        let _ = req.insert_header(CONTENT_LENGTH, HeaderValue::from(n));
    }
    length
}

/// Removes `X-Cloudbase-*` headers an upstream sent: only anygate sets those.
fn strip_cloudbase(resp: &mut ResponseHeader) {
    remove_response_headers(resp, |n| is_cloudbase(n.as_str()));
}

/// The kind of "could not send the error response" lines.
const UNSENT: u64 = 0x756e_7365_6e74;

fn unsent_label() -> (Level, &'static str, String) {
    (
        Level::Warn,
        "anygate::proxy",
        "could not send the error response".into(),
    )
}

/// Ends the current phase with `reply`, to be written by `fail_to_proxy`.
fn fail_with(rc: &mut RequestCtx, reply: Reply) -> Box<Error> {
    let status = reply.status().as_u16();
    rc.pending = Some(reply);
    Error::explain(ErrorType::HTTPStatus(status), "anygate reply")
}

/// [`reply::write`] in a box of its own, for the request phase: the phase's future is built
/// and moved on every request, and would otherwise carry room for writing a response (Pingora's
/// header and body writes), which only a request anygate answers itself needs.
async fn answer(session: &mut Session, ctx: &mut Ctx, chain: &Chain, reply: Reply) -> Result<u16> {
    Box::pin(reply::write(session, ctx, chain, reply)).await
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default installs a (disabled) response-compression
    /// module whose context is built and consulted on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        let snap = self.store.load();
        let mut ctx = Box::new(Ctx::new(snap.generation));
        ctx.routes = Some(snap.routes.clone());
        ctx.limits = snap.limits;
        RequestCtx {
            ctx,
            _in_flight: InFlight::enter(&snap.telemetry.in_flight),
            snap,
            pending: None,
            refused: None,
        }
    }

    /// The front hands a connection's refusal over as the connection's user context.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        rc: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(r) = prev.downcast::<Refusal>() {
            rc.refused = Some(*r);
        }
    }

    async fn request_filter(&self, session: &mut Session, rc: &mut RequestCtx) -> Result<bool> {
        let RequestCtx {
            snap, ctx, refused, ..
        } = rc;
        let target_reply = crate::target::screen(session.req_header_mut());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| canonical(a.ip()));
        ctx.client_ip = ctx.peer_ip;
        snap.chain.early(session.req_header(), ctx);
        if read_fields(session.req_header_mut(), ctx) {
            ctx.declared_length = declared_length(session.req_header_mut());
        }
        // ACME HTTP-01 answers come first (before a connection cap, the firewall, routing and
        // `force_https`); then a connection over a cap is refused; then `CONNECT`, `OPTIONS *`
        // and unusable URLs are answered, and `force_https` domains redirected: all before any
        // plugin decides.
        let acme = if ctx.tls {
            None
        } else {
            self.store.acme.challenges.http01(session.req_header())
        };
        if acme.is_none() {
            if let Some(r) = refused.take() {
                session.set_keepalive(None);
                let reply = Reply::error_with(ErrorCode::ExceedRatelimit, r.message())
                    .with_header("Retry-After", http::HeaderValue::from_static("1"));
                answer(session, ctx, &snap.chain, reply).await?;
                return Ok(true);
            }
        }
        let early = acme
            .or(target_reply)
            .or_else(|| match (&snap.tls.redirect, ctx.tls) {
                (Some(r), false) => r.reply(session.req_header()),
                _ => None,
            });
        if let Some(r) = early {
            answer(session, ctx, &snap.chain, r).await?;
            return Ok(true);
        }
        match snap.chain.request(session, ctx).await {
            Flow::Continue => Ok(false),
            Flow::Reply(r) => {
                answer(session, ctx, &snap.chain, r).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        rc: &mut RequestCtx,
    ) -> Result<()> {
        if !rc.snap.chain.wants_request_body() {
            return Ok(());
        }
        match rc
            .snap
            .chain
            .request_body(body.as_ref(), end_of_stream, &mut rc.ctx)
        {
            Flow::Continue => Ok(()),
            Flow::Reply(r) => Err(fail_with(rc, r)),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        rc: &mut RequestCtx,
    ) -> Result<Arc<HttpPeer>> {
        let ctx = &rc.ctx;
        let Some(instance) = &ctx.instance else {
            return Err(fail_with(
                rc,
                Reply::error_with(ErrorCode::SysErr, "no instance was chosen for this request"),
            ));
        };
        Ok(instance.peer(ctx.entry == Entry::Sdk))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        rc: &mut RequestCtx,
    ) -> Result<()> {
        let flow = rc
            .snap
            .chain
            .upstream_request(session.req_header(), upstream, &mut rc.ctx);
        if let Flow::Reply(r) = flow {
            return Err(fail_with(rc, r));
        }
        rc.ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        rc: &mut RequestCtx,
    ) -> Result<()> {
        let ctx = &mut rc.ctx;
        if !resp.status.is_informational() {
            ctx.upstream_status = Some(resp.status.as_u16());
            ctx.upstream_timecost = ctx.upstream_sent.map(|t| t.elapsed());
        }
        strip_cloudbase(resp);
        rc.snap.chain.upstream_response(resp, ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        rc: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        if crate::drain::draining() {
            session.set_keepalive(None);
        }
        rc.snap.chain.response(resp, &mut rc.ctx);
        rc.ctx.status = resp.status.as_u16();
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        rc: &mut RequestCtx,
    ) -> FailToProxy {
        let reply = match rc.pending.take() {
            Some(r) => Some(r),
            None => reply::for_error(e, &rc.ctx),
        };
        let code = match reply {
            // An interim `100 Continue` the upstream sent does not count: the error follows it.
            Some(r) if final_status(session).is_none() => {
                // Pingora closes the connection after a failed proxy attempt: say so, or the
                // client's next request on it would fail (as Pingora's own error pages do).
                session.set_keepalive(None);
                match reply::write(session, &mut rc.ctx, &rc.snap.chain, r).await {
                    Ok(status) => status,
                    Err(we) => {
                        // The client is gone: one line per interval, whoever hangs up.
                        if let Admit::Write(more) = log_limit::admit(UNSENT, unsent_label) {
                            warn!(
                                "[{}] could not send the error response: {we}{more}",
                                rc.ctx.request_id_str()
                            );
                        }
                        0
                    }
                }
            }
            // Headers already went out: the client sees a cut response, nothing else to do.
            _ => 0,
        };
        if code >= 500 {
            // One line per error and instance per interval: an outage is not a log flood (each
            // request is in the access log).
            let (what, instance) = (
                rc.ctx.error.map_or("-", |c| c.as_str()),
                rc.ctx.instance_label(),
            );
            let key = log_limit::key(&[what.as_bytes(), instance.as_bytes()]);
            let label = || {
                (
                    Level::Error,
                    "anygate::proxy",
                    format!("{what} upstream={instance}"),
                )
            };
            if let Admit::Write(more) = log_limit::admit(key, label) {
                error!(
                    "[{}] {what} upstream={instance} error: {e}{more}",
                    rc.ctx.request_id_str(),
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A request header Pingora could not read as HTTP (a malformed `Content-Length`, a bad
    /// header line): the SPEC's JSON error and headers, not Pingora's bare `400`.
    async fn answer_invalid_request(&self, session: &mut ServerSession, error: &Error) -> bool {
        let detail = match &error.context {
            Some(context) => context.as_str().to_string(),
            None => "it is not valid HTTP/1.1".to_string(),
        };
        let snap = self.store.load();
        let mut ctx = Ctx::new(snap.generation);
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| canonical(a.ip()));
        let Some((header, body)) = reply::standalone_error(
            &snap.chain,
            &mut ctx,
            ErrorCode::InvalidRequest,
            format!("malformed request: {detail}"),
        ) else {
            return false;
        };
        let answer = Served::unparsed(header.status.as_u16(), body.len());
        let served = match session.write_error_response(header, body).await {
            Ok(()) => answer,
            Err(e) => {
                error!("failed to send error response to downstream: {e}");
                Served::unparsed(0, 0)
            }
        };
        log_unparsed(&self.store, &snap, ctx, &served);
        true
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // fail_to_proxy logs with the request id instead.
        true
    }

    fn request_summary(&self, session: &Session, rc: &RequestCtx) -> String {
        // Pingora's own error lines end with this: give them the request id too.
        format!(
            "[{}] {}",
            rc.ctx.request_id_str(),
            session.as_ref().request_summary()
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, rc: &mut RequestCtx) {
        rc.ctx.finish(Instant::now());
        if rc.ctx.host.is_none() && rc.ctx.user_agent.is_none() {
            // A request that ended before its request phase (these are read there).
            let req = session.req_header();
            rc.ctx.host = Ctx::host_of(req);
            rc.ctx.user_agent = req.headers.get(USER_AGENT).cloned();
        }
        let served = Served::of(session, &rc.ctx);
        rc.snap.chain.logging(&served, &rc.ctx, e);
        self.store.monitor.record(&served, &rc.ctx, e);
    }
}

/// The logging phase of a request answered before it could be parsed (by the HTTP/1 parser, or
/// the connection front for a header over the size limit): its answer carried a request id, and
/// that id leads to an access log line, a console record and a count like any other's.
pub(crate) fn log_unparsed(store: &Store, snap: &Snapshot, mut ctx: Ctx, served: &Served) {
    ctx.client_ip = ctx.peer_ip;
    ctx.finish(Instant::now());
    snap.chain.logging(served, &ctx, None);
    store.monitor.record(served, &ctx, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        for (n, v) in fields {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    /// The walk keeps what the chain reads later, as a lookup of each would have found it, and
    /// strips owned names (every value of a repeated one) in the same pass.
    #[test]
    fn the_walk_over_the_fields_reads_what_the_chain_needs_and_strips_owned_ones() {
        let mut req = request(&[
            ("Host", "a.example"),
            ("X-WX-SERVICE", "tcbanyservice"),
            ("User-Agent", "first"),
            ("X-WX-OPENID", "spoof"),
            ("x-wx-openid", "spoof again"),
            ("Host", "b.example"),
            ("User-Agent", "second"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("Content-Length", "0"),
        ]);
        let mut ctx = Ctx::new(0);
        assert!(read_fields(&mut req, &mut ctx));
        assert_eq!(ctx.host.as_ref().unwrap(), "a.example");
        assert!(ctx.host_repeated);
        assert_eq!(ctx.user_agent.as_ref().unwrap(), "first");
        assert_eq!(ctx.wx_service.as_ref().unwrap(), "tcbanyservice");
        assert!(ctx.forwarding_sent);
        assert!(req.headers.get("x-wx-openid").is_none());
        assert!(req.headers.get("x-wx-service").is_none());
        assert_eq!(req.headers.get_all("host").iter().count(), 2);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(!wire.to_ascii_lowercase().contains("x-wx-"), "{wire}");

        // One Host, no forwarding fields, no length; a trusted front keeps its `X-WX-*`.
        let mut req = request(&[("Host", "a.example"), ("X-WX-OPENID", "front's")]);
        let mut ctx = Ctx::new(0);
        ctx.trusted_front = true;
        assert!(!read_fields(&mut req, &mut ctx));
        assert!(!ctx.host_repeated && !ctx.forwarding_sent);
        assert!(ctx.user_agent.is_none() && ctx.wx_service.is_none());
        assert_eq!(req.headers.get("x-wx-openid").unwrap(), "front's");

        // The target's authority is the host, before any `Host` field.
        let mut req = request(&[("Host", "a.example")]);
        req.set_uri(http::Uri::from_static("http://c.example/a"));
        let mut ctx = Ctx::new(0);
        read_fields(&mut req, &mut ctx);
        assert_eq!(ctx.host.as_ref().unwrap(), "c.example");
        assert!(!ctx.host_repeated);
    }

    #[test]
    fn the_declared_length_is_read_and_identical_values_become_one() {
        for (values, want, sent) in [
            (&["12"][..], Some(12), "12"),
            (&["7, 7"][..], Some(7), "7"),
            (&["5", "5"][..], Some(5), "5"),
        ] {
            let mut req = RequestHeader::build("POST", b"/a", None).unwrap();
            for v in values {
                req.append_header("Content-Length", *v).unwrap();
            }
            assert_eq!(declared_length(&mut req), want, "{values:?}");
            let all: Vec<_> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
            assert_eq!(all, [sent], "{values:?}");
        }
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        assert_eq!(declared_length(&mut req), None);
    }
}
