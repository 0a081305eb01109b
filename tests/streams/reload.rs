//! Streams across a reload (new connections follow the new allowlist and target; open ones a
//! new allowlist refuses are closed) and across a graceful upgrade (open streams keep working
//! in the old process until they end).

use super::upstream::{Instance, Mode};
use super::*;
use crate::common::process::Process;

fn stream(listen: SocketAddr, instance: &str, port: u16, allow: &str) -> String {
    format!(
        "  - {{ name: s, listen: \"{listen}\", instance: {instance}, port: {port}, allow: {allow} }}\n"
    )
}

/// Reads the instance's greeting: which instance this connection reached.
fn greeting(c: &mut TcpStream) -> String {
    let mut g = [0u8; 2];
    c.read_exact(&mut g).expect("greeting");
    String::from_utf8_lossy(&g).into_owned()
}

#[test]
fn a_reload_changes_the_allowlist_and_target_for_new_connections() {
    let a = Instance::start(
        Mode::Echo {
            greeting: Some("A\n"),
        },
        false,
    );
    let b = Instance::start(
        Mode::Echo {
            greeting: Some("B\n"),
        },
        false,
    );
    let listen = port_on("127.0.0.1");
    let first = config(
        a.addr,
        b.addr,
        &stream(listen, "up-a", a.port(), "[127.0.0.1/32, 127.0.0.2/32]"),
        "1s",
    );
    let gw = start(&first, &[listen]);
    let mut old1 = connect_from("127.0.0.1", listen);
    let mut old2 = connect_from("127.0.0.2", listen);
    assert_eq!(greeting(&mut old1), "A\n");
    assert_eq!(greeting(&mut old2), "A\n");

    // Only 127.0.0.2 may connect now, and the stream goes to instance B.
    gw.write_config(&config(
        a.addr,
        b.addr,
        &stream(listen, "up-b", b.port(), "[127.0.0.2/32]"),
        "1s",
    ));
    wait_log(&gw, "reloaded: generation 2", 1);

    let mut new2 = connect_from("127.0.0.2", listen);
    assert_eq!(
        greeting(&mut new2),
        "B\n",
        "a new connection goes to the new target"
    );
    assert_eq!(echo(&mut new2, b"new").unwrap(), b"new");
    let mut new1 = connect_from("127.0.0.1", listen);
    assert!(closed_by_peer(&mut new1), "127.0.0.1 is no longer allowed");

    // Open connections: the one the new allowlist refuses is closed; the other keeps its
    // target until it ends.
    assert!(
        closed_by_peer(&mut old1),
        "a revoked client's open stream is closed"
    );
    assert_eq!(echo(&mut old2, b"old").unwrap(), b"old");
    let log = wait_log(&gw, "end=revoked", 1);
    let revoked = log.lines().find(|l| l.contains("end=revoked")).unwrap();
    assert!(revoked.contains("client=127.0.0.1:"), "{revoked}");
    assert_eq!(a.accepts(), 2);
    assert_eq!(b.accepts(), 1);
}

#[test]
fn graceful_upgrade_keeps_an_open_stream_working_until_it_ends() {
    let inst = Instance::start(Mode::Echo { greeting: None }, false);
    let listen = port_on("127.0.0.1");
    let cfg = config(
        inst.addr,
        inst.addr,
        &stream(listen, "up-a", inst.port(), "[127.0.0.1/32]"),
        "3s",
    );
    let mut old = start(&cfg, &[listen]);
    let mut open = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut open, b"before").unwrap(), b"before");
    let mut left_open = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut left_open, b"x").unwrap(), b"x");

    let sock = old.dir().join("upgrade.sock");
    let new = Process::spawn(&["run", "-u", "-c", old.config_path().to_str().unwrap()]);
    let deadline = Instant::now() + DEADLINE;
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "no upgrade socket: {}",
            new.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
    old.signal("QUIT");
    new.wait_stderr("stream s: listening on");
    // The old process stops accepting (after handing over) and drains. Its accept loop ends
    // a moment after the broadcast: wait for it, or a new connection may still be its own.
    assert!(
        old.wait_output(&format!("Shutting down {listen}"), DEADLINE),
        "{}",
        old.stderr()
    );
    // New connections are the new process's...
    let mut fresh = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut fresh, b"fresh").unwrap(), b"fresh");
    // ...while the open stream still works in the old one, until the client ends it.
    assert_eq!(echo(&mut open, b"during").unwrap(), b"during");
    drop(open);
    wait_log(&old, "end=closed", 1);
    // A stream still open when the grace period runs out is closed by the old process.
    assert!(
        closed_by_peer(&mut left_open),
        "closed at the end of the grace period"
    );
    assert!(old.wait_exit(DEADLINE).is_some(), "the old process exits");
    let log = old.stderr();
    assert!(log.contains("end=shutdown"), "{log}");
    assert_eq!(echo(&mut fresh, b"after").unwrap(), b"after");
    drop(new);
}

#[test]
fn listener_changes_wait_for_a_restart_and_a_removed_stream_refuses() {
    let inst = Instance::start(Mode::Echo { greeting: None }, false);
    let (l1, l2) = (port_on("127.0.0.1"), port_on("127.0.0.1"));
    let gw = start(
        &config(
            inst.addr,
            inst.addr,
            &stream(l1, "up-a", inst.port(), "[127.0.0.1/32]"),
            "1s",
        ),
        &[l1],
    );
    let mut open = connect_from("127.0.0.1", l1);
    assert_eq!(echo(&mut open, b"1").unwrap(), b"1");
    // The stream moves to another address: that needs a restart.
    gw.write_config(&config(
        inst.addr,
        inst.addr,
        &stream(l2, "up-a", inst.port(), "[127.0.0.1/32]"),
        "1s",
    ));
    wait_log(&gw, "reloaded: generation 2", 1);
    assert!(
        gw.stderr().contains("stream listeners changed"),
        "{}",
        gw.stderr()
    );
    assert!(
        TcpStream::connect(l2).is_err(),
        "the new address does not listen before a restart"
    );
    // The old address is still bound, but its stream is gone from the config: refused, and
    // the connection that was open is closed too.
    let mut refused = connect_from("127.0.0.1", l1);
    assert!(closed_by_peer(&mut refused));
    assert!(closed_by_peer(&mut open));
    assert_eq!(inst.accepts(), 1);
}
