//! Who may use `/metrics` and `/api/*` (SPEC §12): with `admin.token_env`, callers send
//! `Authorization: Bearer <token>` (compared in constant time). Browsers are kept from using
//! the API on another site's behalf: a request whose `Origin` is not the admin listener itself
//! is refused, and without a token only `localhost` or an IP address may be the `Host` (a DNS
//! rebinding page would send its own name).

use super::settings::AdminSettings;
use super::Answer;
use anygate_plugins::ErrorCode;
use http::header::{AUTHORIZATION, HOST, ORIGIN};
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// The token in an `Authorization: Bearer <token>` header.
fn bearer(req: &RequestHeader) -> Option<&[u8]> {
    let v = req.headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

fn host(req: &RequestHeader) -> Option<&str> {
    match req.uri.authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers.get(HOST)?.to_str().ok(),
    }
}

/// `localhost`, `127.0.0.1:9091`, `[::1]:9091`: names a page on another site cannot take.
fn local_name(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// `Ok` when the request may go on, else the answer that refuses it.
pub fn check(req: &RequestHeader, settings: &AdminSettings) -> Result<(), Answer> {
    let host = host(req).unwrap_or("");
    if let Some(origin) = req.headers.get(ORIGIN) {
        let origin = origin.as_bytes();
        let same = [&b"http://"[..], b"https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(*scheme) == Some(host.as_bytes()));
        if !same {
            return Err(Answer::error(
                ErrorCode::AccessDenied,
                "the admin API answers pages served by the admin listener itself, not other sites",
            ));
        }
    }
    let Some(token) = &settings.token else {
        if local_name(host) {
            return Ok(());
        }
        return Err(Answer::error(
            ErrorCode::AccessDenied,
            "without admin.token_env the admin API answers only requests to localhost or an IP address",
        ));
    };
    match bearer(req) {
        Some(candidate) if token.matches(candidate) => Ok(()),
        given => {
            let message = if given.is_some() {
                "the admin token is not valid"
            } else {
                "the admin API needs `Authorization: Bearer <token>` (the token is in the environment variable named by admin.token_env)"
            };
            Err(Answer::error(ErrorCode::Unauthenticated, message)
                .with_header("WWW-Authenticate", "Bearer realm=\"anygate admin\""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::settings::Token;
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/api/v1/status", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn with_token() -> AdminSettings {
        AdminSettings {
            token: Some(Token::new("s3cret-s3cret-s3cret")),
            ..AdminSettings::default()
        }
    }

    fn code(r: Result<(), Answer>) -> Option<String> {
        r.err().map(|a| {
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            v["code"].as_str().unwrap().to_string()
        })
    }

    #[test]
    fn bearer_tokens() {
        let s = with_token();
        let host = ("Host", "gw.internal:9091");
        assert_eq!(
            code(check(&req(&[host]), &s)).as_deref(),
            Some("UNAUTHENTICATED")
        );
        let good = ("Authorization", "Bearer s3cret-s3cret-s3cret");
        assert_eq!(code(check(&req(&[host, good]), &s)), None);
        let lower = ("Authorization", "bearer   s3cret-s3cret-s3cret ");
        assert_eq!(code(check(&req(&[host, lower]), &s)), None);
        let bad = ("Authorization", "Bearer s3cret");
        assert_eq!(
            code(check(&req(&[host, bad]), &s)).as_deref(),
            Some("UNAUTHENTICATED")
        );
        let basic = ("Authorization", "Basic czNjcmV0");
        assert_eq!(
            code(check(&req(&[host, basic]), &s)).as_deref(),
            Some("UNAUTHENTICATED")
        );
    }

    #[test]
    fn other_sites_are_refused() {
        let open = AdminSettings::default();
        let local = ("Host", "127.0.0.1:9091");
        assert_eq!(code(check(&req(&[local]), &open)), None);
        assert_eq!(
            code(check(&req(&[("Host", "localhost:9091")]), &open)),
            None
        );
        assert_eq!(code(check(&req(&[("Host", "[::1]:9091")]), &open)), None);
        let rebound = ("Host", "evil.example:9091");
        assert_eq!(
            code(check(&req(&[rebound]), &open)).as_deref(),
            Some("ACCESS_DENIED")
        );
        let same = ("Origin", "http://127.0.0.1:9091");
        assert_eq!(code(check(&req(&[local, same]), &open)), None);
        let other = ("Origin", "https://evil.example");
        assert_eq!(
            code(check(&req(&[local, other]), &open)).as_deref(),
            Some("ACCESS_DENIED")
        );
    }
}
