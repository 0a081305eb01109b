//! `X-Forwarded-For` walking (SPEC §6) with trusted-proxy lists: any header text, any
//! configured blocks. Line 1: trusted blocks (comma-separated), line 2: the peer, the other
//! lines: `X-Forwarded-For` field values.
#![no_main]

use anygate_plugins::forwarded_for::walk;
use anygate_plugins::net::{canonical, parse_forwarded_entry, write_ip, Cidr, CidrSet};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

fn check_written(ip: IpAddr) {
    let mut buf = [0u8; 46];
    assert_eq!(write_ip(ip, &mut buf), canonical(ip).to_string().as_bytes());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let blocks: Vec<Cidr> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|b| b.parse().ok())
        .collect();
    let trusted = CidrSet::new(&blocks);
    let peer = lines
        .next()
        .and_then(|p| p.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let entries: Vec<&str> = lines.flat_map(|v| v.split(',')).collect();
    for e in &entries {
        if let Some(ip) = parse_forwarded_entry(e) {
            assert_eq!(ip, canonical(ip), "{e:?}");
            check_written(ip);
        }
    }
    check_written(peer);
    let w = walk(peer, &entries, &trusted);
    // The chain sent upstream reads back: every entry an address, the client first, the peer
    // last; and an untrusted peer is the client itself.
    let chain: Vec<IpAddr> = w
        .forwarded_for
        .split(", ")
        .map(|e| parse_forwarded_entry(e).unwrap_or_else(|| panic!("{:?}", w.forwarded_for)))
        .collect();
    assert_eq!(chain.first(), Some(&w.client));
    assert_eq!(chain.last(), Some(&canonical(peer)));
    if !trusted.contains(peer) {
        assert_eq!(w.client, canonical(peer));
        assert_eq!(chain.len(), 1);
    }
    // Every hop but the client is trusted.
    for hop in &chain[1..] {
        assert!(trusted.contains(*hop), "{hop} in {:?}", w.forwarded_for);
    }
    assert!(http::HeaderValue::from_str(&w.forwarded_for).is_ok());
});
