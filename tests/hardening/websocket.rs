//! WebSocket (HTTP/1.1 upgrade) through the gateway with an instance that answers `101` at
//! once: the tunnel must carry data both ways, whichever of the upstream's `101` and the
//! end of the (empty) upgrade request the proxy happens to see first (Pingora #946, patched
//! in vendor/pingora-proxy).

use crate::common::*;
use crate::HOST;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

const SESSIONS: usize = 60;

/// An instance that sends `101` the moment it accepts, then echoes every byte.
fn eager_upgrade_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().take(SESSIONS) {
            let Ok(mut s) = stream else { return };
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                // The request header, then the tunnel: echo.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = s.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn an_upgraded_tunnel_carries_data_however_fast_the_upstream_answers() {
    let up = eager_upgrade_upstream();
    let gw = Gateway::start(&format!(
        r#"env: test-env
listen: {{ http: "@HTTP@" }}
server: {{ threads: 2 }}
instances:
  - {{ id: lhins-ws, address: "{up}" }}
routes:
  - {{ domain: default, path: /ws, instance: lhins-ws }}
"#
    ));
    let mut torn = Vec::new();
    for i in 0..SESSIONS {
        let mut s = TcpStream::connect(gw.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /ws/chat HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "session {i}: {head:?}");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let msg = format!("hello {i}");
        s.write_all(msg.as_bytes()).unwrap();
        let mut got = vec![0u8; msg.len()];
        if s.read_exact(&mut got).is_err() || got != msg.as_bytes() {
            torn.push(i);
        }
    }
    assert!(
        torn.is_empty(),
        "tunnels torn down right after the 101: sessions {torn:?} of {SESSIONS}"
    );
}
