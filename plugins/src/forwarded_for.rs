//! `forwarded_for`: the client address of SPEC §6. The client is the TCP peer unless the peer is
//! a trusted proxy; then `X-Forwarded-For` is walked from the right past trusted proxies.
//! Upstream gets `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host`;
//! whatever an untrusted peer sent in their place is dropped.

use crate::ctx::Ctx;
use crate::headers::{
    has_underscore, is_forwarding, remove_request_headers, wire, X_FORWARDED_FOR, X_FORWARDED_HOST,
    X_FORWARDED_PROTO, X_REAL_IP,
};
use crate::net::{canonical, parse_forwarded_entry, write_ip, Cidr, CidrSet};
use crate::plugin::{Flow, Phases, Plugin};
use crate::{BuildCtx, PluginError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::fmt::Write;
use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Peers whose `X-Forwarded-*` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
}

impl Config {
    pub fn build(&self, _cx: &BuildCtx) -> Result<ForwardedFor, PluginError> {
        Ok(ForwardedFor {
            trusted: CidrSet::new(&self.trusted_proxies),
        })
    }
}

pub struct ForwardedFor {
    trusted: CidrSet,
}

/// The outcome of the walk: the client, and the `X-Forwarded-For` value to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Walk {
    pub client: IpAddr,
    pub forwarded_for: String,
}

/// Walks `entries` (as received, left to right) from the right, past trusted proxies. The
/// client is the first untrusted address; an unreadable entry stops the walk at the trusted
/// address to its right. The upstream chain is the entries from the client rightwards, then
/// the peer.
pub fn walk(peer: IpAddr, entries: &[&str], trusted: &CidrSet) -> Walk {
    let peer = canonical(peer);
    let mut chain: Vec<IpAddr> = vec![peer];
    if trusted.contains(peer) {
        for entry in entries.iter().rev() {
            let Some(ip) = parse_forwarded_entry(entry) else {
                break;
            };
            chain.push(ip);
            if !trusted.contains(ip) {
                break;
            }
        }
    }
    let client = *chain.last().unwrap_or(&peer);
    let mut forwarded_for = String::with_capacity(chain.len() * 16);
    for (i, ip) in chain.iter().rev().enumerate() {
        if i > 0 {
            forwarded_for.push_str(", ");
        }
        let _ = write!(forwarded_for, "{ip}");
    }
    Walk {
        client,
        forwarded_for,
    }
}

/// Every entry of every `X-Forwarded-For` header, in order.
fn entries(req: &RequestHeader) -> Vec<&str> {
    req.headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect()
}

/// `ip` as a header value, owned by its `Bytes` from the start: it is sent more than once
/// (`X-Real-IP`, `X-Forwarded-For`, the access log), and a clone of a copied slice would
/// allocate again to become shared.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let mut buf = [0u8; 46];
    let n = write_ip(ip, &mut buf).len();
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf).slice(..n)).ok()
}

impl Plugin for ForwardedFor {
    fn name(&self) -> &'static str {
        "forwarded_for"
    }

    fn phases(&self) -> Phases {
        Phases::EARLY | Phases::UPSTREAM_REQUEST
    }

    fn early(&self, req: &RequestHeader, ctx: &mut Ctx) {
        let Some(peer) = ctx.peer_ip else { return };
        if self.trusted.contains(peer) {
            let w = walk(peer, &entries(req), &self.trusted);
            ctx.client_ip = Some(w.client);
        }
    }

    fn upstream_request(
        &self,
        down: &RequestHeader,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Flow {
        let Some(peer) = ctx.peer_ip else {
            return Flow::Continue;
        };
        let trusted = self.trusted.contains(peer);
        // From a trusted proxy, its well-formed Proto/Host/Forwarded stand; the rest goes.
        let keep = |name: &HeaderName| {
            trusted
                && !has_underscore(name.as_str())
                && matches!(
                    name.as_str(),
                    "x-forwarded-proto" | "x-forwarded-host" | "forwarded"
                )
        };
        // What a trusted proxy sent and stays (nothing else of the kind does): tells the
        // `X-Forwarded-Proto`/`-Host` fill-ins below without two more lookups.
        let (mut kept_proto, mut kept_host) = (false, false);
        // The runner's walk over the names found none of these: no second walk.
        if ctx.forwarding_sent {
            remove_request_headers(up, |n| {
                if !is_forwarding(n.as_str()) {
                    return false;
                }
                if keep(n) {
                    kept_proto |= *n == X_FORWARDED_PROTO;
                    kept_host |= *n == X_FORWARDED_HOST;
                    return false;
                }
                true
            });
        }
        if trusted {
            let w = walk(peer, &entries(down), &self.trusted);
            if let Ok(v) = HeaderValue::from_str(&w.forwarded_for) {
                up.append_absent_static(X_FORWARDED_FOR, wire::X_FORWARDED_FOR, v);
            }
            if let Some(v) = ip_value(ctx.client_ip.unwrap_or(peer)) {
                up.append_absent_static(X_REAL_IP, wire::X_REAL_IP, v.clone());
                ctx.client_ip_text = Some(v);
            }
        } else if let Some(v) = ip_value(peer) {
            // The peer is the client and the whole chain.
            up.append_absent_static(X_FORWARDED_FOR, wire::X_FORWARDED_FOR, v.clone());
            up.append_absent_static(X_REAL_IP, wire::X_REAL_IP, v.clone());
            ctx.client_ip_text = Some(v);
        }
        if !kept_proto {
            let proto = HeaderValue::from_static(if ctx.tls { "https" } else { "http" });
            up.append_absent_static(X_FORWARDED_PROTO, wire::X_FORWARDED_PROTO, proto);
        }
        if !kept_host {
            if let Some(host) = ctx.host.clone() {
                up.append_absent_static(X_FORWARDED_HOST, wire::X_FORWARDED_HOST, host);
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cidrs: &[&str]) -> CidrSet {
        CidrSet::new(&cidrs.iter().map(|c| c.parse().unwrap()).collect::<Vec<_>>())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn spec_example_walks_from_the_right() {
        let w = walk(
            ip("127.0.0.1"),
            &["8.8.8.8", " 9.9.9.9", " 10.0.0.1"],
            &set(&["127.0.0.1/32", "10.0.0.0/8"]),
        );
        assert_eq!(w.client, ip("9.9.9.9"));
        assert_eq!(w.forwarded_for, "9.9.9.9, 10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn untrusted_peer_drops_the_client_chain() {
        let w = walk(
            ip("203.0.113.7"),
            &["1.1.1.1", "2.2.2.2"],
            &set(&["127.0.0.1/32"]),
        );
        assert_eq!(w.client, ip("203.0.113.7"));
        assert_eq!(w.forwarded_for, "203.0.113.7");
    }

    #[test]
    fn all_trusted_means_the_leftmost_is_the_client() {
        let w = walk(
            ip("127.0.0.1"),
            &["10.0.0.2", "10.0.0.1"],
            &set(&["127.0.0.1", "10.0.0.0/8"]),
        );
        assert_eq!(w.client, ip("10.0.0.2"));
        assert_eq!(w.forwarded_for, "10.0.0.2, 10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn garbage_stops_the_walk() {
        let t = set(&["127.0.0.1", "10.0.0.0/8"]);
        let w = walk(ip("127.0.0.1"), &["8.8.8.8", "garbage", "10.0.0.1"], &t);
        assert_eq!(w.client, ip("10.0.0.1"));
        assert_eq!(w.forwarded_for, "10.0.0.1, 127.0.0.1");
        let w = walk(ip("127.0.0.1"), &["8.8.8.8", "unknown"], &t);
        assert_eq!(w.client, ip("127.0.0.1"));
        assert_eq!(w.forwarded_for, "127.0.0.1");
    }

    #[test]
    fn ipv6_and_mapped_forms_are_canonical() {
        let t = set(&["::1/128"]);
        let w = walk(ip("::1"), &["[2001:db8::7]:443", "::ffff:8.8.4.4"], &t);
        assert_eq!(w.client, ip("8.8.4.4"));
        assert_eq!(w.forwarded_for, "8.8.4.4, ::1");
        let w = walk(ip("::ffff:127.0.0.1"), &[], &set(&["127.0.0.1"]));
        assert_eq!(w.forwarded_for, "127.0.0.1");
        let w = walk(ip("::1"), &["[2001:db8::7]:443"], &t);
        assert_eq!(w.forwarded_for, "2001:db8::7, ::1");
    }
}
