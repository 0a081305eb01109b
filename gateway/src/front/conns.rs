//! Counting client connections, in all and per client address, for the optional caps
//! (`limits.max_connections`, `limits.max_connections_per_ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Open client connections.
#[derive(Default)]
pub struct Conns {
    total: AtomicU32,
    /// Counted only while a per-address cap is set; sharded so that accepts on several
    /// threads rarely meet on one lock.
    per_ip: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    hasher: ahash::RandomState,
}

/// Why a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` connections are open.
    Total,
    /// `limits.max_connections_per_ip` connections are open from this address.
    PerIp,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Total => "too many connections to the gateway",
            Refusal::PerIp => "too many connections from this address",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

/// One open connection: counted until dropped.
pub struct ConnGuard {
    conns: Arc<Conns>,
    ip: Option<IpAddr>,
}

impl Conns {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.per_ip[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    /// Counts a new connection from `ip`; says whether it is over a cap (it is counted
    /// either way, until the guard drops).
    pub fn enter(
        self: &Arc<Self>,
        ip: Option<IpAddr>,
        max_total: Option<u32>,
        max_per_ip: Option<u32>,
    ) -> (ConnGuard, Option<Refusal>) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut refusal = max_total.filter(|m| total > *m).map(|_| Refusal::Total);
        let counted_ip = match (max_per_ip, ip) {
            (Some(max), Some(ip)) => {
                let mut map = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
                let n = map.entry(ip).or_insert(0);
                *n += 1;
                if *n > max && refusal.is_none() {
                    refusal = Some(Refusal::PerIp);
                }
                Some(ip)
            }
            _ => None,
        };
        let guard = ConnGuard {
            conns: self.clone(),
            ip: counted_ip,
        };
        (guard, refusal)
    }

    pub fn open(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self
                .conns
                .shard(&ip)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_open_connections_and_forget_closed_ones() {
        let conns = Arc::new(Conns::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let (g1, r1) = conns.enter(Some(a), Some(3), Some(1));
        assert_eq!(r1, None);
        let (g2, r2) = conns.enter(Some(a), Some(3), Some(1));
        assert_eq!(r2, Some(Refusal::PerIp));
        let (g3, r3) = conns.enter(Some(b), Some(3), Some(1));
        assert_eq!(r3, None);
        let (g4, r4) = conns.enter(Some(b), Some(3), Some(1));
        assert_eq!(r4, Some(Refusal::Total), "the total cap is told first");
        drop((g2, g4));
        assert_eq!(conns.open(), 2);
        drop(g1);
        let (_g5, r5) = conns.enter(Some(a), Some(3), Some(1));
        assert_eq!(r5, None, "a's first connection is gone");
        drop(g3);
        assert!(conns.per_ip.iter().all(|m| m.lock().unwrap().len() <= 1));
    }

    #[test]
    fn without_caps_nothing_is_refused() {
        let conns = Arc::new(Conns::default());
        let guards: Vec<_> = (0..100)
            .map(|_| conns.enter(Some("10.0.0.1".parse().unwrap()), None, None))
            .collect();
        assert!(guards.iter().all(|(_, r)| r.is_none()));
        assert_eq!(conns.open(), 100);
    }
}
