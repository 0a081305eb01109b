//! `anygate wechat-stub`: a stand-in for WeChat's `jscode2session` on loopback, so the login
//! flow of the `identity` plugin (`POST /.anygate/login`) can be tried without WeChat.
//!
//! A code `test:OPENID` (or `test:OPENID:UNIONID`) logs in as that user; any other code gets
//! WeChat's `errcode 40029` (invalid code). Any app id and secret are accepted.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

pub struct WechatStub;

/// The path WeChat serves it on (any other path is a 404).
pub const PATH: &str = "/sns/jscode2session";

/// What WeChat would answer for this query string.
pub fn answer(query: &str) -> Value {
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
        })
    };
    let (Some(appid), Some(_secret), Some(code)) =
        (param("appid"), param("secret"), param("js_code"))
    else {
        return json!({"errcode": 41002, "errmsg": "appid, secret or js_code missing (stand-in)"});
    };
    if appid.is_empty() {
        return json!({"errcode": 41002, "errmsg": "appid missing (stand-in)"});
    }
    let mut parts = code.strip_prefix("test:").unwrap_or_default().split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(openid), unionid, None) if !openid.is_empty() => {
            let mut v = json!({
                "openid": openid,
                "session_key": "stand-in-session-key",
            });
            if let Some(u) = unionid.filter(|u| !u.is_empty()) {
                v["unionid"] = json!(u);
            }
            v
        }
        _ => json!({"errcode": 40029, "errmsg": "invalid code (stand-in: use test:OPENID)"}),
    }
}

#[async_trait]
impl ServeHttp for WechatStub {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, body) = if req.uri.path() == PATH {
            let query = req.uri.query().unwrap_or("");
            let who = answer(query);
            match who.get("openid") {
                Some(openid) => log::info!("wechat-stub: logged in as {openid}"),
                None => log::info!("wechat-stub: refused: {}", who["errmsg"]),
            }
            (StatusCode::OK, who)
        } else {
            (
                StatusCode::NOT_FOUND,
                json!({"errcode": -1, "errmsg": "not found"}),
            )
        };
        let body = body.to_string().into_bytes();
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::answer;

    #[test]
    fn test_codes_log_in_and_others_are_refused() {
        let q = "appid=wx1&secret=s&js_code=test%3AoAlice&grant_type=authorization_code";
        assert_eq!(answer(q)["openid"], "oAlice");
        assert!(answer(q).get("unionid").is_none());
        let q = "appid=wx1&secret=s&js_code=test:oAlice:oUnion&grant_type=authorization_code";
        assert_eq!(answer(q)["unionid"], "oUnion");
        for code in ["good", "test:", "test:a:b:c", ""] {
            let q = format!("appid=wx1&secret=s&js_code={code}");
            assert_eq!(answer(&q)["errcode"], 40029, "{code}");
        }
        assert_eq!(answer("js_code=test:a")["errcode"], 41002);
    }
}
