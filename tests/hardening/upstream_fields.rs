//! Upstream response fields reach the client as sent, obs-folds joined (RFC 9112 §5.2).
//! Pingora's client checks every field value for CR, LF and NUL before it takes the value as
//! is; `vendor/pingora-http` makes that check eight bytes at a time, so the values here have
//! the lengths that exercise its word loop and its tail.

use crate::common::*;
use crate::raw_upstream::{read_header, serve_each};
use crate::HOST;
use std::io::Write;

#[test]
fn upstream_fields_of_every_length_and_folded_ones_reach_the_client() {
    let plain: Vec<(String, String)> = [0usize, 1, 7, 8, 9, 15, 16, 17, 31, 40]
        .iter()
        .map(|&n| {
            let value: String = (0..n).map(|i| char::from(b'!' + (i % 90) as u8)).collect();
            (format!("X-Len-{n}"), value)
        })
        .collect();
    let mut answer = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
    for (name, value) in &plain {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    // Folded: in the first eight bytes, in the bytes after the last whole eight, and further on.
    answer.push_str("X-Folded: one\r\n two\r\n");
    answer.push_str("X-Folded-Tail: abcdefgh1\r\n x\r\n");
    answer.push_str("X-Folded-Long: default-src 'self';\r\n\t  script-src 'self'\r\n");
    answer.push_str("\r\nok");
    let addr = serve_each(move |mut conn| {
        while read_header(&mut conn) {
            if conn.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    let gw = Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
instances:
  - {{ id: lhins-a, address: "{addr}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
"#
    ));
    let resp = send(gw.http, &Req::get("/api/fields").host(HOST)).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "ok");
    for (name, value) in &plain {
        assert_eq!(resp.header(name), Some(value.as_str()), "{name}");
    }
    assert_eq!(resp.header("X-Folded"), Some("one two"));
    assert_eq!(resp.header("X-Folded-Tail"), Some("abcdefgh1 x"));
    assert_eq!(
        resp.header("X-Folded-Long"),
        Some("default-src 'self'; script-src 'self'")
    );
}
