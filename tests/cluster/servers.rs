//! Real etcd members and redis-server on loopback: fresh ports, data in a temp dir, killed
//! by pid at the end (or by the test, to make the faults).

use super::common::gateway::free_ports;
use super::DEADLINE;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// `name` from PATH, or a panic that says who should have installed it.
pub fn tool(name: &str, package: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed: install Debian's {package} (.ci/run should install it)"
    );
    Command::new(name)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
    extra: Vec<String>,
}

impl Etcd {
    pub fn start(n: usize) -> Etcd {
        Etcd::start_with(n, &[])
    }

    /// With extra `etcd` flags.
    pub fn start_with(n: usize, extra: &[&str]) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("anygate-etcd-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("n{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            dir,
            members,
            initial,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy();
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let data: PathBuf = self.dir.path().join(&self.members[i].name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("etcd log");
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = tool("etcd", "etcd-server")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "anygate-test"])
            .args(["--initial-cluster-state", "new"])
            // Quick elections: a killed leader is replaced in about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// `http://127.0.0.1:PORT` of every member, starting with member `first`.
    pub fn endpoints_from(&self, first: usize) -> Vec<String> {
        let n = self.members.len();
        (0..n)
            .map(|k| format!("http://127.0.0.1:{}", self.members[(first + k) % n].client))
            .collect()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints_from(0)
    }

    /// SIGKILL one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts a killed member again on its data dir and ports.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.restart(i);
        }
        self.wait_healthy();
    }

    /// `etcdctl` against the running members.
    pub fn ctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect();
        let mut cmd = tool("etcdctl", "etcd-client");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", live.join(",")))
            .arg("--command-timeout=4s")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            Some(bytes) => {
                use std::io::Write;
                cmd.stdin(Stdio::piped());
                let mut child = cmd.spawn().expect("spawn etcdctl");
                let mut pipe = child.stdin.take().expect("stdin");
                pipe.write_all(bytes).expect("write to etcdctl");
                drop(pipe);
                child.wait_with_output().expect("etcdctl")
            }
            None => cmd.stdin(Stdio::null()).output().expect("etcdctl"),
        }
    }

    /// `etcdctl ...` that must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.ctl(args, stdin);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls until every running member answers a linearizable read.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.ctl(&["endpoint", "health"], None);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd never became healthy: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let p = self.dir.path().join(format!("{}.log", m.name));
                format!(
                    "--- {}:\n{}",
                    m.name,
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// A real redis-server on loopback (no files), restartable on the same port.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 1)[0];
        let mut r = Redis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on its port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let child = tool("redis-server", "redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while TcpStream::connect(loopback(self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server never listened on {}",
                self.port
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
