//! Who gets through and for how long: the allowlist, the connection limit, the idle timeout,
//! and the PROXY v2 header that tells the instance who the client is.

use super::upstream::{Instance, Mode};
use super::*;

const ECHO: Mode = Mode::Echo { greeting: None };

#[test]
fn a_peer_outside_allow_is_closed_at_once_and_never_reaches_the_instance() {
    let inst = Instance::start(ECHO, false);
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: fw, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.1/32] }}\n",
        inst.port()
    );
    let gw = start(&config(inst.addr, inst.addr, &streams, "1s"), &[listen]);

    let mut denied = connect_from("127.0.0.2", listen);
    // Whatever the client sends, it gets nothing back but the close.
    let _ = denied.write_all(b"hello?");
    assert!(closed_by_peer(&mut denied), "the denied peer is closed");
    let s = scrape_until(&gw, "denied counted", |s| {
        s.get(
            "anygate_stream_connections_total",
            &[("stream", "fw"), ("result", "denied")],
        ) == Some(1.0)
    });
    assert_eq!(connections(&s, "fw", "accepted"), 0.0);
    let log = wait_log(&gw, "stream=fw client=127.0.0.2:", 1);
    assert!(log.contains("result=denied"), "{log}");

    // An allowed client goes through: the instance's count below is the real one.
    let mut ok = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut ok, b"ping").unwrap(), b"ping");
    assert_eq!(
        inst.accepts(),
        1,
        "only the allowed client reached the instance"
    );
}

#[test]
fn connections_past_max_connections_are_closed_at_once() {
    let inst = Instance::start(ECHO, false);
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: lim, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.1], max_connections: 2 }}\n",
        inst.port()
    );
    let gw = start(&config(inst.addr, inst.addr, &streams, "1s"), &[listen]);
    let mut a = connect_from("127.0.0.1", listen);
    let mut b = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut a, b"a").unwrap(), b"a");
    assert_eq!(echo(&mut b, b"b").unwrap(), b"b");
    let mut c = connect_from("127.0.0.1", listen);
    assert!(closed_by_peer(&mut c), "the third connection is closed");
    let s = scrape_until(&gw, "limited counted", |s| {
        s.get(
            "anygate_stream_connections_total",
            &[("stream", "lim"), ("result", "limited")],
        ) == Some(1.0)
    });
    assert_eq!(connections(&s, "lim", "accepted"), 2.0);
    assert_eq!(s.value("anygate_stream_active", &[("stream", "lim")]), 2.0);
    assert_eq!(inst.accepts(), 2);
    // The two open ones still work; closing one frees its place.
    assert_eq!(echo(&mut b, b"still").unwrap(), b"still");
    drop(a);
    scrape_until(&gw, "a place freed", |s| {
        s.get("anygate_stream_active", &[("stream", "lim")]) == Some(1.0)
    });
    let mut d = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut d, b"d").unwrap(), b"d");
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let inst = Instance::start(ECHO, false);
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: quiet, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.1], idle_timeout: 300ms }}\n",
        inst.port()
    );
    let gw = start(&config(inst.addr, inst.addr, &streams, "1s"), &[listen]);
    let mut c = connect_from("127.0.0.1", listen);
    assert_eq!(echo(&mut c, b"hi").unwrap(), b"hi");
    // Then silence: the gateway closes both sides.
    assert!(closed_by_peer(&mut c), "closed after the idle timeout");
    let log = wait_log(&gw, "stream=quiet client=", 1);
    assert!(log.contains("end=idle_timeout duration="), "{log}");
    assert!(log.contains("bytes_in=2 bytes_out=2"), "{log}");
    scrape_until(&gw, "no connection left", |s| {
        s.get("anygate_stream_active", &[("stream", "quiet")]) == Some(0.0)
    });
}

#[test]
fn proxy_v2_tells_the_instance_the_client_address_over_ipv4_and_ipv6() {
    let inst = Instance::start(ECHO, true);
    let v4 = port_on("127.0.0.1");
    let v6 = port_on("::1");
    let streams = format!(
        "  - {{ name: pp4, listen: \"{v4}\", instance: up-a, port: {p}, allow: [127.0.0.1], proxy_protocol: v2 }}\n  - {{ name: pp6, listen: \"{v6}\", instance: up-a, port: {p}, allow: [\"::1/128\"], proxy_protocol: v2 }}\n",
        p = inst.port()
    );
    let _gw = start(&config(inst.addr, inst.addr, &streams, "1s"), &[v4, v6]);

    let mut c4 = connect_from("127.0.0.1", v4);
    assert_eq!(
        echo(&mut c4, b"four").unwrap(),
        b"four",
        "the header is not echoed back"
    );
    let h = inst.headers();
    let h4 = h[0].as_ref().expect("a valid header");
    assert_eq!(h4.family, 0x11, "TCP over IPv4");
    assert_eq!(
        h4.source,
        c4.local_addr().unwrap(),
        "the client's address and port"
    );
    assert_eq!(h4.destination, v4, "the address the client connected to");

    let mut c6 = connect_from("::1", v6);
    assert_eq!(echo(&mut c6, b"six").unwrap(), b"six");
    let h = inst.headers();
    let h6 = h[1].as_ref().expect("a valid header");
    assert_eq!(h6.family, 0x21, "TCP over IPv6");
    assert_eq!(h6.source, c6.local_addr().unwrap());
    assert_eq!(h6.destination, v6);
}
