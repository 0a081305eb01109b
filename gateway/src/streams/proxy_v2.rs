//! The PROXY protocol v2 header (haproxy's proxy-protocol.txt, section 2.2) that tells the
//! instance who the client is: `PROXY` command over TCP, the client's address and port as the
//! source, the address the client connected to as the destination.

use anygate_plugins::net::canonical;
use std::net::{IpAddr, SocketAddr};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const VERSION_PROXY: u8 = 0x21;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;

/// The header for a connection from `client` to `local`. Both are written in one family:
/// IPv4 when both are IPv4 (v4-mapped IPv6 included), else IPv6 (IPv4 as v4-mapped).
pub fn header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(client.ip()), canonical(local.ip()));
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_PROXY);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_is_byte_exact() {
        let h = header(
            "203.0.113.7:51000".parse().unwrap(),
            "10.0.0.1:6380".parse().unwrap(),
        );
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&6380u16.to_be_bytes());
        assert_eq!(h, want);
    }

    #[test]
    fn ipv6_and_mixed_families() {
        let h = header(
            "[2001:db8::5]:40000".parse().unwrap(),
            "[::1]:22".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &h[16..32],
            &"2001:db8::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[32..48], &std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&h[48..52], &[0x9c, 0x40, 0, 22]);
        // A v4-mapped client on a v4 listener is plain IPv4.
        let h = header(
            "[::ffff:192.0.2.1]:1000".parse().unwrap(),
            "192.0.2.9:80".parse().unwrap(),
        );
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[192, 0, 2, 1]);
        // An IPv4 client on an IPv6 listener: both as IPv6.
        let h = header(
            "192.0.2.1:1000".parse().unwrap(),
            "[2001:db8::1]:80".parse().unwrap(),
        );
        assert_eq!(h[13], 0x21);
        assert_eq!(
            &h[16..32],
            &"::ffff:192.0.2.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
