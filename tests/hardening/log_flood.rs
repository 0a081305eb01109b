//! Log volume is not the attacker's to choose: during an upstream outage, and with clients
//! hanging up mid-header, one line per kind per 10 s is written and the rest are counted
//! (`... (and N more like it in the last 10s)`); every request is still in the access log.

use crate::common::*;
use crate::HOST;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The `N` of every `and N more like it` in `lines`.
fn suppressed(lines: &[&str]) -> u64 {
    lines
        .iter()
        .filter_map(|l| {
            let at = l.find("and ")? + 4;
            let rest = &l[at..];
            let n = rest.split(' ').next()?;
            rest.contains("more like it in the last 10s")
                .then(|| n.parse::<u64>().ok())?
        })
        .sum()
}

/// Polls stderr until the lines `of_kind` account for `n` events (written + counted);
/// returns (lines written, events counted, the lines).
fn wait_accounted(gw: &Gateway, of_kind: impl Fn(&str) -> bool, n: u64) -> (u64, u64, String) {
    // The flush writes a kind's count within 15 s of its window opening.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let err = gw.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| of_kind(l)).collect();
        let written = lines.iter().filter(|l| !l.contains("] ... and ")).count() as u64;
        let counted = suppressed(&lines);
        if written + counted >= n || Instant::now() > deadline {
            return (written, counted, lines.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_outage_and_hang_ups_write_a_bounded_number_of_lines_with_exact_counts() {
    let up = Upstream::start(Behavior::Echo);
    let gw = Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 2 }}
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
    const N: u64 = 300;
    // (A failed request closes its connection: one connection each.)
    for _ in 0..N {
        let resp = send(gw.http, &Req::get("/down/x").host(HOST)).unwrap();
        assert_error(&resp, 502, "REQUEST_SERVICE_FAILED");
    }
    // Clients that hang up in the middle of a request header: Pingora logs each.
    const HANG_UPS: u64 = 100;
    for _ in 0..HANG_UPS {
        let mut s = TcpStream::connect(gw.http).unwrap();
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: ").unwrap();
    }
    // The gateway still serves.
    assert_eq!(
        send(gw.http, &Req::get("/api/x").host(HOST))
            .unwrap()
            .status,
        200
    );

    // Everything about the outage, written or counted exactly once; a burst inside one
    // window is one line (the test takes < 40 s: at most a few windows).
    let (written, counted, lines) = wait_accounted(
        &gw,
        |l| l.contains("REQUEST_SERVICE_FAILED upstream=lhins-down"),
        N,
    );
    assert_eq!(written + counted, N, "{lines}");
    assert!(written <= 4, "{written} lines:\n{lines}");
    assert!(counted > 0, "{lines}");

    // Hang-ups in the middle of a header end in anygate's connection front, before Pingora
    // parses anything: no line at all for them (by the time the outage above is accounted
    // for, all 100 have been seen by the gateway), and at most one per window if any did.
    let err = gw.stderr();
    let hang_up_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("ERROR") && !l.contains("REQUEST_SERVICE_FAILED"))
        .collect();
    assert!(
        hang_up_lines.len() <= 4,
        "{} lines for {HANG_UPS} hang-ups:\n{}",
        hang_up_lines.len(),
        hang_up_lines.join("\n")
    );
}
