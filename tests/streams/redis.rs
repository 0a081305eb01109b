//! A real database through a stream: redis-server behind the gateway, redis-cli and
//! redis-benchmark in front; the stream metrics and log lines that traffic leaves.

use super::*;
use std::process::{Child, Command, Output, Stdio};

/// A real redis-server on a free loopback port, no files, killed on drop.
pub struct Redis {
    pub addr: SocketAddr,
    child: Child,
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: install Debian's redis-server and redis-tools (.ci/run should install them)"
    );
    Command::new(name)
}

impl Redis {
    pub fn start() -> Redis {
        let addr = port_on("127.0.0.1");
        let child = tool("redis-server")
            .args(["--port", &addr.port().to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + DEADLINE;
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server never listened on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Redis { addr, child }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cli(port: u16, args: &[&str]) -> Output {
    tool("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

fn cli_text(port: u16, args: &[&str]) -> String {
    let out = cli(port, args);
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_cli_and_benchmark_through_a_stream() {
    let redis = Redis::start();
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: redis-a, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.1/32] }}\n",
        redis.addr.port()
    );
    let gw = start(&config(redis.addr, redis.addr, &streams, "1s"), &[listen]);

    // Every series exists from the start, at 0.
    let s0 = metrics(&gw);
    for r in ["accepted", "denied", "limited", "upstream_failed"] {
        assert_eq!(connections(&s0, "redis-a", r), 0.0, "{r}");
    }
    assert_eq!(
        s0.value("anygate_stream_active", &[("stream", "redis-a")]),
        0.0
    );
    for d in ["in", "out"] {
        assert_eq!(
            s0.value(
                "anygate_stream_bytes_total",
                &[("stream", "redis-a"), ("direction", d)]
            ),
            0.0
        );
    }

    let port = listen.port();
    assert_eq!(cli_text(port, &["PING"]), "PONG");
    assert_eq!(cli_text(port, &["SET", "through", "the-stream"]), "OK");
    assert_eq!(cli_text(port, &["GET", "through"]), "the-stream");
    // The key really is in the server behind the stream.
    assert_eq!(
        cli_text(redis.addr.port(), &["GET", "through"]),
        "the-stream"
    );

    let out = tool("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "-n", "20000"])
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {text}\n{err}"
    );
    // `-q` prints one `NAME: N requests per second` line per test once it completes.
    let done: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("requests per second"))
        .collect();
    eprintln!("redis-benchmark through the stream:\n{}", done.join("\n"));
    assert!(done.len() >= 15, "every test completes:\n{text}\n{err}");
    assert!(
        !text.to_ascii_lowercase().contains("error") && !err.to_ascii_lowercase().contains("error"),
        "no errors:\n{text}\n{err}"
    );
    assert!(
        cli_text(redis.addr.port(), &["DBSIZE"])
            .parse::<u64>()
            .unwrap_or(0)
            > 1,
        "the benchmark's keys reached the server"
    );

    // Counted, and every connection closed again.
    let s = scrape_until(&gw, "all stream connections closed", |s| {
        s.get("anygate_stream_active", &[("stream", "redis-a")]) == Some(0.0)
            && s.get(
                "anygate_stream_connections_total",
                &[("stream", "redis-a"), ("result", "accepted")],
            )
            .is_some_and(|n| n >= 54.0)
    });
    assert_eq!(connections(&s, "redis-a", "denied"), 0.0);
    assert_eq!(connections(&s, "redis-a", "upstream_failed"), 0.0);
    let bytes = |d| {
        s.value(
            "anygate_stream_bytes_total",
            &[("stream", "redis-a"), ("direction", d)],
        )
    };
    assert!(bytes("in") > 20000.0 * 10.0, "in: {}", bytes("in"));
    assert!(bytes("out") > 20000.0 * 4.0, "out: {}", bytes("out"));
    // One log line per closed connection, with client, bytes and how it ended.
    let log = wait_log(&gw, "stream=redis-a client=127.0.0.1:", 54);
    // redis-cli's PING: "PING" as a 14-byte command, "+PONG\r\n" back.
    let line = log
        .lines()
        .find(|l| l.contains("stream=redis-a") && l.contains("bytes_in=14 bytes_out=7"))
        .unwrap_or_else(|| panic!("no line for the PING connection:\n{log}"));
    for field in [
        "instance=up-a",
        "result=accepted",
        "end=closed",
        "duration=",
        "bytes_in=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn an_unreachable_instance_is_counted_and_the_client_closed() {
    let dead = port_on("127.0.0.1"); // nothing listens there
    let listen = port_on("127.0.0.1");
    let streams = format!(
        "  - {{ name: gone, listen: \"{listen}\", instance: up-a, port: {}, allow: [127.0.0.1/32] }}\n",
        dead.port()
    );
    let gw = start(&config(dead, dead, &streams, "1s"), &[listen]);
    let mut c = connect_from("127.0.0.1", listen);
    assert!(closed_by_peer(&mut c));
    let s = scrape_until(&gw, "upstream_failed counted", |s| {
        s.get(
            "anygate_stream_connections_total",
            &[("stream", "gone"), ("result", "upstream_failed")],
        ) == Some(1.0)
    });
    assert_eq!(connections(&s, "gone", "accepted"), 0.0);
    wait_log(&gw, "stream=gone client=127.0.0.1:", 1);
    assert!(gw.stderr().contains("result=upstream_failed"));
}
