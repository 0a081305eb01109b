//! Streams (SPEC §14): TCP passthrough listeners behind an allowlist, CloudBase's "any port,
//! any protocol" access (SSH, databases). Each stream is a Pingora service with its own
//! listener on the same `Server` as the HTTP service, so a graceful upgrade hands these
//! listeners over too. [`add_services`] is the one entry point.

mod app;
pub mod config;
pub mod metrics;
mod pipe;
pub mod proxy_v2;

pub use config::{compile, Spec, StreamConfig, Streams};

use crate::snapshot::Store;
use app::{AllowFilter, Listener, StreamApp};
use log::{error, info, warn};
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use std::sync::Arc;

/// Adds one service per stream of the current snapshot. The listeners are fixed from here on;
/// everything else is read from the snapshot per connection.
pub fn add_services(server: &mut Server, store: &Arc<Store>) {
    let snap = store.load();
    if snap.streams.is_empty() {
        return;
    }
    let families = match metrics::Families::register(&snap.telemetry.registry) {
        Ok(f) => f,
        Err(e) => {
            error!("stream metrics disabled: {e}");
            match metrics::Families::register(&prometheus::Registry::new()) {
                Ok(f) => f,
                Err(_) => return,
            }
        }
    };
    for spec in snap.streams.iter() {
        let listener = Arc::new(Listener::new(
            spec.name.clone(),
            spec.listen,
            store.clone(),
            families.stream(&spec.name),
        ));
        let mut svc = Service::new(format!("stream {}", spec.name), StreamApp(listener.clone()));
        // The relay has its own bounded buffers: Pingora's would only add a copy.
        svc.add_listener(
            ListenerConfig::tcp(spec.listen.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
        );
        svc.set_connection_filter(Arc::new(AllowFilter(listener)));
        info!(
            "stream {}: listening on {} for instance {} at {}{}",
            spec.name,
            spec.listen,
            spec.instance,
            spec.upstream,
            if spec.proxy_protocol {
                " (PROXY v2)"
            } else {
                ""
            }
        );
        server.add_service(svc);
    }
}

/// Stream listeners are bound at start: a reload that adds, removes or moves one is logged
/// (the rest of the config still applies). A removed stream refuses new connections at once.
pub fn warn_listener_changes(current: &Streams, next: &Streams) {
    let (now, then) = (current.listeners(), next.listeners());
    if now != then {
        warn!(
            "stream listeners changed ({now:?} -> {then:?}): this needs a restart (graceful upgrade, `anygate run -u`); new or moved streams wait for it, removed ones refuse connections until then"
        );
    }
}
