//! The console (SPEC §12 `GET /`): one page, its script and its style sheet, kept as plain
//! files in `console/` and compiled into the binary. Nothing is loaded from elsewhere, and the
//! Content-Security-Policy says so to the browser.

use super::Answer;
use bytes::Bytes;
use http::StatusCode;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Only this origin's own files and API; no inline script; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's own files (open without the admin token: they hold no data).
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/index.html" | "/console.js" | "/console.css")
}

pub fn serve(path: &str) -> Option<Answer> {
    let (body, kind) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(
        Answer::new(StatusCode::OK, kind, Bytes::from_static(body.as_bytes()))
            .with_header("Content-Security-Policy", CSP)
            .with_header("X-Frame-Options", "DENY")
            .with_header("Referrer-Policy", "no-referrer"),
    )
}
