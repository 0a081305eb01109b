//! etcd failing under three replicas: a member dies, then the whole cluster; a replica
//! restarts while etcd is down (from its cache); etcd comes back after compacting what one
//! replica was watching from.

use super::common::upstream::{Behavior, Upstream};
use super::replica::Replica;
use super::servers::Etcd;
use super::*;

#[test]
fn replicas_ride_out_etcd_failures() {
    let mut etcd = Etcd::start(3);
    let up = Upstream::start(Behavior::Echo);
    let op = Operator::new(&etcd.endpoints());
    op.push_ok(&doc(1, up.addr()));
    // Each replica lists the members in another order, so they watch different ones.
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(&bootstrap(&etcd.endpoints_from(i)), &[]))
        .collect();
    for r in &replicas {
        r.wait_status("/v1", 200);
    }

    // One member dies (whichever it was, leader or not): pushes and watches go on.
    etcd.kill(0);
    let two = op.push_ok(&doc(2, up.addr()));
    for r in &replicas {
        r.wait_status("/v2", 200);
        assert_eq!(r.generation(), two);
    }

    // Replica 2 goes away; two more pushes, then etcd compacts the revisions it had seen.
    replicas[2].kill();
    op.push_ok(&doc(3, up.addr()));
    let four = op.push_ok(&doc(4, up.addr()));
    etcd.ctl_ok(&["compact", &four.to_string()], None);
    for r in &replicas[..2] {
        r.wait_status("/v4", 200);
    }

    // The whole cluster dies: traffic keeps flowing on the last config, the source is down.
    etcd.kill_all();
    for r in &replicas[..2] {
        r.wait_metrics("config source down", |s| {
            s.value("anygate_config_source_up", &[]) == 0.0
        });
        assert_eq!(r.get("/v4").status, 200);
        assert_eq!(r.generation(), four);
    }
    // A replica started now serves from its cache: the newest document it had served.
    replicas[2].try_run().expect("starts from its cache");
    assert_eq!(
        replicas[2].get("/v2").status,
        200,
        "{}",
        replicas[2].stderr()
    );
    assert_eq!(replicas[2].generation(), two);
    assert_eq!(
        replicas[2].scrape().value("anygate_config_source_up", &[]),
        0.0
    );
    assert!(
        replicas[2].stderr().contains("starting from the cache"),
        "{}",
        replicas[2].stderr()
    );

    // etcd comes back: every replica converges on the newest revision. Replica 2's watch
    // starts after revision 2, which was compacted: it reads the key again.
    etcd.restart_all();
    for r in &replicas {
        r.wait_status("/v4", 200);
        r.wait_metrics("config source up", |s| {
            s.value("anygate_config_source_up", &[]) == 1.0
        });
        assert_eq!(r.generation(), four);
    }
    assert!(
        replicas[2]
            .stderr()
            .contains(&format!("compacted revision {} ", two + 1)),
        "{}",
        replicas[2].stderr()
    );
    let five = op.push_ok(&doc(5, up.addr()));
    for r in &replicas {
        r.wait_status("/v5", 200);
        assert_eq!(r.generation(), five);
        assert_eq!(
            r.scrape()
                .value("anygate_config_reloads_total", &[("result", "failure")]),
            0.0
        );
    }
}

#[test]
fn no_etcd_and_no_cache_refuses_to_start() {
    // Nothing listens on this port.
    let dead = super::common::upstream::closed_port();
    let endpoints = vec![format!("http://{dead}")];
    let mut r = Replica::prepare(&bootstrap(&endpoints), &[]);
    let err = r.try_run().expect_err("must refuse to start");
    assert!(
        err.contains(&format!("cannot reach etcd at http://{dead}"))
            && err.contains("Connection refused")
            && err.contains("no usable cache at")
            && err.contains("refusing to start"),
        "{err}"
    );
    // The operator's commands say the same.
    let op = Operator::new(&endpoints);
    let (code, _, err) = op.config(&["history"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read etcd key") && err.contains("Connection refused"),
        "{err}"
    );
}

#[test]
fn etcd_with_authentication() {
    // Tokens that expire after a second without use: the replica must authenticate again.
    let etcd = Etcd::start_with(1, &["--auth-token-ttl", "1"]);
    let up = Upstream::start(Behavior::Echo);
    etcd.ctl_ok(
        &[
            "user",
            "add",
            "root",
            "--new-user-password=root-pw",
            "--interactive=false",
        ],
        None,
    );
    etcd.ctl_ok(&["user", "grant-role", "root", "root"], None);
    etcd.ctl_ok(&["auth", "enable"], None);
    let template = bootstrap(&etcd.endpoints()).replace(
        "    cache: config.cache\n",
        "    cache: config.cache\n    username_env: ETCD_USER\n    password_env: ETCD_PASSWORD\n",
    );
    let mut op = Operator::with_bootstrap(&template);

    // A wrong password is refused with etcd's reason; nothing is written.
    op.env = vec![
        ("ETCD_USER".into(), "root".into()),
        ("ETCD_PASSWORD".into(), "wrong".into()),
    ];
    let (code, _, err) = op.push(&doc(1, up.addr()), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("authentication failed"), "{err}");

    op.env[1].1 = "root-pw".into();
    let first = op.push_ok(&doc(1, up.addr()));
    let env = [("ETCD_USER", "root"), ("ETCD_PASSWORD", "root-pw")];
    let r = Replica::start(&template, &env);
    r.wait_status("/v1", 200);
    assert_eq!(r.generation(), first);
    // Let the replica's token expire (its health check runs every 2 s), then push again.
    std::thread::sleep(Duration::from_secs(3));
    let second = op.push_ok(&doc(2, up.addr()));
    r.wait_status("/v2", 200);
    assert_eq!(r.generation(), second);
    r.wait_metrics("source up", |s| {
        s.value("anygate_config_source_up", &[]) == 1.0
    });
}
