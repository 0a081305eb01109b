//! One CORS policy: the file's settings, checked and turned into ready header values.

use crate::plugin::Reply;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::{Deserialize, Deserializer};

/// The settings of one domain (every key optional: unset keys come from the top level).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub allow_origins: Option<Vec<String>>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<MaxAge>,
}

impl PolicyConfig {
    /// These settings, with unset keys taken from `base`.
    pub fn over(&self, base: &PolicyConfig) -> PolicyConfig {
        PolicyConfig {
            allow_origins: self.allow_origins.clone().or(base.allow_origins.clone()),
            allow_methods: self.allow_methods.clone().or(base.allow_methods.clone()),
            allow_headers: self.allow_headers.clone().or(base.allow_headers.clone()),
            expose_headers: self.expose_headers.clone().or(base.expose_headers.clone()),
            allow_credentials: self.allow_credentials.or(base.allow_credentials),
            max_age: self.max_age.or(base.max_age),
        }
    }
}

/// Seconds, written `600`, `600s`, `10m`, `2h` or `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxAge(pub u64);

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::N(n) => return Ok(MaxAge(n)),
            Raw::S(s) => s,
        };
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let n: Option<u64> = t[..digits].parse().ok();
        let mult = match &t[digits..] {
            "" | "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86400),
            _ => None,
        };
        n.zip(mult)
            .and_then(|(n, m)| n.checked_mul(m))
            .map(MaxAge)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid max_age `{text}` (write e.g. 600s, 10m, 2h)"
                ))
            })
    }
}

/// An allowed origin: exact (`https://app.example.com`) or any subdomain
/// (`https://*.example.com`, which does not match `https://example.com`).
#[derive(Debug, PartialEq, Eq)]
enum OriginPattern {
    Exact(String),
    Subdomain { scheme: String, suffix: String },
}

#[derive(Debug, PartialEq, Eq)]
enum List<T> {
    Any,
    Only(Vec<T>),
}

/// A checked policy.
#[derive(Debug)]
pub struct Policy {
    origins: List<OriginPattern>,
    methods: List<Method>,
    methods_value: Option<HeaderValue>,
    /// Lower-case names.
    headers: List<String>,
    headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const DEFAULT_EXPOSE: &[&str] = &[
    "X-Cloudbase-Request-Id",
    "X-Cloudbase-Upstream-Status-Code",
    "X-Cloudbase-Upstream-Timecost",
    "X-Cloudbase-Upstream-Type",
];

fn joined(items: &[String]) -> Option<HeaderValue> {
    HeaderValue::from_str(&items.join(", ")).ok()
}

fn origin_pattern(s: &str) -> Result<OriginPattern, String> {
    let bad = || format!("`{s}` is not an origin (write scheme://host[:port], no path, or `*`)");
    let lower = s.trim().to_ascii_lowercase();
    // Browsers send `Origin` in ASCII (an internationalised name in punycode): anything else
    // could never match (found by fuzzing: it was accepted and silently matched nothing).
    if !lower.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`{s}` is not an origin: write it in ASCII without spaces (an internationalised domain name in punycode, `xn--...`)"
        ));
    }
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') || rest.contains('?') {
        return Err(bad());
    }
    match rest.strip_prefix("*.") {
        Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
            Ok(OriginPattern::Subdomain {
                scheme: scheme.to_string(),
                suffix: format!(".{suffix}"),
            })
        }
        Some(_) => Err(bad()),
        None if rest.contains('*') => Err(bad()),
        None => Ok(OriginPattern::Exact(lower)),
    }
}

type Field = &'static str;

impl Policy {
    /// Checks merged settings; errors name the key at fault.
    pub fn compile(c: &PolicyConfig) -> Result<Policy, (Field, String)> {
        let origins_cfg = c.allow_origins.clone().unwrap_or_default();
        let credentials = c.allow_credentials.unwrap_or(false);
        let origins = if origins_cfg.iter().any(|o| o.trim() == "*") {
            if credentials {
                return Err(("allow_credentials", "`allow_credentials: true` cannot go with `allow_origins: [\"*\"]`: list the origins that may send credentials".into()));
            }
            List::Any
        } else {
            if origins_cfg.is_empty() {
                return Err(("allow_origins", "`allow_origins` is empty".into()));
            }
            let parsed: Result<Vec<_>, _> = origins_cfg.iter().map(|o| origin_pattern(o)).collect();
            List::Only(parsed.map_err(|m| ("allow_origins", m))?)
        };

        let methods_cfg: Vec<String> = c
            .allow_methods
            .clone()
            .unwrap_or_else(|| DEFAULT_METHODS.iter().map(|m| m.to_string()).collect());
        let (methods, methods_value) = if methods_cfg.iter().any(|m| m == "*") {
            (List::Any, None)
        } else {
            let mut list = Vec::new();
            for m in &methods_cfg {
                let method = Method::from_bytes(m.as_bytes())
                    .map_err(|_| ("allow_methods", format!("`{m}` is not an HTTP method")))?;
                list.push(method);
            }
            (List::Only(list), joined(&methods_cfg))
        };

        let (headers, headers_value) = match &c.allow_headers {
            None => (List::Any, None),
            Some(h) if h.iter().any(|x| x == "*") => (List::Any, None),
            Some(h) => {
                for name in h {
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| ("allow_headers", format!("`{name}` is not a header name")))?;
                }
                let lower = h.iter().map(|x| x.to_ascii_lowercase()).collect();
                (List::Only(lower), joined(h))
            }
        };

        let expose_cfg: Vec<String> = c
            .expose_headers
            .clone()
            .unwrap_or_else(|| DEFAULT_EXPOSE.iter().map(|h| h.to_string()).collect());
        for name in &expose_cfg {
            if name != "*" && HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("expose_headers", format!("`{name}` is not a header name")));
            }
        }
        Ok(Policy {
            origins,
            methods,
            methods_value,
            headers,
            headers_value,
            expose: if expose_cfg.is_empty() {
                None
            } else {
                joined(&expose_cfg)
            },
            credentials,
            max_age: c.max_age.map(|m| HeaderValue::from(m.0)),
        })
    }

    pub fn allows_origin(&self, origin: &HeaderValue) -> bool {
        let List::Only(patterns) = &self.origins else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        patterns.iter().any(|p| match p {
            OriginPattern::Exact(o) => *o == origin,
            OriginPattern::Subdomain { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|r| r.strip_prefix("://"))
                .is_some_and(|host| {
                    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
                    name.len() > suffix.len() && name.ends_with(suffix.as_str())
                }),
        })
    }

    /// `Access-Control-Allow-Origin` for an allowed origin: `*` when any origin may call
    /// without credentials, else the origin itself.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        match (&self.origins, self.credentials) {
            (List::Any, false) => HeaderValue::from_static("*"),
            _ => origin.clone(),
        }
    }

    /// Headers for a non-preflight response to an allowed origin.
    pub fn simple_headers(&self, origin: &HeaderValue) -> Vec<(&'static str, HeaderValue)> {
        let mut out = vec![(
            "Access-Control-Allow-Origin",
            self.allow_origin_value(origin),
        )];
        if self.credentials {
            out.push((
                "Access-Control-Allow-Credentials",
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(expose) = &self.expose {
            out.push(("Access-Control-Expose-Headers", expose.clone()));
        }
        out
    }

    /// The headers of a preflight answer, or why it is refused.
    pub fn preflight(
        &self,
        req: &RequestHeader,
        origin: &HeaderValue,
        origin_allowed: bool,
    ) -> Result<Vec<(&'static str, HeaderValue)>, String> {
        if !origin_allowed {
            return Err(format!(
                "CORS: origin `{}` is not allowed",
                String::from_utf8_lossy(origin.as_bytes())
            ));
        }
        let method = req
            .headers
            .get("access-control-request-method")
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("GET"));
        let safelisted = matches!(method.as_bytes(), b"GET" | b"HEAD" | b"POST");
        let method_ok = match &self.methods {
            List::Any => true,
            List::Only(list) => {
                safelisted
                    || list
                        .iter()
                        .any(|m| m.as_str().as_bytes() == method.as_bytes())
            }
        };
        if !method_ok {
            return Err(format!(
                "CORS: method `{}` is not allowed",
                String::from_utf8_lossy(method.as_bytes())
            ));
        }
        let requested = req.headers.get("access-control-request-headers").cloned();
        if let (List::Only(allowed), Some(asked)) = (&self.headers, &requested) {
            let asked = asked.to_str().unwrap_or("");
            for name in asked.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                    return Err(format!("CORS: header `{name}` is not allowed"));
                }
            }
        }
        let mut out = self.simple_headers(origin);
        out.retain(|(n, _)| *n != "Access-Control-Expose-Headers");
        out.push((
            "Access-Control-Allow-Methods",
            self.methods_value.clone().unwrap_or(method),
        ));
        let headers = match &self.headers {
            List::Any => requested,
            List::Only(_) => self.headers_value.clone(),
        };
        if let Some(h) = headers.filter(|h| !h.is_empty()) {
            out.push(("Access-Control-Allow-Headers", h));
        }
        if let Some(age) = &self.max_age {
            out.push(("Access-Control-Max-Age", age.clone()));
        }
        out.push((
            "Vary",
            HeaderValue::from_static(
                "Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        ));
        Ok(out)
    }
}

/// The 204 a granted preflight gets (its CORS headers are added in the response phase).
pub fn no_content() -> Reply {
    match ResponseHeader::build(StatusCode::NO_CONTENT, Some(8)) {
        Ok(header) => Reply::Response {
            header: Box::new(header),
            body: bytes::Bytes::new(),
        },
        Err(_) => Reply::error(crate::error::ErrorCode::SysErr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> Result<Policy, (Field, String)> {
        Policy::compile(&PolicyConfig {
            allow_origins: Some(origins.iter().map(|o| o.to_string()).collect()),
            ..PolicyConfig::default()
        })
    }

    #[test]
    fn an_origin_that_could_never_match_is_refused() {
        // Fuzz finding (fuzz/ target `cors`): a non-ASCII origin compiled, and no `Origin`
        // header could ever match it.
        for bad in [
            "https://例子.com",
            "https://app.CjH\u{fffd}",
            "https://a b.com",
            "https://a\tb.com",
        ] {
            let err = policy(&[bad]).expect_err(bad);
            assert_eq!(err.0, "allow_origins", "{bad}");
        }
        let p = policy(&["https://xn--fsqu00a.com", "HTTPS://App.Example.com:8443"]).unwrap();
        assert!(p.allows_origin(&HeaderValue::from_static("https://xn--fsqu00a.com")));
        assert!(p.allows_origin(&HeaderValue::from_static("https://app.example.com:8443")));
    }
}
