//! `GET /api/v1/traffic`: server-sent events, one a second.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Opens the stream and reads until `done` holds for the events read so far (or the deadline);
/// returns the response head and the events' data, parsed.
fn events(gw: &Gateway, query: &str, done: impl Fn(&[Value]) -> bool) -> (String, Vec<Value>) {
    let mut s = TcpStream::connect(gw.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /api/v1/traffic{query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the stream: {e}"),
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let data: Vec<Value> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        if done(&data) || Instant::now() > deadline {
            return (head.to_string(), data);
        }
    }
    panic!("the stream ended: {}", String::from_utf8_lossy(&raw));
}

#[test]
fn the_traffic_stream_sends_a_second_at_a_time() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    let (head, first) = events(&gw, "", |e| e.len() >= 2);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert!(first.len() >= 2, "two events within {WAIT:?}");
    let e = &first[0];
    for key in [
        "time",
        "requests",
        "errors",
        "p50Ms",
        "p99Ms",
        "routes",
        "instances",
    ] {
        assert!(e.get(key).is_some(), "{key} in {e}");
    }
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&e["routes"]),
        ["default/a", "default/down"],
        "every route, with zeros"
    );
    assert_eq!(names(&e["instances"]), ["lhins-a", "lhins-down"]);

    // Traffic shows up in the second it happened in, per route and instance.
    for i in 0..5 {
        assert_eq!(through(&gw, &format!("/a/{i}")).status, 200);
    }
    assert_eq!(through(&gw, "/down/x").status, 502);
    let (_, seen) = events(&gw, "?history=5", |e| {
        e.iter()
            .map(|s| s["requests"].as_u64().unwrap())
            .sum::<u64>()
            >= 6
    });
    let total: u64 = seen.iter().map(|s| s["requests"].as_u64().unwrap()).sum();
    let errors: u64 = seen.iter().map(|s| s["errors"].as_u64().unwrap()).sum();
    assert_eq!((total, errors), (6, 1), "{seen:?}");
    let series = |list: &str, name: &str, key: &str| -> u64 {
        seen.iter()
            .flat_map(|s| s[list].as_array().unwrap().clone())
            .filter(|x| x["name"] == name)
            .map(|x| x[key].as_u64().unwrap())
            .sum()
    };
    assert_eq!(series("routes", "default/a", "requests"), 5);
    assert_eq!(series("instances", "lhins-down", "errors"), 1);
    let busy = seen
        .iter()
        .find(|s| s["requests"].as_u64().unwrap() > 0)
        .unwrap();
    let (p50, p99) = (
        busy["p50Ms"].as_f64().unwrap(),
        busy["p99Ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{busy}");

    let bad = admin(&gw, Req::get("/api/v1/traffic?history=301"));
    assert_api_error(&bad, 400, "INVALID_REQUEST");
}
