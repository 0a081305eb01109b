//! Draining before a graceful upgrade or stop: from the moment the process gets `SIGQUIT`
//! (upgrade) or `SIGTERM` (graceful stop), every HTTP/1 response says `Connection: close`.
//! Busy keep-alive clients then leave after their current request and reconnect (to the new
//! process), instead of being cut between two requests when Pingora drops the connections it
//! still holds at the end of the hand-over: that drop would hit a request already on the wire,
//! and clients may only re-send it when it is idempotent (RFC 9112 §9.3.1).

use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::signal::unix::{signal, SignalKind};

static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether the process is handing over or stopping: keep-alive is over.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Watches for `SIGQUIT` and `SIGTERM` next to Pingora's own handlers (every listener of a
/// signal is told), and for the shutdown Pingora starts by itself.
pub struct DrainWatch;

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (Ok(mut quit), Ok(mut term)) =
            (signal(SignalKind::quit()), signal(SignalKind::terminate()))
        else {
            warn!("cannot watch SIGQUIT/SIGTERM: keep-alive connections are not drained before an upgrade");
            return;
        };
        let why = tokio::select! {
            _ = quit.recv() => "SIGQUIT",
            _ = term.recv() => "SIGTERM",
            _ = shutdown.changed() => "shutdown",
        };
        DRAINING.store(true, Ordering::Relaxed);
        info!("{why}: draining; every HTTP/1 response now closes its connection");
    }
}
