//! `GET /api/v1/requests/{id}` and `GET /api/v1/requests?...`: the recent-request buffer.

use super::*;

fn record(gw: &Gateway, id: &str) -> Value {
    // Recorded in the logging phase, just after the response went out.
    until(&format!("the record of {id}"), WAIT, || {
        let r = admin(gw, Req::get(&format!("/api/v1/requests/{id}")));
        (r.status == 200).then(|| r.json())
    })
}

/// Waits until `n` requests were recorded (each is, just after its response went out).
fn settle(gw: &Gateway, n: u64) {
    until(&format!("{n} requests recorded"), WAIT, || {
        (get_json(gw, "/api/v1/requests?limit=1")["recorded"] == n).then_some(())
    });
}

#[test]
fn a_request_is_found_by_the_id_of_its_response() {
    let up = Upstream::start(Behavior::Delay(Duration::from_millis(30)));
    let gw = start(&up, WITH_TOKEN);
    let r = send(
        gw.http,
        &Req::post("/a/users/7?page=2")
            .host(HOST)
            .header("X-Forwarded-For", "203.0.113.9")
            .body("{}"),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let id = r.header("X-Cloudbase-Request-Id").unwrap();
    let rec = record(&gw, id);
    assert_eq!(rec["requestId"], id);
    assert_eq!(rec["entry"], "http");
    assert_eq!(rec["method"], "POST");
    assert_eq!(rec["host"], HOST);
    assert_eq!(rec["path"], "/a/users/7", "as sent, without the query");
    assert_eq!(rec["route"], "default/a");
    assert_eq!(rec["instance"], "lhins-a");
    assert_eq!(rec["clientIp"], "127.0.0.1", "no trusted proxy: the peer");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["upstreamStatus"], 200);
    let timecost: u64 = r
        .header("X-Cloudbase-Upstream-Timecost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(timecost >= 30, "{timecost}");
    assert_eq!(rec["upstreamTimecostMs"], timecost, "what the header said");
    assert_eq!(rec["error"], Value::Null);
    assert_eq!(rec["upstreamError"], Value::Null);
    assert!(rec["durationMs"].as_f64().unwrap() >= timecost as f64);
    assert_eq!(rec["generation"], 1);
    assert!(rec["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn errored_requests_show_their_code() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    let failed = through(&gw, "/down/x");
    assert_error(&failed, 502, "REQUEST_SERVICE_FAILED");
    let rec = record(&gw, failed.header("X-Cloudbase-Request-Id").unwrap());
    assert_eq!(rec["error"], "REQUEST_SERVICE_FAILED");
    assert_eq!(rec["upstreamError"], "connect_refused");
    assert_eq!(
        (&rec["status"], &rec["upstreamStatus"]),
        (&502.into(), &Value::Null)
    );
    assert_eq!(rec["upstreamTimecostMs"], Value::Null);
    assert_eq!(rec["instance"], "lhins-down");

    let unrouted = through(&gw, "/nowhere");
    assert_error(&unrouted, 404, "INVALID_PATH");
    let rec = record(&gw, unrouted.header("X-Cloudbase-Request-Id").unwrap());
    assert_eq!(rec["error"], "INVALID_PATH");
    assert_eq!(
        (&rec["route"], &rec["instance"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(rec["entry"], "none");
}

#[test]
fn unknown_ids_are_not_found() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    let r = admin(
        &gw,
        Req::get("/api/v1/requests/01a2b3c4-0000-7000-8000-000000000000"),
    );
    let body = assert_api_error(&r, 404, "NOT_FOUND");
    assert!(
        body["message"].as_str().unwrap().contains("access log"),
        "{body}"
    );
}

#[test]
fn the_buffer_keeps_the_newest_and_evicts_the_oldest() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(
        &up,
        "admin: { token_env: ANYGATE_ADMIN_TOKEN, recent_requests: 3 }",
    );
    // Records take their place in the ring when the request's logging phase runs, after its
    // answer was sent: the next request (on another connection, maybe another worker) could
    // otherwise be recorded first. Each is waited for, so the ring's order is the requests'.
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let r = through(&gw, &format!("/a/{i}"));
            settle(&gw, i + 1);
            r.header("X-Cloudbase-Request-Id").unwrap().to_string()
        })
        .collect();
    let r = admin(&gw, Req::get(&format!("/api/v1/requests/{}", ids[0])));
    assert_api_error(&r, 404, "NOT_FOUND");
    for id in &ids[1..] {
        record(&gw, id);
    }
    let all = get_json(&gw, "/api/v1/requests");
    assert_eq!((&all["capacity"], &all["recorded"]), (&3.into(), &4.into()));
    let listed: Vec<&str> = all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [&ids[3], &ids[2], &ids[1]], "newest first");
}

#[test]
fn filters_pick_the_newest_matching_records() {
    let up = Upstream::start(Behavior::Status(503));
    let gw = start(&up, WITH_TOKEN);
    for path in ["/a/1", "/down/1", "/nowhere", "/a/2", "/down/2"] {
        through(&gw, path);
    }
    settle(&gw, 5);
    let pick = |query: &str| -> Vec<(String, u64)> {
        get_json(&gw, &format!("/api/v1/requests?{query}"))["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["path"].as_str().unwrap().to_string(),
                    r["status"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let p = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
    };
    assert_eq!(
        pick("status=5xx"),
        p(&[
            ("/down/2", 502),
            ("/a/2", 503),
            ("/down/1", 502),
            ("/a/1", 503)
        ])
    );
    assert_eq!(
        pick("status=5xx&limit=2"),
        p(&[("/down/2", 502), ("/a/2", 503)])
    );
    assert_eq!(pick("status=502"), p(&[("/down/2", 502), ("/down/1", 502)]));
    assert_eq!(pick("status=4xx"), p(&[("/nowhere", 404)]));
    assert_eq!(pick("instance=lhins-a"), p(&[("/a/2", 503), ("/a/1", 503)]));
    assert_eq!(pick("route=default%2Fdown&limit=1"), p(&[("/down/2", 502)]));
    assert_eq!(pick("error=INVALID_PATH"), p(&[("/nowhere", 404)]));
    assert_eq!(pick("instance=lhins-a&status=2xx"), p(&[]));
    for bad in [
        "status=9xx",
        "limit=0",
        "limit=x",
        "error=NOPE",
        "colour=red",
    ] {
        let r = admin(&gw, Req::get(&format!("/api/v1/requests?{bad}")));
        assert_api_error(&r, 400, "INVALID_REQUEST");
    }
}

#[test]
fn records_survive_a_reload() {
    let up = Upstream::start(Behavior::Echo);
    let gw = start(&up, WITH_TOKEN);
    let before = through(&gw, "/a/before");
    let id = before.header("X-Cloudbase-Request-Id").unwrap().to_string();
    record(&gw, &id);
    let ok = admin(&gw, Req::post("/api/v1/reload"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let after = through(&gw, "/a/after");
    let rec = record(&gw, after.header("X-Cloudbase-Request-Id").unwrap());
    assert_eq!(rec["generation"], 2);
    assert_eq!(record(&gw, &id)["generation"], 1);
}
