//! `POST /.anygate/login` with `{"appid": "...", "code": "<wx.login code>"}`: exchanges the
//! code with WeChat and answers `{"token": "...", "expiresIn": SECONDS, "openid": "..."}`.

use super::token::{valid_id, Claims};
use super::wechat::Failure;
use super::SessionMode;
use crate::ctx::Ctx;
use crate::error::ErrorCode;
use crate::log_limit::{self, Admit};
use crate::plugin::Reply;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use log::{debug, error, warn, Level};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const LOGIN_PATH: &str = "/.anygate/login";
/// Largest login body read; a real one is under 100 bytes.
pub const MAX_LOGIN_BODY: usize = 16 * 1024;
/// How long the client has to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `code` accepted (wx.login codes are 32 characters).
const MAX_CODE_LEN: usize = 256;

/// A login body, checked: `appid` a valid id, `code` 1 to 256 visible ASCII characters.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct LoginRequest {
    pub appid: String,
    pub code: String,
}

#[derive(serde::Serialize)]
struct LoginAnswer<'a> {
    token: &'a str,
    #[serde(rename = "expiresIn")]
    expires_in: u64,
    openid: &'a str,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bad(message: &'static str) -> Reply {
    Reply::error_with(ErrorCode::InvalidRequest, message)
}

/// Reads the whole body, at most [`MAX_LOGIN_BODY`] bytes, within [`BODY_TIMEOUT`].
async fn read_body(session: &mut Session) -> Result<Vec<u8>, Reply> {
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_LOGIN_BODY as u64) {
        return Err(Reply::error_with(
            ErrorCode::ExceedMaxPayloadSize,
            "the login body is limited to 16KB",
        ));
    }
    let read = async {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_LOGIN_BODY {
                        return Err(Reply::error_with(
                            ErrorCode::ExceedMaxPayloadSize,
                            "the login body is limited to 16KB",
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(_) => return Err(bad("could not read the login body")),
            }
        }
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(bad("the login body did not arrive in time")),
    }
}

/// Reads a login body (bytes from the client, anything at all) into a checked request.
pub fn parse_body(body: &[u8]) -> Result<LoginRequest, Reply> {
    let Ok(req) = serde_json::from_slice::<LoginRequest>(body) else {
        return Err(bad(
            r#"the login body must be JSON {"appid": "...", "code": "<wx.login code>"}"#,
        ));
    };
    if !valid_id(&req.appid) {
        return Err(bad("`appid` is not an app id"));
    }
    if req.code.is_empty()
        || req.code.len() > MAX_CODE_LEN
        || !req.code.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad("`code` must be the code from wx.login"));
    }
    Ok(req)
}

/// Answers a request to [`LOGIN_PATH`].
pub async fn handle(mode: &SessionMode, session: &mut Session, ctx: &mut Ctx) -> Reply {
    if session.req_header().method != Method::POST {
        return bad("use POST for /.anygate/login")
            .with_header("Allow", HeaderValue::from_static("POST"));
    }
    let body = match read_body(session).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let req = match parse_body(&body) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let Some(app) = mode.app(&req.appid) else {
        return Reply::error_with(
            ErrorCode::AccessDenied,
            "this app may not log in to this gateway",
        );
    };
    let rid = ctx.request_id_str().to_string();
    let user = match mode
        .wechat
        .exchange(&app.appid, &app.secret, &req.code)
        .await
    {
        Ok(u) => u,
        Err(Failure::Rejected { errcode, errmsg }) => {
            debug!(
                "[{rid}] login for app {}: WeChat refused the code (errcode {errcode}: {errmsg})",
                app.appid
            );
            return Reply::error_with(
                ErrorCode::Unauthenticated,
                "WeChat did not accept the login code",
            );
        }
        Err(Failure::Misconfigured { errcode, errmsg }) => {
            let key = log_limit::key(&[b"login-misconfigured", app.appid.as_bytes()]);
            let label = || {
                (
                    Level::Error,
                    "anygate_plugins::identity::login",
                    format!("WeChat refused app {}", app.appid),
                )
            };
            if let Admit::Write(more) = log_limit::admit(key, label) {
                error!(
                    "[{rid}] login for app {}: WeChat refused the app id or secret (errcode {errcode}: {errmsg}); check the variable named by its `secret_env`{more}",
                    app.appid
                );
            }
            return Reply::error_with(
                ErrorCode::RequestServiceFailed,
                "the login service refused the gateway",
            );
        }
        Err(Failure::Unavailable(why)) => {
            let key = log_limit::key(&[b"login-unavailable", app.appid.as_bytes()]);
            let label = || {
                (
                    Level::Warn,
                    "anygate_plugins::identity::login",
                    format!("code2session failed for app {}", app.appid),
                )
            };
            if let Admit::Write(more) = log_limit::admit(key, label) {
                warn!(
                    "[{rid}] login for app {}: code2session failed: {why}{more}",
                    app.appid
                );
            }
            return Reply::error_with(
                ErrorCode::RequestServiceFailed,
                "the login service is unavailable",
            );
        }
    };
    let now = unix_now();
    let claims = Claims {
        appid: app.appid.clone(),
        openid: user.openid,
        unionid: user.unionid,
        iat: now,
        exp: now.saturating_add(mode.ttl.as_secs()),
    };
    let token = mode.keys.sign(&claims);
    let answer = LoginAnswer {
        token: &token,
        expires_in: mode.ttl.as_secs(),
        openid: &claims.openid,
    };
    json_response(serde_json::to_vec(&answer).unwrap_or_default())
}

fn json_response(body: Vec<u8>) -> Reply {
    let body = Bytes::from(body);
    let mut header = match ResponseHeader::build(StatusCode::OK, Some(3)) {
        Ok(h) => h,
        Err(_) => return Reply::error(ErrorCode::SysErr),
    };
    let set = [
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (CONTENT_LENGTH, HeaderValue::from(body.len())),
        // A token must not sit in a shared cache.
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    for (name, value) in set {
        if header.insert_header(name, value).is_err() {
            return Reply::error(ErrorCode::SysErr);
        }
    }
    Reply::Response {
        header: Box::new(header),
        body,
    }
}
