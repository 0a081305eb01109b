//! CORS: policies as an operator writes them, and origins, methods and header lists as any
//! client sends them. Lines: allowed origins, allowed methods, allowed headers (each
//! comma-separated; `-` for unset), max_age, then the request's Origin,
//! Access-Control-Request-Method and Access-Control-Request-Headers.
#![no_main]

use anygate_plugins::cors::{Policy, PolicyConfig};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

fn list(line: &str) -> Option<Vec<String>> {
    (line != "-").then(|| line.split(',').map(str::to_string).collect())
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("-");
    let origins = list(next());
    let methods = list(next());
    let headers = list(next());
    let max_age = serde_json::from_value(serde_json::Value::String(next().into())).ok();
    let config = PolicyConfig {
        allow_origins: origins.clone(),
        allow_methods: methods,
        allow_headers: headers,
        expose_headers: None,
        allow_credentials: Some(data.len() % 2 == 0),
        max_age,
    };
    let Ok(policy) = Policy::compile(&config) else {
        return;
    };
    // Every listed exact origin is allowed, in any case.
    for o in origins.iter().flatten() {
        let o = o.trim();
        if !o.contains('*') {
            if let Ok(v) = HeaderValue::from_str(&o.to_ascii_uppercase()) {
                assert!(policy.allows_origin(&v), "{o:?}");
            }
        }
    }
    let Ok(origin) = HeaderValue::from_bytes(next().as_bytes()) else {
        return;
    };
    let allowed = policy.allows_origin(&origin);
    for (_, v) in policy.simple_headers(&origin) {
        assert!(!v.as_bytes().contains(&b'\n'));
    }
    let Ok(mut req) = RequestHeader::build("OPTIONS", b"/", None) else {
        return;
    };
    for name in ["access-control-request-method", "access-control-request-headers"] {
        if let Ok(v) = HeaderValue::from_bytes(next().as_bytes()) {
            let _ = req.insert_header(name, v);
        }
    }
    if let Ok(headers) = policy.preflight(&req, &origin, allowed) {
        assert!(allowed);
        assert!(headers.iter().any(|(n, _)| *n == "Access-Control-Allow-Origin"));
    }
});
