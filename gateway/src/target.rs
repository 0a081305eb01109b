//! The request-target forms of RFC 9112 §3.2 other than origin-form, settled before any
//! plugin runs:
//! - absolute-form (`GET http://host/api/x HTTP/1.1`), which a server must accept, becomes
//!   the origin-form request it names, so routing, the prefix strip, path normalisation, the
//!   login path, CORS and the logs all see `/api/x` with `Host: host`, and the instance gets
//!   origin-form;
//! - authority-form (`CONNECT host:443`): 405, anygate is no forward proxy;
//! - asterisk-form (`OPTIONS *`): answered by the gateway (no instance owns `*`).
//!
//! Pingora's parser has already refused a target whose authority is ambiguous or carries
//! userinfo, and one whose `Host` differs from the authority (a bare 400, stricter than
//! RFC 9112's "replace Host"). So the authority either equals `Host` or stands alone (an
//! HTTP/1.0 request without `Host`); either way it becomes `Host`.

use anygate_plugins::routing::{method_not_allowed, ALLOW};
use anygate_plugins::{ErrorCode, Reply};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Method, StatusCode};
use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use pingora_http::{RequestHeader, ResponseHeader};

/// Brings the request to origin-form, or says how to answer it instead.
pub fn screen(req: &mut RequestHeader) -> Option<Reply> {
    // Origin-form, nearly every request: one byte looked at.
    if req.raw_path().first() == Some(&b'/') && req.method != Method::CONNECT {
        return None;
    }
    if req.method == Method::CONNECT {
        return Some(method_not_allowed(
            "CONNECT is not supported: anygate is not a forward proxy",
        ));
    }
    if req.raw_path() == b"*" {
        return Some(asterisk(&req.method));
    }
    to_origin_form(req)
        .err()
        .map(|m| Reply::error_with(ErrorCode::InvalidRequest, m))
}

/// `OPTIONS *` asks about the server as a whole: `200` with `Allow`. Any other method has no
/// business with `*`.
fn asterisk(method: &Method) -> Reply {
    if *method != Method::OPTIONS {
        return Reply::error_with(
            ErrorCode::InvalidRequest,
            "the target `*` is only for OPTIONS",
        );
    }
    let Ok(mut header) = ResponseHeader::build(StatusCode::OK, Some(2)) else {
        return Reply::error(ErrorCode::SysErr);
    };
    let _ = header.insert_header("Allow", HeaderValue::from_static(ALLOW));
    let _ = header.insert_header(CONTENT_LENGTH, HeaderValue::from_static("0"));
    Reply::Response {
        header: Box::new(header),
        body: Bytes::new(),
    }
}

/// Rewrites an absolute-form target to origin-form with the authority as `Host`; other
/// forms are left alone. `Err` with a message for the client when the URL cannot be served.
fn to_origin_form(req: &mut RequestHeader) -> Result<(), &'static str> {
    let raw = req.raw_path();
    let (host, origin) = match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => {
            if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
                return Err("only http and https URLs can be requested");
            }
            let host = HeaderValue::from_bytes(authority)
                .map_err(|_| "the request target's authority is not a valid host")?;
            // `http://host` and `http://host?q` name the root.
            let mut origin = Vec::with_capacity(path_and_query.len() + 1);
            if path_and_query.first() != Some(&b'/') {
                origin.push(b'/');
            }
            origin.extend_from_slice(path_and_query);
            (host, origin)
        }
        RawTargetAuthority::AmbiguousAuthority => {
            return Err("the request target's authority is ambiguous")
        }
        RawTargetAuthority::None => return Ok(()),
    };
    req.set_raw_path(&origin)
        .map_err(|_| "the request target's path is not valid")?;
    req.insert_header(HOST, host)
        .map_err(|_| "the request target's authority is not a valid host")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &[u8], host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.set_raw_path(target).unwrap();
        if let Some(h) = host {
            r.insert_header(HOST, h).unwrap();
        }
        r
    }

    fn host(r: &RequestHeader) -> Vec<&str> {
        r.headers
            .get_all(HOST)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_the_authority_as_host() {
        for (target, origin) in [
            (&b"http://a.example/api/x?q=1"[..], &b"/api/x?q=1"[..]),
            (b"HTTPS://a.example/", b"/"),
            (b"http://a.example", b"/"),
            (b"http://a.example?q", b"/?q"),
            (b"http://a.example/%61pi/../x", b"/%61pi/../x"),
        ] {
            let mut r = req(target, None);
            to_origin_form(&mut r).unwrap();
            assert_eq!(r.raw_path(), origin, "{target:?}");
            assert_eq!(host(&r), ["a.example"], "{target:?}");
        }
        // A Host equal to the authority (Pingora refuses any other) stays, once.
        let mut r = req(b"http://a.example:8080/x", Some("a.example:8080"));
        to_origin_form(&mut r).unwrap();
        assert_eq!(host(&r), ["a.example:8080"]);
        assert_eq!(r.raw_path(), b"/x");
    }

    #[test]
    fn other_forms_are_left_alone_and_odd_schemes_refused() {
        for target in [&b"/api/x"[..], b"*", b"a.example:443"] {
            let mut r = req(target, Some("h"));
            to_origin_form(&mut r).unwrap();
            assert_eq!(r.raw_path(), target);
            assert_eq!(host(&r), ["h"]);
        }
        for target in [
            &b"ftp://a.example/x"[..],
            b"ws://a.example/x",
            b"http:/\\a/x",
        ] {
            assert!(
                to_origin_form(&mut req(target, None)).is_err(),
                "{target:?}"
            );
        }
    }

    #[test]
    fn connect_and_asterisk_form_are_answered() {
        let status = |method: &str, target: &[u8]| {
            let mut r = req(target, Some("h"));
            r.set_method(Method::from_bytes(method.as_bytes()).unwrap());
            screen(&mut r).map(|reply| reply.status().as_u16())
        };
        assert_eq!(status("GET", b"/x"), None);
        assert_eq!(status("GET", b"http://h/x"), None);
        assert_eq!(status("CONNECT", b"h:443"), Some(405));
        assert_eq!(status("CONNECT", b"/x"), Some(405));
        assert_eq!(status("OPTIONS", b"*"), Some(200));
        assert_eq!(status("GET", b"*"), Some(400));
        assert_eq!(status("GET", b"ftp://h/x"), Some(400));
    }
}
