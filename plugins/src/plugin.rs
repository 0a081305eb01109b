//! The plugin trait and the chain that runs plugins phase by phase.

use crate::ctx::Ctx;
use crate::error::ErrorCode;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The phases a plugin takes part in; the chain calls a plugin only in these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Phases(u8);

impl Phases {
    pub const NONE: Phases = Phases(0);
    /// Before any request phase and before owned headers are stripped; sync, cannot answer.
    pub const EARLY: Phases = Phases(1);
    pub const REQUEST: Phases = Phases(1 << 1);
    pub const REQUEST_BODY: Phases = Phases(1 << 2);
    pub const UPSTREAM_REQUEST: Phases = Phases(1 << 3);
    pub const UPSTREAM_RESPONSE: Phases = Phases(1 << 4);
    pub const RESPONSE: Phases = Phases(1 << 5);
    pub const LOGGING: Phases = Phases(1 << 6);

    pub const fn has(self, other: Phases) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Phases {
    type Output = Phases;
    fn bitor(self, rhs: Phases) -> Phases {
        Phases(self.0 | rhs.0)
    }
}

/// What a plugin wants after a phase: go on, or end the request with this answer.
#[derive(Debug)]
pub enum Flow {
    Continue,
    Reply(Reply),
}

impl Flow {
    pub fn error(code: ErrorCode) -> Flow {
        Flow::Reply(Reply::error(code))
    }
}

/// What the request phase gives back: the decision, or, for a plugin that has to wait on I/O
/// (a login exchange with WeChat, a limit shared in Redis), a future that makes it.
///
/// A plugin that decides at once returns `Done` and costs nothing more than a call: no future
/// is built, boxed or polled. An `async fn` in the trait would box one per plugin and request.
pub enum Step<'a> {
    Done(Flow),
    Wait(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

/// An answer anygate gives itself. The runner writes it; plugins never write to the session.
#[derive(Debug)]
pub enum Reply {
    /// A SPEC §8 error: JSON body with `code`, `message`, `requestId`.
    Error {
        code: ErrorCode,
        message: Option<Cow<'static, str>>,
        /// Extra headers, by their wire name (e.g. `"Retry-After"`).
        headers: Vec<(&'static str, HeaderValue)>,
        /// A status other than the code's own (405 for a refused method: HTTP says 405, and
        /// clients know only SPEC §8's codes).
        status: Option<StatusCode>,
    },
    /// Any other response (e.g. the login answer).
    Response {
        header: Box<ResponseHeader>,
        body: Bytes,
    },
}

impl Reply {
    pub fn error(code: ErrorCode) -> Reply {
        Reply::Error {
            code,
            message: None,
            headers: Vec::new(),
            status: None,
        }
    }

    pub fn error_with(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error {
            code,
            message: Some(message.into()),
            headers: Vec::new(),
            status: None,
        }
    }

    /// The status the client gets: the error code's own unless overridden.
    pub fn status(&self) -> StatusCode {
        match self {
            Reply::Error { code, status, .. } => status.unwrap_or(code.status()),
            Reply::Response { header, .. } => header.status,
        }
    }

    /// Sends an error with another status than its code's (e.g. 405 with `INVALID_REQUEST`).
    pub fn with_status(mut self, new: StatusCode) -> Reply {
        match &mut self {
            Reply::Error { status, .. } => *status = Some(new),
            Reply::Response { header, .. } => {
                let _ = header.set_status(new);
            }
        }
        self
    }

    /// Adds a header to an error reply (e.g. `Retry-After`).
    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Reply {
        match &mut self {
            Reply::Error { headers, .. } => headers.push((name, value)),
            Reply::Response { header, .. } => {
                let _ = header.insert_header(name, value);
            }
        }
        self
    }
}

/// One link of the chain. Every method has a default that does nothing; `phases()` says which
/// ones the plugin implements, so the chain skips the rest.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn phases(&self) -> Phases;

    /// Sees the request as the client sent it, before owned headers are stripped. For
    /// decisions every later plugin relies on (client address, trusted fronts).
    fn early(&self, _req: &RequestHeader, _ctx: &mut Ctx) {}

    /// The request phase: inspect, enrich the context, or answer; `Step::Wait` when the
    /// answer needs I/O.
    fn request<'a>(&'a self, _session: &'a mut Session, _ctx: &'a mut Ctx) -> Step<'a> {
        Step::Done(Flow::Continue)
    }

    /// Each piece of request body as it arrives (`None` with `end` at the end).
    fn request_body(&self, _chunk: Option<&Bytes>, _end: bool, _ctx: &mut Ctx) -> Flow {
        Flow::Continue
    }

    /// Shape the request that goes to the instance.
    fn upstream_request(
        &self,
        _downstream: &RequestHeader,
        _upstream: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Flow {
        Flow::Continue
    }

    /// The instance's response header, as received.
    fn upstream_response(&self, _resp: &mut ResponseHeader, _ctx: &mut Ctx) {}

    /// Every response header before it goes to the client: proxied ones and anygate's own.
    fn response(&self, _resp: &mut ResponseHeader, _ctx: &mut Ctx) {}

    /// After the response is sent or the request failed.
    fn logging(&self, _served: &Served, _ctx: &Ctx, _error: Option<&pingora_error::Error>) {}
}

/// What the logging phase knows of a request and of the answer the client got.
#[derive(Clone, Copy)]
pub struct Served<'a> {
    /// The request as the client sent it; `None` for one that could not be parsed (answered
    /// `400 INVALID_REQUEST` before any other phase ran).
    pub request: Option<&'a RequestHeader>,
    /// The status the client got; `0` when no answer could be sent.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub body_bytes: usize,
}

impl<'a> Served<'a> {
    pub fn of(session: &'a Session, ctx: &Ctx) -> Served<'a> {
        Served {
            request: Some(session.req_header()),
            status: crate::metrics::sent_status(session, ctx),
            body_bytes: session.as_ref().body_bytes_sent(),
        }
    }

    /// A request answered before it could be parsed.
    pub fn unparsed(status: u16, body_bytes: usize) -> Served<'static> {
        Served {
            request: None,
            status,
            body_bytes,
        }
    }

    /// The method as sent.
    pub fn method(&self) -> Option<&'a [u8]> {
        self.request.map(|r| r.method.as_str().as_bytes())
    }

    /// The path as sent, without its query (queries often carry tokens).
    pub fn path(&self) -> Option<&'a [u8]> {
        self.request.map(|r| {
            let raw = r.raw_path();
            &raw[..raw.iter().position(|&b| b == b'?').unwrap_or(raw.len())]
        })
    }
}

/// The ordered chain, with a list per phase so a request pays only for plugins that act.
#[derive(Default)]
pub struct Chain {
    all: Vec<Arc<dyn Plugin>>,
    early: Vec<Arc<dyn Plugin>>,
    request: Vec<Arc<dyn Plugin>>,
    request_body: Vec<Arc<dyn Plugin>>,
    upstream_request: Vec<Arc<dyn Plugin>>,
    upstream_response: Vec<Arc<dyn Plugin>>,
    response: Vec<Arc<dyn Plugin>>,
    logging: Vec<Arc<dyn Plugin>>,
}

impl Chain {
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Chain {
        let pick = |p: Phases| -> Vec<Arc<dyn Plugin>> {
            plugins
                .iter()
                .filter(|x| x.phases().has(p))
                .cloned()
                .collect()
        };
        Chain {
            early: pick(Phases::EARLY),
            request: pick(Phases::REQUEST),
            request_body: pick(Phases::REQUEST_BODY),
            upstream_request: pick(Phases::UPSTREAM_REQUEST),
            upstream_response: pick(Phases::UPSTREAM_RESPONSE),
            response: pick(Phases::RESPONSE),
            logging: pick(Phases::LOGGING),
            all: plugins,
        }
    }

    pub fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.all
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.all.iter().map(|p| p.name()).collect()
    }

    pub fn early(&self, req: &RequestHeader, ctx: &mut Ctx) {
        for p in &self.early {
            p.early(req, ctx);
        }
    }

    pub async fn request(&self, session: &mut Session, ctx: &mut Ctx) -> Flow {
        for p in &self.request {
            let flow = match p.request(session, ctx) {
                Step::Done(flow) => flow,
                Step::Wait(decide) => decide.await,
            };
            if let Flow::Reply(r) = flow {
                return Flow::Reply(r);
            }
        }
        Flow::Continue
    }

    pub fn wants_request_body(&self) -> bool {
        !self.request_body.is_empty()
    }

    pub fn request_body(&self, chunk: Option<&Bytes>, end: bool, ctx: &mut Ctx) -> Flow {
        for p in &self.request_body {
            if let Flow::Reply(r) = p.request_body(chunk, end, ctx) {
                return Flow::Reply(r);
            }
        }
        Flow::Continue
    }

    pub fn upstream_request(
        &self,
        downstream: &RequestHeader,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Flow {
        for p in &self.upstream_request {
            if let Flow::Reply(r) = p.upstream_request(downstream, upstream, ctx) {
                return Flow::Reply(r);
            }
        }
        Flow::Continue
    }

    pub fn upstream_response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        for p in &self.upstream_response {
            p.upstream_response(resp, ctx);
        }
    }

    pub fn response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        for p in &self.response {
            p.response(resp, ctx);
        }
    }

    pub fn logging(&self, served: &Served, ctx: &Ctx, error: Option<&pingora_error::Error>) {
        for p in &self.logging {
            p.logging(served, ctx, error);
        }
    }
}
