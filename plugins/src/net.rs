//! Client addresses: canonical forms, CIDR lists, `X-Forwarded-For` entries.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d`; every other address is itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Writes `ip` (canonical, IPv6 without brackets) into `buf` and returns the text (ASCII, as
/// bytes: its users want bytes, and a UTF-8 check would only cost). IPv4, the common case, is
/// formatted by hand: `Display` goes through `fmt` machinery on every request.
pub fn write_ip(ip: IpAddr, buf: &mut [u8; 46]) -> &[u8] {
    let n = match canonical(ip) {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cur, "{v6}");
            cur.position() as usize
        }
    };
    &buf[..n]
}

/// One CIDR block from the config; a bare address is a single-host block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = IpNet::from_str(s) {
            return Ok(Cidr(net.trunc()));
        }
        match IpAddr::from_str(s) {
            Ok(ip) => Ok(Cidr(IpNet::from(ip))),
            Err(_) => Err(format!(
                "invalid CIDR `{s}` (expected e.g. 10.0.0.0/8, ::1/128 or an address)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// A list of CIDR blocks, matched against canonical client addresses (an IPv4 block also
/// matches the v4-mapped IPv6 form of its addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrSet {
    v4: Vec<ipnet::Ipv4Net>,
    v6: Vec<ipnet::Ipv6Net>,
}

impl CidrSet {
    pub fn new(blocks: &[Cidr]) -> CidrSet {
        let mut set = CidrSet::default();
        for Cidr(net) in blocks {
            match net {
                IpNet::V4(n) => set.v4.push(*n),
                IpNet::V6(n) => set.v6.push(*n),
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.v4.iter().any(|n| n.contains(&a)),
            IpAddr::V6(a) => self.v6.iter().any(|n| n.contains(&a)),
        }
    }
}

/// Reads one `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`. Returns the canonical address.
pub fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if e.is_empty() {
        return None;
    }
    if let Some(rest) = e.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Ipv6Addr::from_str(&rest[..end])
            .ok()
            .map(|a| canonical(IpAddr::V6(a)));
    }
    if let Ok(ip) = IpAddr::from_str(e) {
        return Some(canonical(ip));
    }
    // `a.b.c.d:port`: exactly one colon, so it cannot be a bare IPv6 address.
    let (host, port) = e.rsplit_once(':')?;
    if host.contains(':') || !is_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_written_like_display() {
        let mut buf = [0u8; 46];
        for s in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.255",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::1",
            "fe80::1:2:3:4",
        ] {
            assert_eq!(write_ip(ip(s), &mut buf), s.as_bytes());
        }
        assert_eq!(write_ip(ip("::ffff:9.8.7.6"), &mut buf), b"9.8.7.6");
        assert_eq!(
            write_ip(ip("1111:2222:3333:4444:5555:6666:7777:8888"), &mut buf),
            b"1111:2222:3333:4444:5555:6666:7777:8888"
        );
    }

    #[test]
    fn v4_mapped_addresses_are_written_as_v4() {
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("8.8.8.8")), ip("8.8.8.8"));
    }

    #[test]
    fn forwarded_entries_in_every_form() {
        assert_eq!(parse_forwarded_entry(" 8.8.8.8 "), Some(ip("8.8.8.8")));
        assert_eq!(parse_forwarded_entry("8.8.8.8:1234"), Some(ip("8.8.8.8")));
        assert_eq!(
            parse_forwarded_entry("2001:db8::1"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_forwarded_entry("[2001:db8::1]"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            parse_forwarded_entry("[2001:db8::1]:443"),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(parse_forwarded_entry("::ffff:1.2.3.4"), Some(ip("1.2.3.4")));
        for bad in [
            "",
            "unknown",
            "1.2.3",
            "8.8.8.8:",
            "8.8.8.8:99999",
            "[::1",
            "[::1]x",
            "_hidden",
        ] {
            assert_eq!(parse_forwarded_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidr_sets_match_both_families_and_mapped_forms() {
        let set = CidrSet::new(&[
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        assert!(set.contains(ip("10.200.0.1")));
        assert!(set.contains(ip("::ffff:10.200.0.1")));
        assert!(set.contains(ip("127.0.0.1")));
        assert!(!set.contains(ip("127.0.0.2")));
        assert!(set.contains(ip("2001:db8:1::5")));
        assert!(!set.contains(ip("::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana".parse::<Cidr>().is_err());
        // host bits are dropped, as routers do
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap(),
            "10.0.0.0/8".parse::<Cidr>().unwrap()
        );
    }
}
