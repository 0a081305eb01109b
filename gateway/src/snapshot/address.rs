//! Instance addresses: an IP, or a host name resolved when the config is compiled (at start
//! and on every reload), as nginx resolves `upstream` servers.

use super::{valid_hostname, Errors, Purpose};
use crate::config::Mark;
use std::net::{SocketAddr, ToSocketAddrs};

/// An instance address as written: an IP with a port, or a name still to resolve.
enum Address {
    Ip(SocketAddr),
    Name(String, u16),
}

/// `10.0.0.5` (port 80), `10.0.0.5:8080`, `[::1]:8080`, `::1`, `backend.local:8080`.
fn parse_address(s: &str) -> Result<Address, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Address::Ip(a));
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(Address::Ip(SocketAddr::new(ip, 80)));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in address `{s}`"))?,
        ),
        None => (s, 80),
    };
    if !valid_hostname(host) {
        return Err(format!(
            "invalid address `{s}` (write an IP, IP:port or host:port)"
        ));
    }
    Ok(Address::Name(host.to_string(), port))
}

pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{host}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
    }
}

/// Parses an instance address and resolves a name (with the system resolver, first answer).
/// Names are resolved when a config is compiled: at start and on every reload.
pub fn parse_instance_address(s: &str) -> Result<SocketAddr, String> {
    match parse_address(s)? {
        Address::Ip(a) => Ok(a),
        Address::Name(host, port) => resolve(&host, port),
    }
}

/// An instance's address; `None` (after reporting) when it cannot be used. In `Check`, a name
/// that does not resolve here is a warning and the instance gets a stand-in address.
pub(super) fn instance_address(e: &mut Errors, mark: Mark, s: &str) -> Option<SocketAddr> {
    let (host, port) = match parse_address(s) {
        Ok(Address::Ip(a)) => return Some(a),
        Ok(Address::Name(host, port)) => (host, port),
        Err(msg) => {
            e.at(mark, msg);
            return None;
        }
    };
    match (e.resolve)(&host, port) {
        Ok(a) => Some(a),
        Err(msg) if e.purpose == Purpose::Check => {
            e.warn(
                mark,
                format!("{msg} (here; `run` resolves names at start and on every reload, and refuses a config whose names do not resolve)"),
            );
            Some(SocketAddr::new(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
                port,
            ))
        }
        Err(msg) => {
            e.at(mark, msg);
            None
        }
    }
}
