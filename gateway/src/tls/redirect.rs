//! `force_https`: plain-HTTP requests for the listed domains get a 308 to the same URL on the
//! HTTPS listener (method and body are kept by the client, unlike 301/302).

use anygate_plugins::routes::{host_without_port, normalize_host};
use anygate_plugins::Reply;
use http::header::HOST;
use http::{HeaderValue, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashSet;

#[derive(Debug, Default)]
pub struct HttpsRedirect {
    exact: HashSet<String>,
    /// `*.example.com` domains, by `example.com`.
    wildcard: HashSet<String>,
    /// The port written in `Location`; left out when it is 443.
    port: u16,
}

impl HttpsRedirect {
    pub fn new(port: u16) -> HttpsRedirect {
        HttpsRedirect {
            port,
            ..HttpsRedirect::default()
        }
    }

    /// Adds a domain (lower-case; `*.parent` for a wildcard).
    pub fn add(&mut self, name: &str) {
        match name.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string()),
            None => self.exact.insert(name.to_string()),
        };
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    fn covers(&self, host: &str) -> bool {
        self.exact.contains(host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains(parent))
    }

    /// The redirect for a plain-HTTP request, if its host is a `force_https` domain.
    pub fn reply(&self, req: &RequestHeader) -> Option<Reply> {
        let host = match req.uri.authority() {
            Some(a) => a.as_str(),
            None => req.headers.get(HOST)?.to_str().ok()?,
        };
        let host = normalize_host(host_without_port(host.trim()));
        if !self.covers(&host) {
            return None;
        }
        // Absolute-form targets carry scheme and host: keep only the path and query.
        let raw = req.raw_path();
        let target: &[u8] = if raw.starts_with(b"/") {
            raw
        } else {
            req.uri
                .path_and_query()
                .map_or(b"/", |p| p.as_str().as_bytes())
        };
        let port = if self.port == 443 {
            String::new()
        } else {
            format!(":{}", self.port)
        };
        let mut location = format!("https://{host}{port}").into_bytes();
        location.extend_from_slice(target);
        let location = HeaderValue::from_bytes(&location).ok()?;
        let mut header = ResponseHeader::build(StatusCode::PERMANENT_REDIRECT, Some(2)).ok()?;
        header.insert_header("Location", location).ok()?;
        header
            .insert_header("Content-Length", HeaderValue::from_static("0"))
            .ok()?;
        Some(Reply::Response {
            header: Box::new(header),
            body: bytes::Bytes::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(r: &HttpsRedirect, raw: &str, host: Option<&str>) -> Option<String> {
        let mut req = RequestHeader::build("GET", raw.as_bytes(), None).unwrap();
        if let Some(h) = host {
            req.insert_header(HOST, h).unwrap();
        }
        match r.reply(&req)? {
            Reply::Response { header, .. } => {
                assert_eq!(header.status, 308);
                Some(header.headers["location"].to_str().unwrap().to_string())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirects_keep_path_and_query_and_name_the_https_port() {
        let mut r = HttpsRedirect::new(8443);
        r.add("api.example.com");
        r.add("*.apps.example.com");
        assert_eq!(
            location(&r, "/a/b?x=1&y", Some("API.example.com:8080")).as_deref(),
            Some("https://api.example.com:8443/a/b?x=1&y")
        );
        assert_eq!(
            location(&r, "/", Some("shop.apps.example.com")).as_deref(),
            Some("https://shop.apps.example.com:8443/")
        );
        assert_eq!(
            location(&r, "http://api.example.com/p?q", Some("api.example.com")).as_deref(),
            Some("https://api.example.com:8443/p?q")
        );
        assert_eq!(location(&r, "/", Some("other.example.com")), None);
        assert_eq!(location(&r, "/", Some("a.b.apps.example.com")), None);
        assert_eq!(location(&r, "/", None), None);
        let mut r = HttpsRedirect::new(443);
        r.add("api.example.com");
        assert_eq!(
            location(&r, "/x", Some("api.example.com")).as_deref(),
            Some("https://api.example.com/x")
        );
    }
}
