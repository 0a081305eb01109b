//! anygate's error answers after a failed proxy attempt close the connection (Pingora does
//! not reuse it), and say so: a client that believed `keep-alive` would send its next request
//! into a closed connection.

use crate::common::*;
use crate::HOST;

#[test]
fn an_error_answer_keeps_its_promise_about_the_connection() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 1 }}
instances:
  - {{ id: lhins-a, address: "{}" }}
  - {{ id: lhins-down, address: "{}" }}
routes:
  - {{ domain: default, path: /api, instance: lhins-a }}
  - {{ domain: default, path: /down, instance: lhins-down }}
"#,
        up.addr(),
        closed_port()
    ));
    for req in [
        Req::get("/down/x").host(HOST),
        Req::post("/down/x").host(HOST).body(vec![b'x'; 64 * 1024]),
    ] {
        let mut conn = Conn::connect(gw.http).unwrap();
        let resp = conn.send(&req).unwrap();
        assert_error(&resp, 502, "REQUEST_SERVICE_FAILED");
        match resp.header("Connection") {
            // As good as its word.
            Some("keep-alive") => {
                let resp = conn.send(&Req::get("/api/x").host(HOST)).unwrap();
                assert_eq!(resp.status, 200);
            }
            other => assert_eq!(other, Some("close")),
        }
    }
}
