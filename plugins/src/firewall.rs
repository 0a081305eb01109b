//! `firewall`: `allow` and `deny` CIDR lists on the client address of SPEC §6 (`ctx.client_ip`,
//! from `forwarded_for` when the peer is a trusted proxy). Deny wins; an empty `allow` allows
//! everyone not denied. Refused requests get 403 `ACCESS_DENIED`.

use crate::ctx::Ctx;
use crate::error::ErrorCode;
use crate::net::{Cidr, CidrSet};
use crate::plugin::{Flow, Phases, Plugin, Reply, Step};
use crate::{BuildCtx, PluginError};
use pingora_proxy::Session;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Only these clients may pass (empty: everyone).
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// These clients never pass, even when allowed.
    #[serde(default)]
    pub deny: Vec<Cidr>,
}

impl Config {
    pub fn build(&self, _cx: &BuildCtx) -> Result<Firewall, PluginError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(PluginError::new(
                "allow",
                "give `allow` and/or `deny` CIDR lists (an empty firewall lets everyone in)",
            ));
        }
        Ok(Firewall {
            allow: CidrSet::new(&self.allow),
            deny: CidrSet::new(&self.deny),
        })
    }
}

pub struct Firewall {
    allow: CidrSet,
    deny: CidrSet,
}

impl Firewall {
    /// Whether `client` may pass; an unknown client (no IP peer) passes only an open `allow`.
    pub fn admits(&self, client: Option<IpAddr>) -> bool {
        match client {
            Some(ip) => {
                !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
            }
            None => self.allow.is_empty(),
        }
    }
}

impl Plugin for Firewall {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    fn request<'a>(&'a self, _session: &'a mut Session, ctx: &'a mut Ctx) -> Step<'a> {
        if self.admits(ctx.client_ip) {
            Step::Done(Flow::Continue)
        } else {
            Step::Done(Flow::Reply(Reply::error_with(
                ErrorCode::AccessDenied,
                "the client address is not allowed",
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(allow: &[&str], deny: &[&str]) -> Firewall {
        let parse = |v: &[&str]| v.iter().map(|c| c.parse().unwrap()).collect::<Vec<Cidr>>();
        Firewall {
            allow: CidrSet::new(&parse(allow)),
            deny: CidrSet::new(&parse(deny)),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn deny_wins_and_empty_allow_allows_all() {
        let f = fw(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.1.0.0/16", "2001:db8:bad::/48"],
        );
        assert!(f.admits(ip("10.2.3.4")));
        assert!(
            f.admits(ip("::ffff:10.2.3.4")),
            "v4-mapped is the v4 client"
        );
        assert!(!f.admits(ip("10.1.2.3")), "deny wins over allow");
        assert!(!f.admits(ip("192.0.2.1")), "not in allow");
        assert!(f.admits(ip("2001:db8:1::1")));
        assert!(!f.admits(ip("2001:db8:bad::1")));
        assert!(!f.admits(None));
        let open = fw(&[], &["203.0.113.0/24"]);
        assert!(open.admits(ip("198.51.100.7")));
        assert!(open.admits(ip("::1")));
        assert!(!open.admits(ip("203.0.113.9")));
        assert!(open.admits(None));
    }
}
