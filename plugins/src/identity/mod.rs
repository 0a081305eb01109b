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
use crate::net::{Cidr, CidrSet};
use crate::plugin::{Flow, Phases, Plugin, Reply};
use crate::units::Dur;
use crate::{BuildCtx, PluginError};
use async_trait::async_trait;
use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderName, HeaderValue};
use log::debug;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use serde::Deserialize;
use std::time::Duration;
use token::{bearer, valid_id, Claims, Invalid, Keys};
use wechat::{Code2Session, Endpoint};

/// How callers are identified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Session,
    TrustedFront,
    #[default]
    None,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// `trusted_front` mode: the peers whose `X-WX-*` headers are kept.
    #[serde(default)]
    pub trusted_fronts: Vec<Cidr>,
    /// `session` mode settings.
    #[serde(default)]
    pub session: Option<SessionConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub code2session_url: Option<String>,
    /// Names the variable holding the comma-separated token keys (the first signs).
    pub token_keys_env: String,
    #[serde(default)]
    pub token_ttl: Option<Dur>,
    /// How long WeChat has to answer a code exchange.
    #[serde(default)]
    pub code2session_timeout: Option<Dur>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub appid: String,
    pub secret_env: String,
    pub role: Role,
}

/// `owner`: the environment's own Mini Program; `shared`: another one using its resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Shared,
}

pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(2 * 3600);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86400);
pub const DEFAULT_CODE2SESSION_TIMEOUT: Duration = Duration::from_secs(5);

type EnvVar<'a> = &'a dyn Fn(&str) -> Option<String>;

fn env_value(env: EnvVar, var: &str, path: String) -> Result<String, PluginError> {
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(PluginError::at(
            path,
            format!("environment variable `{var}` is not set"),
        )),
    }
}

impl SessionConfig {
    /// The token keys, read from the variable `token_keys_env` names.
    pub fn keys(&self, env: EnvVar) -> Result<Keys, PluginError> {
        let path = "session.token_keys_env".to_string();
        let value = env_value(env, &self.token_keys_env, path.clone())?;
        Keys::parse(&value).map_err(|why| {
            PluginError::at(
                path,
                format!("environment variable `{}`: {why}", self.token_keys_env),
            )
        })
    }

    pub fn ttl(&self) -> Duration {
        self.token_ttl.map_or(DEFAULT_TOKEN_TTL, |d| d.0)
    }

    /// The owner app's id, if exactly one app is the owner.
    pub fn owner(&self) -> Option<&str> {
        let mut owners = self.apps.iter().filter(|a| a.role == Role::Owner);
        match (owners.next(), owners.next()) {
            (Some(o), None) => Some(&o.appid),
            _ => None,
        }
    }

    fn build(&self, env: EnvVar) -> Result<SessionMode, PluginError> {
        if self.apps.is_empty() {
            return Err(PluginError::new(
                "session",
                "`session.apps` needs the environment's own app, with `role: owner`",
            ));
        }
        let mut apps: Vec<App> = Vec::with_capacity(self.apps.len());
        let mut owner: Option<usize> = None;
        for (i, a) in self.apps.iter().enumerate() {
            let at = |key: &str| format!("session.apps.{i}.{key}");
            if !valid_id(&a.appid) {
                return Err(PluginError::at(
                    at("appid"),
                    format!("`{}` is not an app id", a.appid),
                ));
            }
            if let Some(j) = apps.iter().position(|x| x.appid == a.appid) {
                return Err(PluginError::at(
                    at("appid"),
                    format!("app `{}` is listed twice (first as app {})", a.appid, j + 1),
                ));
            }
            if a.role == Role::Owner {
                if let Some(o) = owner {
                    return Err(PluginError::at(
                        at("role"),
                        format!(
                            "only one app can be the owner; `{}` already is",
                            self.apps[o].appid
                        ),
                    ));
                }
                owner = Some(i);
            }
            let secret = env_value(env, &a.secret_env, at("secret_env"))?;
            apps.push(App {
                appid: a.appid.clone(),
                secret: secret.trim().to_string(),
                role: a.role,
            });
        }
        let Some(owner) = owner else {
            return Err(PluginError::new(
                "session",
                "one app in `session.apps` must have `role: owner` (the environment's own app)",
            ));
        };
        let url = self
            .code2session_url
            .as_deref()
            .unwrap_or(wechat::DEFAULT_URL);
        let endpoint = Endpoint::parse(url)
            .map_err(|why| PluginError::at("session.code2session_url".to_string(), why))?;
        let ttl = self.ttl();
        if ttl.as_secs() == 0 || ttl > MAX_TOKEN_TTL {
            return Err(PluginError::at(
                "session.token_ttl".to_string(),
                "`token_ttl` must be between 1s and 366d",
            ));
        }
        let timeout = self
            .code2session_timeout
            .map_or(DEFAULT_CODE2SESSION_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(PluginError::at(
                "session.code2session_timeout".to_string(),
                "`code2session_timeout` must be more than 0",
            ));
        }
        Ok(SessionMode {
            keys: self.keys(env)?,
            owner,
            apps,
            ttl,
            wechat: Code2Session::new(endpoint, timeout),
        })
    }
}

impl Config {
    pub fn build(&self, cx: &BuildCtx) -> Result<IdentityPlugin, PluginError> {
        let env = HeaderValue::from_str(cx.env)
            .map_err(|_| PluginError::new("mode", "`env` cannot be sent as a header"))?;
        if self.mode != Mode::TrustedFront && !self.trusted_fronts.is_empty() {
            return Err(PluginError::new(
                "trusted_fronts",
                "`trusted_fronts` is only used with `mode: trusted_front`",
            ));
        }
        if self.mode != Mode::Session && self.session.is_some() {
            return Err(PluginError::new(
                "session",
                "`session` is only used with `mode: session`",
            ));
        }
        let mode = match self.mode {
            Mode::None => Runtime::None,
            Mode::TrustedFront if self.trusted_fronts.is_empty() => {
                return Err(PluginError::new(
                    "mode",
                    "`mode: trusted_front` needs `trusted_fronts: [CIDR, ...]`",
                ))
            }
            Mode::TrustedFront => Runtime::TrustedFront(CidrSet::new(&self.trusted_fronts)),
            Mode::Session => match &self.session {
                Some(s) => Runtime::Session(Box::new(s.build(cx.env_var)?)),
                None => {
                    return Err(PluginError::new(
                        "mode",
                        "`mode: session` needs a `session:` section (apps, token_keys_env)",
                    ))
                }
            },
        };
        Ok(IdentityPlugin { env, mode })
    }
}

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
}

impl SessionMode {
    fn app(&self, appid: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    fn owner(&self) -> &str {
        self.apps.get(self.owner).map_or("", |a| a.appid.as_str())
    }

    /// Who sent `req`: `Ok(None)` without a Bearer token, a 401 for a token that fails.
    fn authenticate(&self, req: &RequestHeader, rid: &str) -> Result<Option<Identity>, Reply> {
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
        let token = std::str::from_utf8(token).unwrap_or("");
        let claims = self.keys.verify(token, login::unix_now()).map_err(|why| {
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
            ..
        } = claims;
        Ok(Some(Identity {
            appid,
            openid,
            unionid,
            shared_from_owner: match app.role {
                Role::Owner => None,
                Role::Shared => Some(self.owner().to_string()),
            },
        }))
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

/// Every header of the SPEC §5 table: each is either set from a verified identity or cleared.
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
        });
    }
    let openid = get(&X_WX_FROM_OPENID)?;
    Some(Identity {
        appid: get(&X_WX_FROM_APPID).unwrap_or_default(),
        openid,
        unionid: get(&X_WX_FROM_UNIONID),
        shared_from_owner: Some(get(&X_WX_APPID).unwrap_or_default()),
    })
}

fn set(up: &mut RequestHeader, name: &'static str, value: &str) -> Result<(), ()> {
    let v = HeaderValue::from_str(value).map_err(|_| ())?;
    up.insert_header(name, v).map_err(|_| ())
}

/// Sets the headers of a verified identity.
fn set_identity(up: &mut RequestHeader, id: &Identity, ua: &[u8]) -> Result<(), ()> {
    match &id.shared_from_owner {
        None => {
            set(up, wire::X_WX_OPENID, &id.openid)?;
            set(up, wire::X_WX_APPID, &id.appid)?;
            if let Some(u) = &id.unionid {
                set(up, wire::X_WX_UNIONID, u)?;
            }
        }
        Some(owner) => {
            set(up, wire::X_WX_FROM_OPENID, &id.openid)?;
            set(up, wire::X_WX_FROM_APPID, &id.appid)?;
            if let Some(u) = &id.unionid {
                set(up, wire::X_WX_FROM_UNIONID, u)?;
            }
            set(up, wire::X_WX_APPID, owner)?;
        }
    }
    let (source, platform) = ua::classify(ua);
    if let Some(s) = source {
        set(up, wire::X_WX_SOURCE, s)?;
    }
    if let Some(p) = platform {
        set(up, wire::X_WX_PLATFORM, p)?;
    }
    Ok(())
}

#[async_trait]
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

    async fn request(&self, session: &mut Session, ctx: &mut Ctx) -> Flow {
        match &self.mode {
            Runtime::Session(s) => {
                if session.req_header().uri.path() == login::LOGIN_PATH {
                    return Flow::Reply(login::handle(s, session, ctx).await);
                }
                match s.authenticate(session.req_header(), ctx.request_id_str()) {
                    Ok(id) => ctx.identity = id,
                    Err(reply) => return Flow::Reply(reply),
                }
            }
            Runtime::TrustedFront(_) if ctx.trusted_front => {
                ctx.identity = front_identity(session.req_header());
            }
            Runtime::TrustedFront(_) | Runtime::None => {}
        }
        Flow::Continue
    }

    fn upstream_request(
        &self,
        down: &RequestHeader,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Flow {
        if ctx.trusted_front {
            // The front's own X-WX-* headers are its word; only fill in the environment.
            if !up.headers.contains_key(&X_WX_ENV) {
                let _ = up.insert_header(wire::X_WX_ENV, self.env.clone());
            }
            return Flow::Continue;
        }
        for name in &TABLE {
            up.remove_header(name);
        }
        let _ = up.insert_header(wire::X_WX_ENV, self.env.clone());
        let Some(id) = &ctx.identity else {
            return Flow::Continue;
        };
        if matches!(self.mode, Runtime::Session(_)) {
            // The token was ours; the instance gets the identity instead.
            up.remove_header(&AUTHORIZATION);
        }
        let ua = down
            .headers
            .get(USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        if set_identity(up, id, ua).is_err() {
            return Flow::error(ErrorCode::SysErr);
        }
        Flow::Continue
    }
}
