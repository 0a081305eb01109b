//! What the upstream saw, read back from the harness upstream's Echo body.

use super::http::Response;

pub struct Seen {
    pub method: String,
    pub target: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    /// Parses the Echo JSON in a proxied response; panics with the response if it is not one.
    pub fn of(resp: &Response) -> Seen {
        let v = resp.json();
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let headers = v["headers"]
            .as_array()
            .unwrap_or_else(|| panic!("not an echo body: {}", resp.text()))
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap_or_default().to_string(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Seen {
            method: s("method"),
            target: s("target"),
            path: s("path"),
            query: v["query"].as_str().map(str::to_string),
            headers,
            body: s("body"),
        }
    }

    /// The first value of a header, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::header_first(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        super::http::header_all(&self.headers, name)
    }

    /// Header names as received, lower-cased.
    pub fn names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect()
    }
}
