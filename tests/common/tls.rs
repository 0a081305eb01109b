//! TLS for the tests: a throw-away CA that issues certificates into a temp dir (rcgen), a
//! handshake-only client that reports what the server presented, and `curl` for whole
//! requests over HTTP/2 or HTTP/1.1.

use pingora_core::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA; its certificate is `ca.pem` in [`TestCa::dir`].
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "anygate test CA");
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::Builder::new()
            .prefix("anygate-certs-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write ca.pem");
        TestCa { issuer, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `names` as `<stem>.pem` + `<stem>.key` (overwriting).
    pub fn issue(&self, stem: &str, names: &[&str]) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        std::fs::write(self.dir.path().join(format!("{stem}.pem")), cert.pem()).expect("write");
        std::fs::write(
            self.dir.path().join(format!("{stem}.key")),
            key.serialize_pem(),
        )
        .expect("write");
    }
}

/// What a TLS server presented.
#[derive(Debug)]
pub struct Handshake {
    /// The DNS names of the certificate.
    pub names: Vec<String>,
    /// The protocol chosen by ALPN.
    pub alpn: Option<String>,
}

/// Completes a handshake with `addr`, sending `sni` (none if `None`) and offering `alpn`.
/// The certificate is not verified: the caller checks its names.
pub fn handshake(addr: SocketAddr, sni: Option<&str>, alpn: &[&str]) -> Result<Handshake, String> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    if !alpn.is_empty() {
        let mut wire = Vec::new();
        for p in alpn {
            wire.push(p.len() as u8);
            wire.extend_from_slice(p.as_bytes());
        }
        b.set_alpn_protos(&wire).map_err(|e| e.to_string())?;
    }
    let connector = b.build();
    let mut cfg = connector.configure().map_err(|e| e.to_string())?;
    cfg.set_verify_hostname(false);
    cfg.set_use_server_name_indication(sni.is_some());
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let tls = cfg
        .connect(sni.unwrap_or("no-sni.invalid"), tcp)
        .map_err(|e| e.to_string())?;
    let cert = tls.ssl().peer_certificate().ok_or("no certificate")?;
    let names = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let alpn = tls
        .ssl()
        .selected_alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    Ok(Handshake { names, alpn })
}

/// What `curl` reported.
#[derive(Debug)]
pub struct Curl {
    pub exit: i32,
    pub body: String,
    /// `%{http_version}`: `2`, `1.1`, or `0` when nothing was received.
    pub version: String,
    pub status: u16,
    pub stderr: String,
}

/// `curl https://<host>:<port><path>` to 127.0.0.1, verifying against `ca`; `extra` args
/// (e.g. `--http1.1`) are added. Bounded by `--max-time 20`.
pub fn curl(https: SocketAddr, host: &str, path: &str, ca: &Path, extra: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", https.port()))
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", https.port()))
        .stdin(Stdio::null())
        .output()
        .expect("run curl (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut tail = tail.split(' ');
    Curl {
        exit: out.status.code().unwrap_or(-1),
        body: body.to_string(),
        version: tail.next().unwrap_or("").to_string(),
        status: tail.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
