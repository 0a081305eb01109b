//! `streams:` (SPEC §14): the file format, and its compiled, checked form in the snapshot.

use crate::config::units::Dur;
use crate::config::{ConfigError, FileConfig, Item};
use crate::snapshot::Listeners;
use anygate_plugins::net::{Cidr, CidrSet};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What an idle stream is given before both sides are closed, when `idle_timeout` is not
/// written (nginx's `proxy_timeout` default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// One element of `streams:`, as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub listen: String,
    pub instance: String,
    pub port: i64,
    /// Required; `Option` so that a missing list gets our own message.
    pub allow: Option<Vec<Cidr>>,
    pub max_connections: Option<i64>,
    pub idle_timeout: Option<Dur>,
    pub proxy_protocol: Option<ProxyProtocol>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    V2,
}

/// One stream, checked: everything a new connection needs.
#[derive(Debug)]
pub struct Spec {
    pub name: String,
    pub listen: SocketAddr,
    pub instance: String,
    /// The instance's address with the stream's port.
    pub upstream: SocketAddr,
    pub allow: CidrSet,
    /// `None`: no limit.
    pub max_connections: Option<usize>,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub proxy_protocol: bool,
}

/// Every stream of one config generation.
#[derive(Debug, Default)]
pub struct Streams {
    list: Vec<Arc<Spec>>,
}

impl Streams {
    pub fn get(&self, name: &str) -> Option<&Arc<Spec>> {
        self.list.iter().find(|s| s.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Spec>> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The listeners (name and address): fixed for the life of the process.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.list
            .iter()
            .map(|s| (s.name.clone(), s.listen))
            .collect()
    }
}

/// Whether two listeners cannot both be bound: same port, and the same address or a wildcard
/// that covers the other (`[::]` is dual-stack on Linux, so it covers IPv4 too).
pub fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    match (a.ip(), b.ip()) {
        (x, y) if x == y => true,
        (IpAddr::V6(x), _) | (_, IpAddr::V6(x)) if x.is_unspecified() => true,
        (IpAddr::V4(x), IpAddr::V4(y)) => x.is_unspecified() || y.is_unspecified(),
        _ => false,
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks `streams:` against the rest of the file and compiles it. `instances` are the
/// instances that compiled (id to address); `connect_timeout` is `timeouts.connect`.
pub fn compile(
    file: &FileConfig,
    listeners: &Listeners,
    instances: &HashMap<String, SocketAddr>,
    connect_timeout: Duration,
    errors: &mut Vec<ConfigError>,
) -> Streams {
    let mut out: Vec<Arc<Spec>> = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: Vec<(SocketAddr, &str, usize)> = Vec::new();
    let fixed = [
        ("listen.http", listeners.http),
        ("listen.https", listeners.https),
        ("listen.admin", listeners.admin),
    ];
    for item in &file.streams {
        let before = errors.len();
        let mut err = |key: &str, msg: String| errors.push(file.error(item.mark_of(key), msg));
        let v = &item.value;
        if !valid_name(&v.name) {
            err(
                "name",
                format!(
                    "stream name `{}` may only use letters, digits, `-`, `_` and `.` (64 at most)",
                    v.name
                ),
            );
        } else if let Some(line) = names.get(v.name.as_str()) {
            err(
                "name",
                format!(
                    "stream `{}` is declared twice (first at line {line})",
                    v.name
                ),
            );
        } else {
            names.insert(&v.name, item.at.line);
        }
        let listen = listen_addr(item, &mut err, &fixed, &addrs);
        if let Some(a) = listen {
            addrs.push((a, &v.name, item.mark_of("listen").line));
        }
        let upstream_ip = match instances.get(&v.instance) {
            Some(a) => Some(a.ip()),
            None => {
                if !file.incomplete.instances {
                    err(
                        "instance",
                        format!(
                            "stream names instance `{}`, which is not under `instances`",
                            v.instance
                        ),
                    );
                }
                None
            }
        };
        let port = match u16::try_from(v.port) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                err(
                    "port",
                    format!("port `{}` is not a TCP port (1 to 65535)", v.port),
                );
                None
            }
        };
        let allow = match &v.allow {
            None => {
                err("allow", "a stream needs `allow`: the client CIDRs that may connect (e.g. [203.0.113.0/24]; [0.0.0.0/0, \"::/0\"] opens it to everyone)".into());
                None
            }
            Some(list) if list.is_empty() => {
                err("allow", "`allow` is empty: no client could connect (list the client CIDRs; [0.0.0.0/0, \"::/0\"] opens it to everyone)".into());
                None
            }
            Some(list) => Some(CidrSet::new(list)),
        };
        let max_connections = match v.max_connections {
            None => None,
            Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            Some(n) => {
                err(
                    "max_connections",
                    format!(
                        "`max_connections` must be at least 1 (got {n}); leave it out for no limit"
                    ),
                );
                None
            }
        };
        let idle_timeout = match v.idle_timeout {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(d) if d.0.is_zero() => {
                err("idle_timeout", "`idle_timeout` must be more than 0".into());
                DEFAULT_IDLE_TIMEOUT
            }
            Some(d) => d.0,
        };
        if errors.len() > before {
            continue;
        }
        let (Some(listen), Some(ip), Some(port), Some(allow)) = (listen, upstream_ip, port, allow)
        else {
            continue;
        };
        out.push(Arc::new(Spec {
            name: v.name.clone(),
            listen,
            instance: v.instance.clone(),
            upstream: SocketAddr::new(ip, port),
            allow,
            max_connections,
            idle_timeout,
            connect_timeout,
            proxy_protocol: v.proxy_protocol == Some(ProxyProtocol::V2),
        }));
    }
    Streams { list: out }
}

/// The stream's listen address, checked for clashes with the HTTP listeners and the streams
/// before it.
fn listen_addr(
    item: &Item<StreamConfig>,
    err: &mut impl FnMut(&str, String),
    fixed: &[(&str, Option<SocketAddr>)],
    streams: &[(SocketAddr, &str, usize)],
) -> Option<SocketAddr> {
    let text = &item.value.listen;
    let Ok(addr) = text.parse::<SocketAddr>() else {
        err(
            "listen",
            format!("invalid listen address `{text}` (write e.g. 0.0.0.0:6380 or [::]:6380)"),
        );
        return None;
    };
    if addr.port() == 0 {
        err(
            "listen",
            format!("listen address `{text}` needs a port (1 to 65535)"),
        );
        return None;
    }
    for (key, other) in fixed {
        if let Some(other) = other.filter(|o| clash(addr, *o)) {
            err(
                "listen",
                format!("listen address `{addr}` clashes with `{key}` ({other})"),
            );
            return None;
        }
    }
    for (other, name, line) in streams {
        if clash(addr, *other) {
            err(
                "listen",
                format!(
                    "listen address `{addr}` clashes with stream `{name}` ({other}, line {line})"
                ),
            );
            return None;
        }
    }
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clashes_follow_what_bind_refuses() {
        assert!(clash(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(!clash(a("127.0.0.1:80"), a("127.0.0.1:81")));
        assert!(!clash(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(clash(a("0.0.0.0:80"), a("127.0.0.2:80")));
        assert!(clash(a("10.0.0.1:80"), a("0.0.0.0:80")));
        assert!(clash(a("[::]:80"), a("127.0.0.1:80")), "[::] is dual-stack");
        assert!(clash(a("0.0.0.0:80"), a("[::]:80")));
        assert!(clash(a("[::1]:80"), a("[::]:80")));
        assert!(!clash(a("[::1]:80"), a("0.0.0.0:80")));
        assert!(!clash(a("[::1]:80"), a("127.0.0.1:80")));
    }
}
