//! `cors`: Cross-Origin Resource Sharing for browser callers, per domain. Preflight requests
//! (`OPTIONS` with `Access-Control-Request-Method`) are answered here: 204 with the allowed
//! methods, headers and max age, or 403 `ACCESS_DENIED` when the origin, method or headers are
//! not allowed. Other requests from an allowed origin get `Access-Control-Allow-Origin`,
//! `-Credentials` and `-Expose-Headers` on their response, errors included.

mod policy;

pub use policy::{Policy, PolicyConfig};

use crate::ctx::Ctx;
use crate::error::ErrorCode;
use crate::plugin::{Flow, Phases, Plugin, Reply, Step};
use crate::routes::{host_without_port, normalize_host};
use crate::{BuildCtx, PluginError};
use http::header::{HOST, ORIGIN, VARY};
use http::{HeaderName, HeaderValue, Method};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `https://app.example.com`, `https://*.example.com` (any subdomain) or `*`.
    pub allow_origins: Option<Vec<String>>,
    /// Default: GET, HEAD, POST, PUT, PATCH, DELETE. `*` allows any.
    pub allow_methods: Option<Vec<String>>,
    /// Default `*`: whatever the browser asks for.
    pub allow_headers: Option<Vec<String>>,
    /// Response headers scripts may read (default: the four `X-Cloudbase-*` headers).
    pub expose_headers: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer (`600s`, `10m`, or seconds).
    pub max_age: Option<policy::MaxAge>,
    /// Per-domain settings (`default`, a custom domain, `*.example.com`); keys not set there
    /// come from the settings above.
    #[serde(default)]
    pub domains: BTreeMap<String, PolicyConfig>,
}

impl Config {
    fn global(&self) -> PolicyConfig {
        PolicyConfig {
            allow_origins: self.allow_origins.clone(),
            allow_methods: self.allow_methods.clone(),
            allow_headers: self.allow_headers.clone(),
            expose_headers: self.expose_headers.clone(),
            allow_credentials: self.allow_credentials,
            max_age: self.max_age,
        }
    }

    pub fn build(&self, cx: &BuildCtx) -> Result<Cors, PluginError> {
        if cx.comes_after("routing") {
            return Err(PluginError::general("put `cors` before `routing` in the chain: preflight requests carry no credentials and must be answered before `auth: required` is checked"));
        }
        let global = self.global();
        let global_policy = match &global.allow_origins {
            Some(_) => Some(Arc::new(
                Policy::compile(&global).map_err(|(f, m)| PluginError::new(f, m))?,
            )),
            None => None,
        };
        if global_policy.is_none() && self.domains.is_empty() {
            return Err(PluginError::new(
                "allow_origins",
                "give `allow_origins` (or per-domain settings under `domains`)",
            ));
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (name, own) in &self.domains {
            let merged = own.over(&global);
            if merged.allow_origins.is_none() {
                return Err(PluginError::new(
                    "domains",
                    format!("domain `{name}` has no `allow_origins` (here or at the top)"),
                ));
            }
            let p = Policy::compile(&merged)
                .map_err(|(_, m)| PluginError::new("domains", format!("domain `{name}`: {m}")))?;
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let key = if key == "default" {
                cx.routes.default_host().to_string()
            } else {
                key
            };
            match key.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_string(), Arc::new(p)),
                None => exact.insert(key, Arc::new(p)),
            };
        }
        Ok(Cors {
            global: global_policy,
            exact,
            wildcard,
        })
    }
}

pub struct Cors {
    global: Option<Arc<Policy>>,
    exact: HashMap<String, Arc<Policy>>,
    wildcard: HashMap<String, Arc<Policy>>,
}

const ACCESS_CONTROL_REQUEST_METHOD: HeaderName =
    HeaderName::from_static("access-control-request-method");

impl Cors {
    /// The policy for the request's host: exact domain, `*.parent`, then the global one.
    pub fn policy_for(&self, req: &RequestHeader) -> Option<&Arc<Policy>> {
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let host = normalize_host(host_without_port(host.trim()));
        self.exact
            .get(host.as_ref())
            .or_else(|| {
                let (_, parent) = host.split_once('.')?;
                self.wildcard.get(parent)
            })
            .or(self.global.as_ref())
    }

    /// Decides a request: `Some` answers it (preflight), else the response headers go in `ctx`.
    pub fn decide(&self, req: &RequestHeader, ctx: &mut Ctx) -> Option<Reply> {
        let policy = self.policy_for(req)?;
        // Responses differ by Origin wherever a policy applies: tell caches.
        ctx.cors_headers
            .push(("Vary", HeaderValue::from_static("Origin")));
        let origin = req.headers.get(ORIGIN)?;
        let allowed = policy.allows_origin(origin);
        if req.method == Method::OPTIONS && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            // The answer's headers go through `response` like every other CORS header.
            return Some(match policy.preflight(req, origin, allowed) {
                Ok(headers) => {
                    ctx.cors_headers.extend(headers);
                    policy::no_content()
                }
                Err(why) => Reply::error_with(ErrorCode::AccessDenied, why),
            });
        }
        if allowed {
            ctx.cors_headers.extend(policy.simple_headers(origin));
        }
        None
    }
}

/// Whether the response already varies by every name in `value` (or by everything).
fn varies_by(resp: &ResponseHeader, value: &HeaderValue) -> bool {
    let present: Vec<String> = resp
        .headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    present.iter().any(|t| t == "*")
        || value
            .to_str()
            .unwrap_or("")
            .split(',')
            .all(|t| present.iter().any(|p| p.eq_ignore_ascii_case(t.trim())))
}

/// Whether an upstream header is one the policy replaces.
fn is_cors_response_header(name: &str) -> bool {
    name.len() > 15 && name[..15].eq_ignore_ascii_case("access-control-")
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST | Phases::RESPONSE
    }

    fn request<'a>(&'a self, session: &'a mut Session, ctx: &'a mut Ctx) -> Step<'a> {
        match self.decide(session.req_header(), ctx) {
            Some(reply) => Step::Done(Flow::Reply(reply)),
            None => Step::Done(Flow::Continue),
        }
    }

    fn response(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) {
        if ctx.cors_headers.is_empty() {
            return;
        }
        // The policy speaks for the domain: the upstream's own CORS answer is replaced.
        let doomed: Vec<HeaderName> = resp
            .headers
            .keys()
            .filter(|n| is_cors_response_header(n.as_str()))
            .cloned()
            .collect();
        for name in &doomed {
            resp.remove_header(name);
        }
        for (name, value) in &ctx.cors_headers {
            if *name == "Vary" {
                if !varies_by(resp, value) {
                    let _ = resp.append_header(*name, value.clone());
                }
            } else {
                let _ = resp.insert_header(*name, value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteTable;
    use crate::Limits;

    fn build(
        yaml: serde_json::Value,
        chain: &[&'static str],
        position: usize,
    ) -> Result<Cors, PluginError> {
        let config: Config = serde_json::from_value(yaml).unwrap();
        let routes = Arc::new(RouteTable::new("env-1.example.com", vec![], vec![]).unwrap());
        let cx = BuildCtx {
            env: "env-1",
            routes: &routes,
            limits: Limits::default(),
            env_var: &|_| None,
            telemetry: &Arc::new(crate::telemetry::Telemetry::new().expect("metrics")),
            config_dir: std::path::Path::new("."),
            chain,
            position,
        };
        config.build(&cx)
    }

    fn cors(yaml: serde_json::Value) -> Cors {
        build(yaml, &["cors", "routing"], 0).unwrap()
    }

    fn req(method: &str, host: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/x", None).unwrap();
        r.insert_header(HOST, host).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn headers_of(ctx: &Ctx) -> Vec<(String, String)> {
        ctx.cors_headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflight_from_an_allowed_origin_gets_204_and_the_policy() {
        let c = cors(serde_json::json!({
            "allow_origins": ["https://app.example.com"],
            "allow_methods": ["GET", "PUT"],
            "allow_headers": ["Content-Type", "Authorization"],
            "allow_credentials": true,
            "max_age": "10m",
        }));
        let mut ctx = Ctx::new(1);
        let r = req(
            "OPTIONS",
            "api.example.com",
            &[
                ("Origin", "https://app.example.com"),
                ("Access-Control-Request-Method", "PUT"),
                (
                    "Access-Control-Request-Headers",
                    "content-type, authorization",
                ),
            ],
        );
        match c.decide(&r, &mut ctx) {
            Some(Reply::Response { header, .. }) => assert_eq!(header.status, 204),
            other => panic!("{other:?}"),
        }
        let h = headers_of(&ctx);
        assert_eq!(
            get(&h, "Access-Control-Allow-Origin"),
            Some("https://app.example.com")
        );
        assert_eq!(get(&h, "Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(get(&h, "Access-Control-Allow-Methods"), Some("GET, PUT"));
        assert_eq!(
            get(&h, "Access-Control-Allow-Headers"),
            Some("Content-Type, Authorization")
        );
        assert_eq!(get(&h, "Access-Control-Max-Age"), Some("600"));
        assert_eq!(get(&h, "Vary"), Some("Origin"));
    }

    #[test]
    fn preflight_refusals_are_access_denied() {
        let c = cors(serde_json::json!({
            "allow_origins": ["https://*.example.com"],
            "allow_methods": ["GET"],
            "allow_headers": ["X-Ok"],
        }));
        let cases = [
            ("https://evil.example.org", "GET", "x-ok"),
            ("https://example.com", "GET", "x-ok"),
            ("https://a.example.com", "DELETE", "x-ok"),
            ("https://a.example.com", "GET", "x-ok, x-secret"),
        ];
        for (origin, method, headers) in cases {
            let mut ctx = Ctx::new(1);
            let r = req(
                "OPTIONS",
                "api.example.com",
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", method),
                    ("Access-Control-Request-Headers", headers),
                ],
            );
            match c.decide(&r, &mut ctx) {
                Some(Reply::Error { code, .. }) => assert_eq!(code, ErrorCode::AccessDenied),
                other => panic!("{origin} {method} {headers}: {other:?}"),
            }
        }
        // POST is CORS-safelisted: never refused for its method.
        let mut ctx = Ctx::new(1);
        let r = req(
            "OPTIONS",
            "api.example.com",
            &[
                ("Origin", "https://a.example.com:8443"),
                ("Access-Control-Request-Method", "POST"),
            ],
        );
        assert!(matches!(
            c.decide(&r, &mut ctx),
            Some(Reply::Response { .. })
        ));
    }

    #[test]
    fn simple_requests_get_origin_credentials_and_expose_headers() {
        let c = cors(serde_json::json!({ "allow_origins": ["*"] }));
        let mut ctx = Ctx::new(1);
        let r = req("GET", "x.example.com", &[("Origin", "https://anyone.test")]);
        assert!(c.decide(&r, &mut ctx).is_none());
        let h = headers_of(&ctx);
        assert_eq!(get(&h, "Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(get(&h, "Access-Control-Allow-Credentials"), None);
        assert!(get(&h, "Access-Control-Expose-Headers")
            .unwrap()
            .contains("X-Cloudbase-Request-Id"));
        // A plain OPTIONS (no Access-Control-Request-Method) is not a preflight.
        let mut ctx = Ctx::new(1);
        let r = req(
            "OPTIONS",
            "x.example.com",
            &[("Origin", "https://anyone.test")],
        );
        assert!(c.decide(&r, &mut ctx).is_none());
        // No Origin: not a CORS request, only Vary.
        let mut ctx = Ctx::new(1);
        assert!(c
            .decide(&req("GET", "x.example.com", &[]), &mut ctx)
            .is_none());
        assert_eq!(
            headers_of(&ctx),
            vec![("Vary".to_string(), "Origin".to_string())]
        );
    }

    #[test]
    fn domains_override_the_top_level_and_default_names_the_default_domain() {
        let c = cors(serde_json::json!({
            "allow_origins": ["https://a.test"],
            "domains": {
                "default": { "allow_origins": ["https://b.test"] },
                "*.apps.example.com": { "allow_credentials": true },
            },
        }));
        let allowed = |host: &str, origin: &str| {
            let mut ctx = Ctx::new(1);
            c.decide(&req("GET", host, &[("Origin", origin)]), &mut ctx);
            let h = headers_of(&ctx);
            (
                get(&h, "Access-Control-Allow-Origin").map(str::to_string),
                get(&h, "Access-Control-Allow-Credentials").map(str::to_string),
            )
        };
        assert_eq!(
            allowed("Env-1.example.com:80", "https://b.test")
                .0
                .as_deref(),
            Some("https://b.test")
        );
        assert_eq!(allowed("env-1.example.com", "https://a.test").0, None);
        assert_eq!(
            allowed("other.test", "https://a.test").0.as_deref(),
            Some("https://a.test")
        );
        let (origin, creds) = allowed("x.apps.example.com", "https://a.test");
        assert_eq!(origin.as_deref(), Some("https://a.test"));
        assert_eq!(creds.as_deref(), Some("true"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_key_at_fault() {
        let field = |v: serde_json::Value| build(v, &["cors"], 0).err().unwrap().field;
        assert_eq!(field(serde_json::json!({})), Some("allow_origins"));
        assert_eq!(
            field(serde_json::json!({ "allow_origins": ["https://a.test/path"] })),
            Some("allow_origins")
        );
        assert_eq!(
            field(serde_json::json!({ "allow_origins": ["*"], "allow_credentials": true })),
            Some("allow_credentials")
        );
        assert_eq!(
            field(serde_json::json!({ "allow_origins": ["*"], "allow_methods": ["GE T"] })),
            Some("allow_methods")
        );
        assert_eq!(
            field(serde_json::json!({ "domains": { "a.test": { "max_age": 5 } } })),
            Some("domains")
        );
        let after_routing = build(
            serde_json::json!({ "allow_origins": ["*"] }),
            &["routing", "cors"],
            1,
        );
        assert!(after_routing.is_err());
    }
}
