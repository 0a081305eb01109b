//! A whole admin answer: status, content type, body and extra headers; JSON bodies and the
//! SPEC §8 error body for the API.

use anygate_plugins::ctx::new_request_id;
use anygate_plugins::ErrorCode;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::StatusCode;
use pingora_http::ResponseHeader;
use serde::Serialize;

/// The Prometheus text format's content type.
pub const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const JSON: &str = "application/json";

#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Extra headers, by wire name.
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: StatusCode, body: &'static str) -> Answer {
        Answer::new(
            status,
            "text/plain; charset=utf-8",
            Bytes::from_static(body.as_bytes()),
        )
    }

    pub fn metrics(scrape: String) -> Answer {
        Answer::new(StatusCode::OK, METRICS_TYPE, scrape)
    }

    /// `200` with `value` as JSON.
    pub fn json(value: &impl Serialize) -> Answer {
        Answer::json_status(StatusCode::OK, value)
    }

    pub fn json_status(status: StatusCode, value: &impl Serialize) -> Answer {
        match serde_json::to_vec(value) {
            Ok(body) => Answer::new(status, JSON, body),
            Err(e) => Answer::error(ErrorCode::SysErr, &format!("cannot write the answer: {e}")),
        }
    }

    /// A SPEC §8 error body (with a fresh request id, also sent as `X-Cloudbase-Request-Id`).
    pub fn error(code: ErrorCode, message: &str) -> Answer {
        Answer::error_with(code, message, serde_json::Map::new())
    }

    /// A SPEC §8 error body with more fields after the three of §8.
    pub fn error_with(
        code: ErrorCode,
        message: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Answer {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            code: &'a str,
            message: &'a str,
            request_id: &'a str,
            #[serde(flatten)]
            extra: serde_json::Map<String, serde_json::Value>,
        }
        let id = new_request_id();
        let id = id.to_str().unwrap_or("-");
        let body = Body {
            code: code.as_str(),
            message,
            request_id: id,
            extra,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Answer::new(code.status(), JSON, bytes).with_header("X-Cloudbase-Request-Id", id)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// The response header (with `Content-Length`, `Cache-Control: no-store` and the extra
    /// headers) and the body.
    pub fn into_parts(self) -> Option<(ResponseHeader, Bytes)> {
        let mut h = ResponseHeader::build(self.status, Some(5 + self.headers.len())).ok()?;
        h.insert_header(CONTENT_TYPE, self.content_type).ok()?;
        h.insert_header(CONTENT_LENGTH, self.body.len()).ok()?;
        h.insert_header(CACHE_CONTROL, "no-store").ok()?;
        h.insert_header("X-Content-Type-Options", "nosniff").ok()?;
        for (name, value) in self.headers {
            h.insert_header(name, value).ok()?;
        }
        Some((h, self.body))
    }
}
