//! A TLS client that verifies what the gateway serves against pebble's root, as a browser
//! would: chain and name.

use pingora_core::tls::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The certificate a verified handshake got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub serial: String,
    pub names: Vec<String>,
}

/// Connects to `addr` with SNI `host`, verifies the chain against `root` and the name, and,
/// when `path` is given, sends `GET path` over HTTP/1.1 and returns the status code.
pub fn get(
    addr: SocketAddr,
    host: &str,
    root: &Path,
    path: Option<&str>,
) -> Result<(Served, u16), String> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_ca_file(root).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::PEER);
    b.set_alpn_protos(b"\x08http/1.1")
        .map_err(|e| e.to_string())?;
    let connector = b.build();
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(host, tcp)
        .map_err(|e| format!("handshake: {e}"))?;
    let cert = tls.ssl().peer_certificate().ok_or("no certificate")?;
    let serial = cert
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
        .map_err(|e| e.to_string())?;
    let names = cert
        .subject_alt_names()
        .map(|n| {
            n.iter()
                .filter_map(|g| g.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let served = Served { serial, names };
    let Some(path) = path else {
        return Ok((served, 0));
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    // A close_notify-less end after the full response still counts as the end.
    if let Err(e) = tls.read_to_end(&mut answer) {
        if answer.is_empty() {
            return Err(format!("read: {e}"));
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    Ok((served, status))
}
