//! Let's Encrypt's test CA, pebble (Debian's package), with pebble-challtestsrv as its DNS
//! (every name is 127.0.0.1, no IPv6), on ephemeral loopback ports, killed on drop.

use crate::common::free_ports;
use crate::common::tls::TestCa;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Pebble {
    /// Its own HTTPS certificate's CA (the gateway's `ca_roots`).
    pub tls_ca: TestCa,
    pub directory: String,
    pub management: SocketAddr,
    listen: SocketAddr,
    dns_port: u16,
    dns_management: SocketAddr,
    dir: tempfile::TempDir,
    pebble: Option<Child>,
    dns: Option<Child>,
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is not installed: .ci/run installs Debian's `pebble` package (apt-get install pebble)"
    );
}

fn wait_tcp(addr: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} never listened on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

impl Pebble {
    /// Starts pebble validating on the gateway's `http` and `https` ports; certificates live
    /// `validity` seconds (pebble's default, 5 years, when `None`).
    pub fn start(http: u16, https: u16, validity: Option<u64>) -> Pebble {
        need("pebble");
        need("pebble-challtestsrv");
        let dir = tempfile::Builder::new()
            .prefix("anygate-pebble-")
            .tempdir()
            .expect("temp dir");
        let tls_ca = TestCa::new();
        tls_ca.issue("pebble", &["localhost", "127.0.0.1"]);
        let ports = free_ports(IpAddr::V4(Ipv4Addr::LOCALHOST), 4);
        let at = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        let (listen, management, dns_port, dns_management) =
            (at(ports[0]), at(ports[1]), ports[2], at(ports[3]));
        let validity = validity
            .map(|v| format!(",\n    \"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        let config = format!(
            r#"{{
  "pebble": {{
    "listenAddress": "{listen}",
    "managementListenAddress": "{management}",
    "certificate": "{cert}",
    "privateKey": "{key}",
    "httpPort": {http},
    "tlsPort": {https},
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false{validity}
  }}
}}"#,
            cert = tls_ca.dir().join("pebble.pem").display(),
            key = tls_ca.dir().join("pebble.key").display(),
        );
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config).expect("pebble.json");

        let dns_log = dir.path().join("challtestsrv.log");
        let dns = spawn(
            Command::new("pebble-challtestsrv").args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &dns_management.to_string(),
            ]),
            &dns_log,
        );
        let mut p = Pebble {
            tls_ca,
            directory: format!("https://{listen}/dir"),
            management,
            listen,
            dns_port,
            dns_management,
            dir,
            pebble: None,
            dns: Some(dns),
        };
        wait_tcp(dns_management, "pebble-challtestsrv", &dns_log);
        p.launch();
        p
    }

    fn launch(&mut self) {
        let pebble_log = self.dir.path().join("pebble.log");
        self.pebble = Some(spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(self.dir.path().join("pebble.json"))
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{}", self.dns_port))
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
            &pebble_log,
        ));
        wait_tcp(self.listen, "pebble", &pebble_log);
        wait_tcp(
            self.management,
            "pebble's management interface",
            &pebble_log,
        );
    }

    /// Starts the CA again on the same ports: a new root, and no memory of accounts.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    #[allow(dead_code)]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// pebble's root of this launch (it makes a new one each time), as a PEM file.
    pub fn root(&self) -> PathBuf {
        let path = self.dir.path().join("root.pem");
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(self.tls_ca.ca_pem())
            .arg(format!("https://{}/roots/0", self.management))
            .output()
            .expect("run curl");
        assert!(
            out.status.success() && out.stdout.starts_with(b"-----BEGIN CERTIFICATE-----"),
            "GET /roots/0: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, &out.stdout).expect("root.pem");
        path
    }

    /// Makes challtestsrv answer `host` with `ip` (a loopback address).
    pub fn add_a(&self, host: &str, ip: &str) {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "-d"])
            .arg(format!(r#"{{"host":"{host}.","addresses":["{ip}"]}}"#))
            .arg(format!("http://{}/add-a", self.dns_management))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "add-a: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the CA (the DNS stays up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
