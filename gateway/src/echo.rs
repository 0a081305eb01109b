//! `anygate echo`: an upstream that answers every request with JSON describing it (method,
//! path, query, headers, body size). Used by the demo, the tests and the benchmark.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{Map, Value};

pub struct Echo;

/// The JSON an echo answer carries. Repeated headers become arrays.
pub fn describe(req: &pingora_http::RequestHeader, body_bytes: usize) -> Value {
    let raw = req.raw_path();
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(q) => (&raw[..q], Some(&raw[q + 1..])),
        None => (raw, None),
    };
    let mut headers = Map::new();
    for name in req.headers.keys() {
        let values: Vec<Value> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let v = if values.len() == 1 {
            values.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        headers.insert(name.as_str().to_string(), v);
    }
    serde_json::json!({
        "method": req.method.as_str(),
        "path": String::from_utf8_lossy(path),
        "query": query.map(|q| String::from_utf8_lossy(q).into_owned()),
        "headers": headers,
        "bodyBytes": body_bytes,
    })
}

#[async_trait]
impl ServeHttp for Echo {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body_bytes = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            body_bytes += chunk.len();
        }
        let body = serde_json::to_vec_pretty(&describe(session.req_header(), body_bytes))
            .unwrap_or_default();
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
