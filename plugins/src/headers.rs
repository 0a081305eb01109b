//! Header names anygate reads or writes, built once.

use http::header::HeaderName;

pub const X_WX_SERVICE: HeaderName = HeaderName::from_static("x-wx-service");
pub const X_VM_SERVICE: HeaderName = HeaderName::from_static("x-vm-service");
pub const X_ANYSERVICE_NAME: HeaderName = HeaderName::from_static("x-anyservice-name");
pub const X_ANYSERVICE_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-anyservice-authorization");

pub const X_WX_OPENID: HeaderName = HeaderName::from_static("x-wx-openid");
pub const X_WX_APPID: HeaderName = HeaderName::from_static("x-wx-appid");
pub const X_WX_UNIONID: HeaderName = HeaderName::from_static("x-wx-unionid");
pub const X_WX_ENV: HeaderName = HeaderName::from_static("x-wx-env");
pub const X_WX_SOURCE: HeaderName = HeaderName::from_static("x-wx-source");
pub const X_WX_PLATFORM: HeaderName = HeaderName::from_static("x-wx-platform");
pub const X_WX_FROM_OPENID: HeaderName = HeaderName::from_static("x-wx-from-openid");
pub const X_WX_FROM_APPID: HeaderName = HeaderName::from_static("x-wx-from-appid");
pub const X_WX_FROM_UNIONID: HeaderName = HeaderName::from_static("x-wx-from-unionid");

pub const X_CLOUDBASE_REQUEST_ID: HeaderName = HeaderName::from_static("x-cloudbase-request-id");
pub const X_CLOUDBASE_UPSTREAM_STATUS_CODE: HeaderName =
    HeaderName::from_static("x-cloudbase-upstream-status-code");
pub const X_CLOUDBASE_UPSTREAM_TIMECOST: HeaderName =
    HeaderName::from_static("x-cloudbase-upstream-timecost");
pub const X_CLOUDBASE_UPSTREAM_TYPE: HeaderName =
    HeaderName::from_static("x-cloudbase-upstream-type");

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Names as written on the wire (header names are case-insensitive, but tools grep for these).
pub mod wire {
    pub const X_CLOUDBASE_REQUEST_ID: &str = "X-Cloudbase-Request-Id";
    pub const X_CLOUDBASE_UPSTREAM_STATUS_CODE: &str = "X-Cloudbase-Upstream-Status-Code";
    pub const X_CLOUDBASE_UPSTREAM_TIMECOST: &str = "X-Cloudbase-Upstream-Timecost";
    pub const X_CLOUDBASE_UPSTREAM_TYPE: &str = "X-Cloudbase-Upstream-Type";
    pub const X_FORWARDED_FOR: &str = "X-Forwarded-For";
    pub const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
    pub const X_FORWARDED_HOST: &str = "X-Forwarded-Host";
    pub const X_REAL_IP: &str = "X-Real-IP";
    pub const X_WX_OPENID: &str = "X-WX-OPENID";
    pub const X_WX_APPID: &str = "X-WX-APPID";
    pub const X_WX_UNIONID: &str = "X-WX-UNIONID";
    pub const X_WX_ENV: &str = "X-WX-ENV";
    pub const X_WX_SOURCE: &str = "X-WX-SOURCE";
    pub const X_WX_PLATFORM: &str = "X-WX-PLATFORM";
    pub const X_WX_FROM_OPENID: &str = "X-WX-FROM-OPENID";
    pub const X_WX_FROM_APPID: &str = "X-WX-FROM-APPID";
    pub const X_WX_FROM_UNIONID: &str = "X-WX-FROM-UNIONID";
    pub const X_ANYSERVICE_AUTHORIZATION: &str = "X-AnyService-Authorization";
}

/// Lower-cases `name` and reads `_` as `-`, the way a backend framework (CGI, WSGI, nginx with
/// `underscores_in_headers`) may read it, so that `X_WX_OPENID` is recognised as `x-wx-openid`.
fn canonical_eq_prefix(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

fn canonical_eq(name: &str, other: &str) -> bool {
    name.len() == other.len() && canonical_eq_prefix(name, other)
}

/// Whether a request header is one anygate owns (SPEC §5): `x-wx-*`, `x-cloudbase-*`,
/// `x-original-forwarded-for`, `x-anyservice-authorization`, in any case, `-` or `_`.
pub fn is_owned(name: &str) -> bool {
    canonical_eq_prefix(name, "x-wx-")
        || canonical_eq_prefix(name, "x-cloudbase-")
        || canonical_eq(name, "x-original-forwarded-for")
        || canonical_eq(name, "x-anyservice-authorization")
}

/// Whether a header is an `x-wx-*` identity header (kept from trusted fronts).
pub fn is_wx(name: &str) -> bool {
    canonical_eq_prefix(name, "x-wx-")
}

/// Whether a response header is a `x-cloudbase-*` one, which only anygate may set.
pub fn is_cloudbase(name: &str) -> bool {
    canonical_eq_prefix(name, "x-cloudbase-")
}

/// Whether a request header carries forwarding information (SPEC §6): `x-forwarded-*`,
/// `forwarded`, `x-real-ip`, in any case, `-` or `_`.
pub fn is_forwarding(name: &str) -> bool {
    canonical_eq_prefix(name, "x-forwarded-")
        || canonical_eq(name, "forwarded")
        || canonical_eq(name, "x-real-ip")
}

/// Removes every request header whose name matches `doomed` (the case map included).
pub fn remove_request_headers(
    req: &mut pingora_http::RequestHeader,
    mut doomed: impl FnMut(&HeaderName) -> bool,
) {
    let names: Vec<HeaderName> = req.headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in &names {
        req.remove_header(name);
    }
}

/// Removes every response header whose name matches `doomed` (the case map included).
pub fn remove_response_headers(
    resp: &mut pingora_http::ResponseHeader,
    doomed: impl Fn(&HeaderName) -> bool,
) {
    let names: Vec<HeaderName> = resp.headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in &names {
        resp.remove_header(name);
    }
}

/// Whether `name` is written with `_` where `-` is meant (e.g. `x_forwarded_for`).
pub fn has_underscore(name: &str) -> bool {
    name.as_bytes().contains(&b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `insert_header_static` inserts into the value map and the case map in step, hashing the
    /// name once (`vendor/http`, `try_insert_in_step`): the wire form must list every header
    /// once, in its case, a replaced one under its new value, through growth of both maps.
    #[test]
    fn static_inserts_keep_both_header_maps_in_step() {
        use pingora_http::RequestHeader;
        for client_headers in [0usize, 3, 40] {
            let mut down = RequestHeader::build("GET", b"/", None).unwrap();
            down.insert_header("X-Forwarded-For", "203.0.113.9")
                .unwrap();
            for i in 0..client_headers {
                down.append_header(format!("X-Client-{i}"), "v").unwrap();
            }
            let mut up = down.clone();
            up.insert_header_static(
                X_FORWARDED_FOR,
                wire::X_FORWARDED_FOR,
                "127.0.0.1".parse().unwrap(),
            );
            up.insert_header_static(X_REAL_IP, wire::X_REAL_IP, "127.0.0.1".parse().unwrap());
            up.insert_header_static(X_WX_OPENID, wire::X_WX_OPENID, "o1".parse().unwrap());
            up.insert_header_static(X_WX_OPENID, wire::X_WX_OPENID, "o2".parse().unwrap());
            let mut wire_form = Vec::new();
            up.header_to_h1_wire(&mut wire_form);
            let lines = wire_lines(&wire_form);
            let has = |l: &str| lines.iter().any(|x| x == l);
            assert_eq!(lines.len(), 3 + client_headers, "{lines:?}");
            assert!(has("X-Forwarded-For: 127.0.0.1"), "{lines:?}");
            assert!(has("X-Real-IP: 127.0.0.1"), "{lines:?}");
            assert!(has("X-WX-OPENID: o2"), "{lines:?}");
            for i in 0..client_headers {
                assert!(has(&format!("X-Client-{i}: v")), "{lines:?}");
            }
        }
        // Without a case map, the value map alone takes the insert.
        let mut up = RequestHeader::build_no_case("GET", b"/", None).unwrap();
        up.insert_header_static(X_WX_OPENID, wire::X_WX_OPENID, "o1".parse().unwrap());
        assert_eq!(up.headers.get(X_WX_OPENID).unwrap(), "o1");
    }

    fn wire_lines(wire_form: &[u8]) -> Vec<String> {
        String::from_utf8(wire_form.to_vec())
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// `append_absent_static` (`vendor/pingora-http`) keeps the chain's fields beside the header
    /// maps: they must reach the wire after the client's, in their case, and every way out of
    /// the header must carry them (HTTP/1 wire, HTTP/2 parts, conversion, clone).
    #[test]
    fn added_fields_reach_every_form_of_the_header() {
        use pingora_http::{RequestHeader, ResponseHeader};
        let mut up = RequestHeader::build("GET", b"/", None).unwrap();
        up.append_header("x-client", "v").unwrap();
        up.append_absent_static(
            X_FORWARDED_FOR,
            wire::X_FORWARDED_FOR,
            "127.0.0.1".parse().unwrap(),
        );
        up.append_absent_static(X_WX_OPENID, wire::X_WX_OPENID, "o1".parse().unwrap());
        // Not in the maps until written.
        assert!(up.headers.get(X_WX_OPENID).is_none());
        assert_eq!(
            up.added_headers()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect::<Vec<_>>(),
            [("x-forwarded-for", "127.0.0.1"), ("x-wx-openid", "o1")]
        );
        let mut wire_form = Vec::new();
        up.header_to_h1_wire(&mut wire_form);
        assert_eq!(
            wire_lines(&wire_form),
            [
                "x-client: v",
                "X-Forwarded-For: 127.0.0.1",
                "X-WX-OPENID: o1"
            ]
        );
        // HTTP/2 and conversions take the parts: the fields are in their map.
        let parts = up.as_owned_parts();
        assert_eq!(parts.headers.get(X_WX_OPENID).unwrap(), "o1");
        assert_eq!(parts.headers.get(X_FORWARDED_FOR).unwrap(), "127.0.0.1");
        assert_eq!(parts.headers.len(), 3);
        let cloned = up.clone();
        let mut cloned_wire = Vec::new();
        cloned.header_to_h1_wire(&mut cloned_wire);
        assert_eq!(cloned_wire, wire_form);
        let into: http::request::Parts = cloned.into();
        assert_eq!(into.headers.get(X_WX_OPENID).unwrap(), "o1");

        // A later insert of the same name replaces the added field; a removal removes it.
        up.insert_header("x-wx-openid", "o2").unwrap();
        up.insert_header_static(
            X_FORWARDED_FOR,
            wire::X_FORWARDED_FOR,
            "10.0.0.1".parse().unwrap(),
        );
        assert_eq!(up.added_headers().count(), 0);
        let mut wire_form = Vec::new();
        up.header_to_h1_wire(&mut wire_form);
        assert_eq!(
            wire_lines(&wire_form),
            [
                "x-client: v",
                "x-wx-openid: o2",
                "X-Forwarded-For: 10.0.0.1"
            ]
        );
        up.append_absent_static(X_REAL_IP, wire::X_REAL_IP, "127.0.0.1".parse().unwrap());
        assert_eq!(up.remove_header("X-Real-Ip").unwrap(), "127.0.0.1");
        assert!(up.remove_header(&X_REAL_IP).is_none());
        assert_eq!(up.added_headers().count(), 0);

        // The response side, with and without a case map.
        for mut resp in [
            ResponseHeader::build(200, None).unwrap(),
            ResponseHeader::build_no_case(200, None).unwrap(),
        ] {
            resp.insert_header("Content-Length", "0").unwrap();
            resp.append_absent_static(
                X_CLOUDBASE_REQUEST_ID,
                wire::X_CLOUDBASE_REQUEST_ID,
                "r1".parse().unwrap(),
            );
            let mut wire_form = Vec::new();
            resp.header_to_h1_wire(&mut wire_form);
            assert_eq!(
                wire_lines(&wire_form),
                ["Content-Length: 0", "X-Cloudbase-Request-Id: r1"]
            );
            assert_eq!(
                resp.as_owned_parts()
                    .headers
                    .get(X_CLOUDBASE_REQUEST_ID)
                    .unwrap(),
                "r1"
            );
            let copy = resp.clone_without_case();
            assert_eq!(copy.added_headers().count(), 1);
            let boxed: Box<http::response::Parts> = Box::new(resp).into();
            assert_eq!(boxed.headers.get(X_CLOUDBASE_REQUEST_ID).unwrap(), "r1");
        }
    }

    /// Adding a name that is already there is the caller's mistake, caught in debug builds
    /// (which the tests run): a release build would send the field twice.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "already in the header")]
    fn adding_a_present_name_is_caught() {
        let mut up = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
        up.insert_header("X-Real-IP", "10.0.0.1").unwrap();
        up.append_absent_static(X_REAL_IP, wire::X_REAL_IP, "127.0.0.1".parse().unwrap());
    }

    #[test]
    fn owned_headers_in_every_spelling() {
        for n in [
            "x-wx-openid",
            "X-WX-OPENID",
            "X_WX_OPENID",
            "x-wx_openid",
            "x_Wx-Appid",
            "x-wx-service",
            "x-cloudbase-request-id",
            "X_CLOUDBASE_UPSTREAM_TYPE",
            "x-original-forwarded-for",
            "X_Original_Forwarded_For",
            "x-anyservice-authorization",
            "X_ANYSERVICE_AUTHORIZATION",
        ] {
            assert!(is_owned(n), "{n} should be owned");
        }
        for n in [
            "x-wx",
            "x-wxopenid",
            "x-vm-service",
            "x-anyservice-name",
            "x-original-forwarded-for-x",
            "authorization",
            "x-cloudbase",
        ] {
            assert!(!is_owned(n), "{n} should not be owned");
        }
    }

    #[test]
    fn forwarding_headers_in_every_spelling() {
        for n in [
            "x-forwarded-for",
            "X_Forwarded_Proto",
            "Forwarded",
            "x_real_ip",
            "X-Real-IP",
        ] {
            assert!(is_forwarding(n), "{n}");
        }
        for n in ["x-forwarded", "forwarded-for", "x-real-ipv6"] {
            assert!(!is_forwarding(n), "{n}");
        }
    }

    /// `set_origin_path` (`vendor/pingora-http`) hands the routing plugin's target to the `Uri`
    /// without a copy: whatever it is given, the header must end as `set_raw_path` leaves it.
    #[test]
    fn origin_path_from_bytes_is_set_raw_path() {
        use pingora_http::RequestHeader;
        let targets: [&[u8]; 14] = [
            b"/",
            b"/a/b?x=1&y=%20",
            b"/a?",
            b"/a#frag",
            b"/a?x=1#frag?y",
            b"/#",
            b"/caf\xc3\xa9?q=\xc3\xa9",
            b"/\xff?x",
            b"/a b",
            b"/a\"b",
            b"*",
            b"?q",
            b"http://h.example/p?q",
            b"",
        ];
        for target in targets {
            let mut by_bytes = RequestHeader::build("GET", b"/old?x", None).unwrap();
            let mut by_slice = by_bytes.clone();
            let a = by_bytes.set_origin_path(&bytes::Bytes::copy_from_slice(target));
            let b = by_slice.set_raw_path(target);
            assert_eq!(a.is_ok(), b.is_ok(), "{target:?}");
            assert_eq!(by_bytes.raw_path(), by_slice.raw_path(), "{target:?}");
            assert_eq!(by_bytes.uri, by_slice.uri, "{target:?}");
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            by_bytes.header_to_h1_wire(&mut wa);
            by_slice.header_to_h1_wire(&mut wb);
            assert_eq!(wa, wb, "{target:?}");
        }
        let mut req = RequestHeader::build("GET", b"/old", None).unwrap();
        req.set_origin_path(&bytes::Bytes::from_static(b"/new/path?q=1"))
            .unwrap();
        assert_eq!(req.raw_path(), b"/new/path?q=1");
        assert_eq!(req.uri.path(), "/new/path");
        assert_eq!(req.uri.query(), Some("q=1"));
    }
}
