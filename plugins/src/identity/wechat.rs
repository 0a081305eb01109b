//! The code exchange with WeChat (`jscode2session`): one HTTP(S) GET through Pingora's own
//! client connector, bounded in time and size. The session key in the answer is never read
//! into memory we keep: the answer type has no field for it.

use super::token::valid_id;
use bytes::BytesMut;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http::Uri;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

/// WeChat's endpoint, used when `code2session_url` is not set.
pub const DEFAULT_URL: &str = "https://api.weixin.qq.com/sns/jscode2session";
/// Largest answer read; WeChat's are a few hundred bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// Interim (1xx) responses skipped before giving up.
const MAX_INTERIM: usize = 4;
/// Query values: everything but unreserved characters is escaped.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where to send the exchange, read from `code2session_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// The path and any query of the URL, then `?` or `&`, ready for our parameters.
    target_prefix: String,
    /// The `Host` header.
    authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("`{url}` {why} (write e.g. {DEFAULT_URL})");
        let uri: Uri = url.trim().parse().map_err(|_| bad("is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must start with https:// or http://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("may not carry credentials"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut target_prefix = uri.path().to_string();
        match uri.query() {
            Some(q) if !q.is_empty() => {
                target_prefix.push('?');
                target_prefix.push_str(q);
                target_prefix.push('&');
            }
            _ => target_prefix.push('?'),
        }
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
            target_prefix,
            authority: authority.as_str().to_string(),
        })
    }
}

/// A successful exchange: who the user is in that app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WxUser {
    pub openid: String,
    pub unionid: Option<String>,
}

/// Why an exchange failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// WeChat refused the code or the user (401).
    Rejected { errcode: i64, errmsg: String },
    /// WeChat refused our app id or secret: the gateway's configuration is wrong (502).
    Misconfigured { errcode: i64, errmsg: String },
    /// WeChat is busy, rate-limiting, unreachable, slow, or answered something unreadable (502).
    Unavailable(String),
}

/// The answer's fields we use. `session_key` is deliberately absent, so it is dropped unread.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    unionid: Option<String>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

/// Reads a jscode2session answer.
pub fn interpret(status: u16, body: &[u8]) -> Result<WxUser, Failure> {
    if status != 200 {
        return Err(Failure::Unavailable(format!("HTTP status {status}")));
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|_| Failure::Unavailable("the answer is not the expected JSON".into()))?;
    let errmsg = || a.errmsg.clone().unwrap_or_default();
    match a.errcode {
        None | Some(0) => {}
        // Invalid code, code already used, code missing, user blocked as high-risk.
        Some(errcode @ (40029 | 40163 | 41008 | 40226)) => {
            return Err(Failure::Rejected {
                errcode,
                errmsg: errmsg(),
            })
        }
        // Invalid credential, app id or secret; app id or secret missing.
        Some(errcode @ (40001 | 40013 | 40125 | 41002 | 41004)) => {
            return Err(Failure::Misconfigured {
                errcode,
                errmsg: errmsg(),
            })
        }
        // -1 busy, 45011 rate limit, and anything new.
        Some(errcode) => {
            return Err(Failure::Unavailable(format!(
                "errcode {errcode}: {}",
                errmsg()
            )))
        }
    }
    let openid = a
        .openid
        .filter(|o| valid_id(o))
        .ok_or_else(|| Failure::Unavailable("the answer has no usable openid".into()))?;
    let unionid = match a.unionid {
        None => None,
        Some(u) if u.is_empty() => None,
        Some(u) if valid_id(&u) => Some(u),
        Some(_) => {
            return Err(Failure::Unavailable(
                "the answer's unionid is unusable".into(),
            ))
        }
    };
    Ok(WxUser { openid, unionid })
}

/// The client for one configured endpoint.
pub struct Code2Session {
    endpoint: Endpoint,
    timeout: Duration,
    /// Made on first use, so that `anygate check` and reloads do not build TLS contexts.
    connector: OnceLock<Connector>,
}

impl Code2Session {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Code2Session {
        Code2Session {
            endpoint,
            timeout,
            connector: OnceLock::new(),
        }
    }

    /// Exchanges `code` for the user's identity in `appid`, within the configured timeout.
    pub async fn exchange(&self, appid: &str, secret: &str, code: &str) -> Result<WxUser, Failure> {
        match tokio::time::timeout(self.timeout, self.call(appid, secret, code)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn resolve(&self) -> Result<SocketAddr, Failure> {
        let e = &self.endpoint;
        if let Ok(ip) = e.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, e.port));
        }
        let mut addrs = tokio::net::lookup_host((e.host.as_str(), e.port))
            .await
            .map_err(|err| Failure::Unavailable(format!("cannot resolve {}: {err}", e.host)))?;
        addrs
            .next()
            .ok_or_else(|| Failure::Unavailable(format!("{} resolves to nothing", e.host)))
    }

    async fn call(&self, appid: &str, secret: &str, code: &str) -> Result<WxUser, Failure> {
        let down = |what: &str, err: Box<pingora_error::Error>| {
            Failure::Unavailable(format!("{what}: {err}"))
        };
        let e = &self.endpoint;
        let addr = self.resolve().await?;
        let mut peer = HttpPeer::new(addr, e.tls, e.host.clone());
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        let connector = self.connector.get_or_init(|| Connector::new(None));
        // A fresh connection each time (logins are rare): a pooled one that the server closed
        // meanwhile would fail a good login.
        let (mut http, _) = connector
            .get_http_session(&peer)
            .await
            .map_err(|err| down("cannot connect", err))?;

        let mut target = String::with_capacity(e.target_prefix.len() + 160);
        target.push_str(&e.target_prefix);
        for (i, (k, v)) in [
            ("appid", appid),
            ("secret", secret),
            ("js_code", code),
            ("grant_type", "authorization_code"),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                target.push('&');
            }
            target.push_str(k);
            target.push('=');
            target.extend(utf8_percent_encode(v, QUERY));
        }
        let mut req = RequestHeader::build("GET", target.as_bytes(), Some(3))
            .map_err(|err| down("cannot build the request", err))?;
        let headers = [
            (HOST, e.authority.as_str()),
            (ACCEPT, "application/json"),
            (USER_AGENT, concat!("anygate/", env!("CARGO_PKG_VERSION"))),
        ];
        for (name, value) in headers {
            req.insert_header(name, value)
                .map_err(|err| down("cannot build the request", err))?;
        }
        http.write_request_header(Box::new(req))
            .await
            .map_err(|err| down("cannot send the request", err))?;

        let mut status = 0;
        for _ in 0..MAX_INTERIM {
            http.read_response()
                .await
                .map_err(|err| down("no readable answer", err))?;
            status = http.get_status().map_or(0, |s| s.as_u16());
            if !(100..200).contains(&status) {
                break;
            }
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = http
            .read_body_ref()
            .await
            .map_err(|err| down("the answer broke off", err))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Failure::Unavailable("the answer is too large".into()));
            }
            body.extend_from_slice(chunk);
        }
        interpret(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse(DEFAULT_URL).unwrap();
        assert_eq!(
            e,
            Endpoint {
                tls: true,
                host: "api.weixin.qq.com".into(),
                port: 443,
                target_prefix: "/sns/jscode2session?".into(),
                authority: "api.weixin.qq.com".into(),
            }
        );
        let e = Endpoint::parse("http://127.0.0.1:8099/x?region=cn").unwrap();
        assert_eq!((e.tls, e.port), (false, 8099));
        assert_eq!(e.target_prefix, "/x?region=cn&");
        assert_eq!(e.authority, "127.0.0.1:8099");
        let e = Endpoint::parse("http://[::1]:81").unwrap();
        assert_eq!((e.host.as_str(), e.target_prefix.as_str()), ("::1", "/?"));
        for bad in [
            "",
            "api.weixin.qq.com/sns",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https:///path",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers() {
        let ok = br#"{"openid":"oABC","session_key":"SECRET","unionid":"oU"}"#;
        assert_eq!(
            interpret(200, ok),
            Ok(WxUser {
                openid: "oABC".into(),
                unionid: Some("oU".into())
            })
        );
        let ok = br#"{"openid":"oABC","session_key":"SECRET","errcode":0,"errmsg":"ok"}"#;
        assert_eq!(interpret(200, ok).map(|u| u.unionid), Ok(None));
        let rejected = |b: &[u8]| matches!(interpret(200, b), Err(Failure::Rejected { .. }));
        let misconfigured =
            |b: &[u8]| matches!(interpret(200, b), Err(Failure::Misconfigured { .. }));
        let unavailable =
            |s: u16, b: &[u8]| matches!(interpret(s, b), Err(Failure::Unavailable(_)));
        assert!(rejected(br#"{"errcode":40029,"errmsg":"invalid code"}"#));
        assert!(rejected(br#"{"errcode":40163,"errmsg":"code been used"}"#));
        assert!(rejected(br#"{"errcode":40226,"errmsg":"high risk user"}"#));
        assert!(misconfigured(
            br#"{"errcode":40125,"errmsg":"invalid appsecret"}"#
        ));
        assert!(misconfigured(
            br#"{"errcode":40013,"errmsg":"invalid appid"}"#
        ));
        assert!(unavailable(
            200,
            br#"{"errcode":-1,"errmsg":"system error"}"#
        ));
        assert!(unavailable(
            200,
            br#"{"errcode":45011,"errmsg":"api minute-quota reach limit"}"#
        ));
        assert!(unavailable(200, br#"{"errcode":99999}"#));
        assert!(unavailable(200, b"<html>busy</html>"));
        assert!(unavailable(200, b""));
        assert!(unavailable(200, br#"{"session_key":"SECRET"}"#));
        assert!(unavailable(200, br#"{"openid":""}"#));
        assert!(unavailable(200, br#"{"openid":"o\r\nX: y"}"#));
        assert!(unavailable(200, br#"{"openid":"oA","unionid":"u u"}"#));
        assert!(unavailable(500, br#"{"openid":"oABC"}"#));
    }

    #[test]
    fn failures_never_mention_the_session_key() {
        for body in [
            &br#"{"openid":"","session_key":"SECRETKEY"}"#[..],
            br#"{"errcode":-1,"session_key":"SECRETKEY"}"#,
            br#"{"errcode":40029,"session_key":"SECRETKEY"}"#,
        ] {
            let e = interpret(200, body).unwrap_err();
            assert!(!format!("{e:?}").contains("SECRETKEY"), "{e:?}");
        }
    }
}
