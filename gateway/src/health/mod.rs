//! Instance health (SPEC §12). An instance with `health_check` is probed by a background
//! service ([`probe`]); one without is judged by the results of the requests proxied to it
//! (passive, fed once a second by the traffic ticker). Either way the state lives here, per
//! instance id, across reloads, and nothing on the request path waits for it.

pub mod probe;
mod settings;
mod state;

pub use settings::{compile_check, CheckSettings};
pub use state::{Check, HealthView, Mode, Status};

use crate::monitor::traffic::Proxied;
use state::State;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Passive health: this many failed proxied requests in a row mark an instance down.
pub const PASSIVE_UNHEALTHY: u32 = 3;

/// One instance of the running config, as health needs it.
pub struct Target<'a> {
    pub id: &'a str,
    pub addr: SocketAddr,
    pub check: Option<&'a CheckSettings>,
}

/// The health of every instance of the running config.
#[derive(Default)]
pub struct Health {
    states: Mutex<BTreeMap<String, State>>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, State>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows a new config: instances whose address and check are unchanged keep their
    /// state, changed ones start over, removed ones are forgotten.
    pub fn sync<'a>(&self, targets: impl Iterator<Item = Target<'a>>) {
        let mut states = self.lock();
        let mut next = BTreeMap::new();
        for t in targets {
            let keep = states
                .remove(t.id)
                .filter(|s| s.addr == t.addr && s.check.as_ref() == t.check);
            let s = keep.unwrap_or_else(|| State::new(t.addr, t.check.cloned()));
            next.insert(t.id.to_string(), s);
        }
        *states = next;
    }

    /// Applies an active probe's result, unless the instance's check changed meanwhile.
    pub fn probed(&self, id: &str, check: &CheckSettings, addr: SocketAddr, result: Check) {
        let mut states = self.lock();
        if let Some(s) = states.get_mut(id) {
            if s.addr == addr && s.check.as_ref() == Some(check) {
                s.apply(id, result, check.unhealthy, check.healthy);
            }
        }
    }

    /// Applies a second of proxied results to the passive instances.
    pub fn proxied(&self, results: &BTreeMap<String, Proxied>) {
        let mut states = self.lock();
        for (id, p) in results {
            if let Some(s) = states.get_mut(id).filter(|s| s.check.is_none()) {
                s.apply_proxied(id, p);
            }
        }
    }

    /// `anygate_instance_up`: 0 only for an instance known to be down.
    pub fn up(&self) -> Vec<(String, bool)> {
        self.lock()
            .iter()
            .map(|(id, s)| (id.clone(), s.status != Status::Down))
            .collect()
    }

    pub fn view(&self, id: &str) -> Option<HealthView> {
        self.lock().get(id).map(State::view)
    }
}

/// What a failure `kind` (`anygate_upstream_errors_total`) means, in words.
pub fn kind_text(kind: &str) -> &'static str {
    match kind {
        "connect_refused" => "connection refused",
        "connect_timeout" => "timed out connecting",
        "connect_error" => "could not connect",
        "tls" => "TLS handshake failed",
        "timeout" => "no answer in time",
        "closed" => "closed the connection without answering",
        "reset" => "connection reset",
        "bad_response" => "answered something that is not HTTP",
        _ => "failed",
    }
}
