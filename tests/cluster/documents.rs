//! The document's life on one etcd member: pushes reach every replica, bad documents change
//! nothing (refused by `push`, and refused by every replica when written behind its back),
//! rollback, history, and two operators pushing at once.

use super::common::http::{send, Req};
use super::common::upstream::{Behavior, Upstream};
use super::replica::Replica;
use super::servers::Etcd;
use super::*;
use std::time::Instant;

/// A document with a route to an instance that does not exist (third line).
const BAD: &str = "env: cluster-test\nroutes:\n  - { domain: \"*\", path: /bad, instance: nope }\n";

#[test]
fn pushes_reach_every_replica_and_bad_documents_change_nothing() {
    let etcd = Etcd::start(1);
    let up = Upstream::start(Behavior::Echo);
    let op = Operator::new(&etcd.endpoints());
    let first = op.push_ok(&doc(1, up.addr()));
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&bootstrap(&etcd.endpoints()), &[]))
        .collect();
    for r in &replicas {
        assert_eq!(r.get("/v1").status, 200, "{}", r.stderr());
        // The key's mod_revision is the generation.
        assert_eq!(r.generation(), first);
        assert_eq!(r.scrape().value("anygate_config_source_up", &[]), 1.0);
    }

    // 20 pushes: the time from starting `anygate config push` to the last replica answering
    // the new route (and the part of it the push command itself takes).
    let mut converge = Vec::new();
    let mut command = Vec::new();
    let mut last = first;
    for v in 2..=21 {
        let started = Instant::now();
        last = op.push_ok(&doc(v, up.addr()));
        command.push(started.elapsed());
        for r in &replicas {
            r.wait_status(&format!("/v{v}"), 200);
        }
        converge.push(started.elapsed());
    }
    converge.sort();
    command.sort();
    println!(
        "convergence over 20 pushes, push started -> last of 3 replicas answering the new route: median {:?}, max {:?} (the push command alone: median {:?})",
        converge[10], converge[19], command[10]
    );
    for r in &replicas {
        assert_eq!(r.get("/v20").status, 404, "the previous route is gone");
        assert_eq!(r.generation(), last);
    }

    // `push` validates first: a bad document is refused with file:line:col and not written.
    let (code, out, err) = op.push(BAD, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(".yaml:3:") && err.contains("route names instance `nope`"),
        "{err}"
    );
    assert!(err.contains("not pushed"), "{err}");
    assert_eq!(op.revision(), last, "nothing was written");

    // The same document written straight into etcd: every replica refuses it, keeps its
    // generation and counts the failure, with the error located in the document.
    etcd.ctl_ok(&["put", KEY], Some(BAD.as_bytes()));
    let bad_rev = op.revision();
    for r in &replicas {
        r.wait_metrics("a failed reload", |s| {
            s.value("anygate_config_reloads_total", &[("result", "failure")]) == 1.0
        });
        assert_eq!(r.generation(), last);
        assert_eq!(r.get("/v21").status, 200);
        let log = r.stderr();
        assert!(
            log.contains(&format!("etcd:{KEY}@{bad_rev}:3:"))
                && log.contains("route names instance `nope`"),
            "{log}"
        );
    }

    // The admin API shows the source, the refused load, and reloads from etcd on demand.
    let admin = |r: &Replica, req: Req| send(r.admin, &req.host("localhost")).expect("admin API");
    let status = admin(&replicas[0], Req::get("/api/v1/status")).json();
    assert_eq!(status["source"], format!("etcd:{KEY}@{last}"), "{status}");
    let refused = &status["reloads"][0];
    assert_eq!(
        (refused["trigger"].as_str(), refused["result"].as_str()),
        (Some("etcd"), Some("failure")),
        "{status}"
    );
    assert!(
        refused["errors"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("etcd:{KEY}@{bad_rev}:3:")),
        "{status}"
    );
    let again = admin(&replicas[0], Req::post("/api/v1/reload"));
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["generation"], last);

    // A good push after it is served again.
    let good = op.push_ok(&doc(22, up.addr()));
    for r in &replicas {
        r.wait_status("/v22", 200);
        assert_eq!(r.generation(), good);
    }
    let reloaded = admin(&replicas[1], Req::post("/api/v1/reload"));
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(
        (
            reloaded.json()["result"].as_str(),
            reloaded.json()["generation"].as_i64()
        ),
        (Some("success"), Some(good))
    );

    // Rollback pushes an earlier revision again, validated: every replica serves it.
    let (code, out, err) = op.config(&["rollback", &first.to_string()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let rolled = revision_in(&out);
    assert!(rolled > good, "{out}");
    for r in &replicas {
        r.wait_status("/v1", 200);
        assert_eq!(r.get("/v22").status, 404);
        assert_eq!(r.generation(), rolled);
    }
    // Rolling back to the bad revision is refused by the same checks.
    let (code, _, err) = op.config(&["rollback", &bad_rev.to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("etcd:{KEY}@{bad_rev}:3:")) && err.contains("not rolled back"),
        "{err}"
    );

    // History: newest first, with who, when and what; the etcdctl write shows as outside.
    let (code, out, err) = op.config(&["history", "--limit", "5"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("REVISION"), "{out}");
    assert!(rows[1].starts_with(&rolled.to_string()), "{out}");
    assert!(rows[1].contains(&format!("rollback to {first}")), "{out}");
    assert!(rows[1].contains("(current)"), "{out}");
    assert!(
        rows[2].starts_with(&good.to_string()) && rows[2].contains("push"),
        "{out}"
    );
    assert!(
        rows[3].starts_with(&bad_rev.to_string()) && rows[3].contains("written outside anygate"),
        "{out}"
    );
    assert!(out.contains("--limit 5"), "{out}");
    // Each row's hash is the document's.
    let current = etcd.ctl_ok(&["get", KEY, "--print-value-only"], None);
    let sha = anygate_sha(current.trim_end_matches('\n'));
    assert!(rows[1].contains(&sha[..12]), "{out} vs {sha}");
}

/// SHA-256 hex of `text`, as `config history` shows it (with the newline etcdctl strips).
fn anygate_sha(text: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(format!("{text}\n").as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

#[test]
fn concurrent_pushes_one_wins_the_compare_and_swap() {
    let etcd = Etcd::start(1);
    let up = Upstream::start(Behavior::Echo);
    let op = Operator::new(&etcd.endpoints());
    let base = op.push_ok(&doc(1, up.addr()));

    // Two operators edited revision `base` and push at the same moment.
    let expect = base.to_string();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| op.push(&doc(2, up.addr()), &["--expect-revision", &expect]));
        let b = s.spawn(|| op.push(&doc(3, up.addr()), &["--expect-revision", &expect]));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let (won, lost, winner) = match (a.0, b.0) {
        (0, 1) => (&a, &b, 2),
        (1, 0) => (&b, &a, 3),
        _ => panic!("exactly one push must win:\n{a:?}\n{b:?}"),
    };
    let now = revision_in(&won.1);
    assert!(
        lost.2.contains(&format!("refused: etcd key {KEY} changed since revision {base}: it is now at revision {now} (push by "))
            && lost.2.contains("Nothing was written")
            && lost.2.contains(&format!("--expect-revision {now}")),
        "{}",
        lost.2
    );
    let value = etcd.ctl_ok(&["get", KEY, "--print-value-only"], None);
    assert!(value.contains(&format!("/v{winner}")), "{value}");

    // A stale base is refused; --force overwrites.
    let (code, _, err) = op.push(&doc(4, up.addr()), &["--expect-revision", &expect]);
    assert_eq!(code, 1, "{err}");
    let (code, out, err) = op.push(&doc(4, up.addr()), &["--force"]);
    assert_eq!(code, 0, "{err}");
    let forced = revision_in(&out);

    // Rollback refuses what it cannot restore: a revision that is not one of the key's, one
    // in the future, one compacted away.
    let (code, _, err) = op.config(&["rollback", &(forced + 100).to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a revision of etcd key"), "{err}");
    let (code, _, err) = op.config(&["rollback", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("did not exist at revision 1"), "{err}");
    etcd.ctl_ok(&["compact", &forced.to_string()], None);
    let (code, _, err) = op.config(&["rollback", &base.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("was compacted away by etcd"), "{err}");
    let (code, out, _) = op.config(&["history"]);
    assert_eq!(code, 0);
    assert!(out.contains("older revisions were compacted"), "{out}");

    // Pushing what is already there writes nothing.
    let (code, out, _) = op.push(&doc(4, up.addr()), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing pushed"), "{out}");
    assert_eq!(op.revision(), forced);
}
