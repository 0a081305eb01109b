//! One anygate replica: `anygate run -c boot.yaml` in a directory of its own that outlives
//! the process (its cache is there), so it can be killed and started again.

use super::common::gateway::{anygate_bin, free_ports};
use super::common::http::{get, Response};
use super::common::prom::{scrape, Scrape};
use super::DEADLINE;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Replica {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Only listened on when the config uses `@HTTPS@`.
    pub https: SocketAddr,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

impl Replica {
    /// Writes `config` (with `@HTTP@`, `@ADMIN@` and `@DIR@` filled in) as `anygate.yaml` in
    /// a new directory and starts the gateway on it.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Replica {
        let mut r = Replica::prepare(config, env);
        if let Err(e) = r.try_run() {
            panic!("{e}");
        }
        r
    }

    /// Like [`Replica::start`] without starting it.
    pub fn prepare(config: &str, env: &[(&str, &str)]) -> Replica {
        let dir = tempfile::Builder::new()
            .prefix("anygate-replica-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 3);
        let (http, admin, https) = (loopback(ports[0]), loopback(ports[1]), loopback(ports[2]));
        let text = config
            .replace("@HTTPS@", &https.to_string())
            .replace("@HTTP@", &http.to_string())
            .replace("@ADMIN@", &admin.to_string())
            .replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(dir.path().join("anygate.yaml"), text).expect("write config");
        Replica {
            http,
            admin,
            https,
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            starts: 0,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> PathBuf {
        self.path(&format!("stderr.{}.log", self.starts))
    }

    /// Starts the process and waits for its HTTP and admin listeners; `Err` is its output
    /// when it exits instead.
    pub fn try_run(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let mut cmd = Command::new(anygate_bin());
        cmd.args(["run", "-c", "anygate.yaml"])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.log()).expect("log"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn anygate"));
        let deadline = Instant::now() + DEADLINE;
        for addr in [self.http, self.admin] {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                    self.child = None;
                    return Err(format!("anygate exited ({st}):\n{}", self.stderr()));
                }
                assert!(
                    Instant::now() < deadline,
                    "{addr} never listened:\n{}",
                    self.stderr()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What this run of the process logged.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log()).unwrap_or_default()).into_owned()
    }

    /// SIGKILL: no goodbye, as a crash or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn get(&self, path: &str) -> Response {
        get(self.http, "gw.test", path)
    }

    pub fn scrape(&self) -> Scrape {
        scrape(self.admin)
    }

    /// `anygate_config_generation`.
    pub fn generation(&self) -> i64 {
        self.scrape().value("anygate_config_generation", &[]) as i64
    }

    /// Polls until GET `path` answers `status`; panics with the log after [`DEADLINE`].
    pub fn wait_status(&self, path: &str, status: u16) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.get(path).status;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} on {} still answers {got}, not {status}:\n{}",
                self.http,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls the metrics until `done` holds.
    pub fn wait_metrics(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.scrape();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen on {}:\n{}\n{}",
                self.admin,
                s.text,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
