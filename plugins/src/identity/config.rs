//! The `identity` plugin's settings, checked and built into the runtime plugin.

use super::token::{valid_id, Keys};
use super::wechat::{self, Code2Session, Endpoint};
use super::{App, IdentityPlugin, Runtime, SessionMode};
use crate::net::{Cidr, CidrSet};
use crate::units::Dur;
use crate::{BuildCtx, PluginError};
use http::HeaderValue;
use serde::Deserialize;
use std::time::Duration;

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
            verified: Default::default(),
        })
    }
}

impl Config {
    pub fn build(&self, cx: &BuildCtx) -> Result<IdentityPlugin, PluginError> {
        let env = HeaderValue::from_str(cx.env)
            .map_err(|_| PluginError::new("mode", "`env` cannot be sent as a header"))?;
        // SPEC §3 shows every key of every mode in one block; the other modes' keys are
        // accepted (their values still checked by the schema) and ignored, with a warning.
        if self.mode != Mode::TrustedFront && !self.trusted_fronts.is_empty() {
            log::warn!(
                "identity: `trusted_fronts` is only used with `mode: trusted_front`; ignored"
            );
        }
        if self.mode != Mode::Session && self.session.is_some() {
            log::warn!("identity: `session` is only used with `mode: session`; ignored");
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
