//! `anygate token`: mints a session token with the key the config names, to test a backend
//! without WeChat (the token is what `POST /.anygate/login` would have answered).

use crate::config;
use crate::config::units::parse_duration;
use anygate_plugins::identity::token::valid_id;
use anygate_plugins::identity::{self, Mode};
use anygate_plugins::PluginConfig;
use std::path::Path;
use std::time::Duration;

/// What to put in the token.
pub struct Request<'a> {
    /// Default: the owner app.
    pub appid: Option<&'a str>,
    pub openid: &'a str,
    pub unionid: Option<&'a str>,
    /// Default: the config's `token_ttl`.
    pub ttl: Option<&'a str>,
}

/// The token, or a message for the user.
pub fn mint(
    conf: &Path,
    req: &Request,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Duration), String> {
    let file = config::load_file(conf).map_err(|e| e.to_string())?;
    let session = file
        .plugins
        .iter()
        .flatten()
        .find_map(|p| match &p.value {
            PluginConfig::Identity(c) if c.mode == Mode::Session => c.session.as_ref(),
            _ => None,
        })
        .ok_or_else(|| {
            let mut msg = format!(
                "{}: no `identity` plugin in `mode: session` (tokens are only used in session mode)",
                conf.display()
            );
            for e in &file.parse_errors {
                msg.push_str(&format!("\n{e}"));
            }
            msg
        })?;
    let keys = session
        .keys(env)
        .map_err(|e| format!("{}: `{}`: {}", conf.display(), "token_keys_env", e.message))?;
    let appid = match req.appid {
        Some(a) => a,
        None => session.owner().ok_or_else(|| {
            format!(
                "{}: no single app with `role: owner`; pass --appid",
                conf.display()
            )
        })?,
    };
    if !session.apps.iter().any(|a| a.appid == appid) {
        let listed: Vec<&str> = session.apps.iter().map(|a| a.appid.as_str()).collect();
        return Err(format!(
            "app `{appid}` is not in `session.apps` (the gateway would refuse its tokens); configured: {}",
            listed.join(", ")
        ));
    }
    for (what, v) in [("--openid", Some(req.openid)), ("--unionid", req.unionid)] {
        if v.is_some_and(|v| !valid_id(v)) {
            return Err(format!("{what} must be 1 to 128 visible ASCII characters"));
        }
    }
    let ttl = match req.ttl {
        Some(t) => parse_duration(t).map_err(|e| format!("--ttl: {e}"))?,
        None => session.ttl(),
    };
    if ttl.is_zero() {
        return Err("--ttl must be more than 0".into());
    }
    let token = identity::mint(&keys, appid, req.openid, req.unionid, ttl);
    Ok((token, ttl))
}
