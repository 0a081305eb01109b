//! `identity`: SPEC §5. This is where `X-WX-OPENID` and the other identity headers are set.
//!
//! Every client-sent header anygate owns has already been removed by the runner (before any
//! request phase, in every chain); this plugin decides who the caller is and sets exactly the
//! identity headers that apply, clearing the others (set-or-clear):
//! - `none`: anonymous; `X-WX-ENV` only.
//! - `trusted_front`: a TCP peer inside `trusted_fronts` is the CloudBase network; its `X-WX-*`
//!   headers are kept (the runner keeps them when `ctx.trusted_front` is set in `early`).
//! - `session`: `POST /.anygate/login` exchanges a `wx.login` code for a signed token
//!   ([`login`], [`wechat`], [`token`]); `Authorization: Bearer <token>` then proves who the
//!   caller is. Sources and platforms come from the User-Agent ([`ua`]).

mod cache;
mod config;
pub mod login;
pub mod token;
pub mod ua;
pub mod wechat;

use crate::ctx::{Ctx, Identity};
use crate::error::ErrorCode;
use crate::headers::{
    wire, X_WX_APPID, X_WX_ENV, X_WX_FROM_APPID, X_WX_FROM_OPENID, X_WX_FROM_UNIONID, X_WX_OPENID,
    X_WX_PLATFORM, X_WX_SOURCE, X_WX_UNIONID,
};
use crate::net::CidrSet;
use crate::plugin::{Flow, Phases, Plugin, Reply, Step};
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};
use log::debug;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::Duration;
use token::{bearer, Claims, Invalid, Keys};
use wechat::Code2Session;

pub use config::{
    AppConfig, Config, Mode, Role, SessionConfig, DEFAULT_CODE2SESSION_TIMEOUT, DEFAULT_TOKEN_TTL,
};

/// A configured app, with its secret.
pub struct App {
    pub appid: String,
    secret: String,
    pub role: Role,
}

/// `session` mode, ready to serve.
pub struct SessionMode {
    apps: Vec<App>,
    owner: usize,
    keys: Keys,
    ttl: Duration,
    wechat: Code2Session,
    verified: cache::TokenCache,
}

impl SessionMode {
    fn app(&self, appid: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    fn owner(&self) -> &str {
        self.apps.get(self.owner).map_or("", |a| a.appid.as_str())
    }

    /// Who sent `req`: `Ok(None)` without a Bearer token, a 401 for a token that fails.
    /// The identity of the request's Bearer token, checked at `now` (Unix seconds).
    fn authenticate(
        &self,
        req: &RequestHeader,
        rid: &str,
        now: u64,
    ) -> Result<Option<Arc<Identity>>, Reply> {
        let all = req.headers.get_all(AUTHORIZATION);
        let mut tokens = all.iter().filter_map(|v| bearer(v.as_bytes()));
        let Some(token) = tokens.next() else {
            // No header, or another scheme: the backend's business.
            return Ok(None);
        };
        if all.iter().count() > 1 {
            return Err(Reply::error_with(
                ErrorCode::Unauthenticated,
                "send one Authorization header",
            ));
        }
        if let Some(id) = self.verified.get(token, now) {
            return Ok(Some(id));
        }
        let token_bytes = token;
        let token = std::str::from_utf8(token).unwrap_or("");
        let claims = self.keys.verify(token, now).map_err(|why| {
            debug!("[{rid}] refused token: {}", why.as_str());
            Reply::error_with(
                ErrorCode::Unauthenticated,
                match why {
                    Invalid::Expired => "the token has expired; log in again",
                    Invalid::Malformed | Invalid::BadSignature => "the token is not valid",
                },
            )
        })?;
        let Some(app) = self.app(&claims.appid) else {
            debug!("[{rid}] refused token of an app no longer configured");
            return Err(Reply::error_with(
                ErrorCode::Unauthenticated,
                "the token is not valid",
            ));
        };
        let Claims {
            appid,
            openid,
            unionid,
            exp,
            ..
        } = claims;
        let mut id = Identity {
            appid,
            openid,
            unionid,
            shared_from_owner: match app.role {
                Role::Owner => None,
                Role::Shared => Some(self.owner().to_string()),
            },
            headers: Vec::new(),
        };
        // Verified ids are visible ASCII (`token::valid_id`), so these cannot fail.
        id.headers = identity_headers(&id).map_err(|_| Reply::error(ErrorCode::SysErr))?;
        let id = Arc::new(id);
        self.verified.put(token_bytes, id.clone(), exp);
        Ok(Some(id))
    }
}

/// Signs a token as the login would (for `anygate token`).
pub fn mint(
    keys: &Keys,
    appid: &str,
    openid: &str,
    unionid: Option<&str>,
    ttl: Duration,
) -> String {
    let now = login::unix_now();
    keys.sign(&Claims {
        appid: appid.to_string(),
        openid: openid.to_string(),
        unionid: unionid.map(str::to_string),
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
    })
}

enum Runtime {
    None,
    TrustedFront(CidrSet),
    Session(Box<SessionMode>),
}

pub struct IdentityPlugin {
    env: HeaderValue,
    mode: Runtime,
}

/// Every header of the SPEC §5 table: each is either set from a verified identity or, sent by a
/// client, stripped before the chain runs (every one is an owned `x-wx-*` name: tested below).
#[cfg(test)]
const TABLE: [HeaderName; 9] = [
    X_WX_OPENID,
    X_WX_APPID,
    X_WX_UNIONID,
    X_WX_ENV,
    X_WX_SOURCE,
    X_WX_PLATFORM,
    X_WX_FROM_OPENID,
    X_WX_FROM_APPID,
    X_WX_FROM_UNIONID,
];

/// The single non-empty text value of a header (kept from a trusted front).
fn front_value(req: &RequestHeader, name: &HeaderName) -> Option<String> {
    let mut all = req.headers.get_all(name).iter();
    let v = all.next()?;
    if all.next().is_some() {
        return None;
    }
    v.to_str()
        .ok()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The identity a trusted front vouches for, so that `auth: required` routes accept it.
fn front_identity(req: &RequestHeader) -> Option<Identity> {
    let get = |n: &HeaderName| front_value(req, n);
    if let Some(openid) = get(&X_WX_OPENID) {
        return Some(Identity {
            appid: get(&X_WX_APPID).unwrap_or_default(),
            openid,
            unionid: get(&X_WX_UNIONID),
            shared_from_owner: None,
            headers: Vec::new(),
        });
    }
    let openid = get(&X_WX_FROM_OPENID)?;
    Some(Identity {
        appid: get(&X_WX_FROM_APPID).unwrap_or_default(),
        openid,
        unionid: get(&X_WX_FROM_UNIONID),
        shared_from_owner: Some(get(&X_WX_APPID).unwrap_or_default()),
        headers: Vec::new(),
    })
}

fn value(v: &str) -> Result<HeaderValue, ()> {
    HeaderValue::from_str(v).map_err(|_| ())
}

/// The headers of a verified identity (SPEC §5 table), except the User-Agent dependent ones.
fn identity_headers(id: &Identity) -> Result<Vec<(HeaderName, &'static str, HeaderValue)>, ()> {
    let mut h = Vec::with_capacity(4);
    match &id.shared_from_owner {
        None => {
            h.push((X_WX_OPENID, wire::X_WX_OPENID, value(&id.openid)?));
            h.push((X_WX_APPID, wire::X_WX_APPID, value(&id.appid)?));
            if let Some(u) = &id.unionid {
                h.push((X_WX_UNIONID, wire::X_WX_UNIONID, value(u)?));
            }
        }
        Some(owner) => {
            h.push((X_WX_FROM_OPENID, wire::X_WX_FROM_OPENID, value(&id.openid)?));
            h.push((X_WX_FROM_APPID, wire::X_WX_FROM_APPID, value(&id.appid)?));
            if let Some(u) = &id.unionid {
                h.push((X_WX_FROM_UNIONID, wire::X_WX_FROM_UNIONID, value(u)?));
            }
            h.push((X_WX_APPID, wire::X_WX_APPID, value(owner)?));
        }
    }
    Ok(h)
}

/// Sets the headers of a verified identity.
fn set_identity(up: &mut RequestHeader, id: &Identity, ua: &[u8]) -> Result<(), ()> {
    for (name, case, v) in &id.headers {
        up.append_absent_static(name.clone(), case, v.clone());
    }
    let (source, platform) = ua::classify(ua);
    if let Some(s) = source {
        up.append_absent_static(X_WX_SOURCE, wire::X_WX_SOURCE, HeaderValue::from_static(s));
    }
    if let Some(p) = platform {
        up.append_absent_static(
            X_WX_PLATFORM,
            wire::X_WX_PLATFORM,
            HeaderValue::from_static(p),
        );
    }
    Ok(())
}

impl Plugin for IdentityPlugin {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn phases(&self) -> Phases {
        match self.mode {
            Runtime::None => Phases::UPSTREAM_REQUEST,
            Runtime::TrustedFront(_) => Phases::EARLY | Phases::REQUEST | Phases::UPSTREAM_REQUEST,
            Runtime::Session(_) => Phases::REQUEST | Phases::UPSTREAM_REQUEST,
        }
    }

    fn early(&self, _req: &RequestHeader, ctx: &mut Ctx) {
        if let (Runtime::TrustedFront(fronts), Some(peer)) = (&self.mode, ctx.peer_ip) {
            ctx.trusted_front = fronts.contains(peer);
        }
    }

    fn request<'a>(&'a self, session: &'a mut Session, ctx: &'a mut Ctx) -> Step<'a> {
        match &self.mode {
            Runtime::Session(s) => {
                if session.req_header().uri.path() == login::LOGIN_PATH {
                    // The one path that waits: the code is exchanged with WeChat.
                    return Step::Wait(Box::pin(async move {
                        Flow::Reply(login::handle(s, session, ctx).await)
                    }));
                }
                let now = ctx.unix_start.as_secs();
                match s.authenticate(session.req_header(), ctx.request_id_str(), now) {
                    Ok(id) => ctx.identity = id,
                    Err(reply) => return Step::Done(Flow::Reply(reply)),
                }
            }
            Runtime::TrustedFront(_) if ctx.trusted_front => {
                ctx.identity = front_identity(session.req_header()).map(Arc::new);
            }
            Runtime::TrustedFront(_) | Runtime::None => {}
        }
        Step::Done(Flow::Continue)
    }

    fn upstream_request(
        &self,
        _down: &RequestHeader,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Flow {
        if ctx.trusted_front {
            // The front's own X-WX-* headers are its word; only fill in the environment.
            if !up.headers.contains_key(&X_WX_ENV) {
                up.append_absent_static(X_WX_ENV, wire::X_WX_ENV, self.env.clone());
            }
            return Flow::Continue;
        }
        // The runner stripped every client-sent `x-wx-*` (`read_fields`, before any plugin ran),
        // and no plugin sets one but this: nothing to clear. Looking again cost a walk over every
        // header name on every request.
        debug_assert!(
            !up.headers.keys().any(|k| crate::headers::is_wx(k.as_str())),
            "an x-wx-* header reached the identity plugin"
        );
        if ctx.identity.is_some() && matches!(self.mode, Runtime::Session(_)) {
            // The token was ours; the instance gets the identity instead. (Removed before
            // anything is added: a removal then has no added fields to look through.)
            up.remove_header(&AUTHORIZATION);
        }
        up.append_absent_static(X_WX_ENV, wire::X_WX_ENV, self.env.clone());
        let Some(id) = &ctx.identity else {
            return Flow::Continue;
        };
        let ua = ctx.user_agent.as_ref().map_or(&b""[..], |v| v.as_bytes());
        if set_identity(up, id, ua).is_err() {
            return Flow::error(ErrorCode::SysErr);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{is_owned, is_wx};

    /// The plugin does not clear the table's names itself: the runner's strip of owned names
    /// must cover every one, in any case.
    #[test]
    fn every_identity_header_is_stripped_as_an_owned_name() {
        for name in &TABLE {
            assert!(is_wx(name.as_str()) && is_owned(name.as_str()), "{name}");
            assert!(is_owned(&name.as_str().to_ascii_uppercase()), "{name}");
        }
    }
}
