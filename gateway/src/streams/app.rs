//! One stream listener: the accept-time filter that refuses clients outside `allow` before the
//! connection is handed on, and the Pingora app that connects each admitted client to its
//! instance. Both read the current snapshot per connection, so a reload applies to the next
//! connection at once.

use super::config::Spec;
use super::metrics::{Admission, StreamMetrics};
use super::pipe::{self, End, Tally};
use super::proxy_v2;
use crate::snapshot::{Snapshot, Store};
use async_trait::async_trait;
use log::info;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What one stream listener shares between its filter and its app.
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    pub store: Arc<Store>,
    pub metrics: StreamMetrics,
    /// Connections open now (relaying, or connecting to the instance).
    open: AtomicUsize,
}

impl Listener {
    pub fn new(
        name: String,
        listen: SocketAddr,
        store: Arc<Store>,
        metrics: StreamMetrics,
    ) -> Self {
        Listener {
            name,
            listen,
            store,
            metrics,
            open: AtomicUsize::new(0),
        }
    }

    /// This listener's stream in `snap`; `None` once a reload removed it (or moved it to
    /// another address, which waits for a restart).
    fn spec<'a>(&self, snap: &'a Snapshot) -> Option<&'a Arc<Spec>> {
        snap.streams
            .get(&self.name)
            .filter(|s| s.listen == self.listen)
    }

    fn admits(&self, snap: &Snapshot, client: Option<SocketAddr>) -> bool {
        match (self.spec(snap), client) {
            (Some(spec), Some(c)) => spec.allow.contains(c.ip()),
            _ => false,
        }
    }

    fn refuse(&self, client: Option<SocketAddr>, result: Admission, why: &str) {
        self.metrics.count(result);
        info!(
            target: "anygate::streams",
            "stream={} client={} result={} reason=\"{why}\"",
            self.name,
            Addr(client),
            result.label()
        );
    }
}

/// Formats an optional address as `-` when absent.
struct Addr(Option<SocketAddr>);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}

/// Refuses clients outside `allow` in Pingora's accept loop: the socket is closed before a
/// task is spawned for it, a byte is read or the instance is contacted.
pub struct AllowFilter(pub Arc<Listener>);

impl fmt::Debug for AllowFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AllowFilter({})", self.0.name)
    }
}

#[async_trait]
impl ConnectionFilter for AllowFilter {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let l = &self.0;
        let client = addr.copied();
        if l.admits(&l.store.load(), client) {
            return true;
        }
        l.refuse(client, Admission::Denied, "not in allow");
        false
    }
}

/// Holds one place under `max_connections` (and the `active` gauge) until dropped.
struct Slot<'a>(&'a Listener);

impl<'a> Slot<'a> {
    fn take(l: &'a Listener, max: Option<usize>) -> Option<Slot<'a>> {
        let now = l.open.fetch_add(1, Ordering::AcqRel) + 1;
        if max.is_some_and(|m| now > m) {
            l.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        l.metrics.active.inc();
        Some(Slot(l))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.active.dec();
    }
}

/// The log line of an accepted connection, written when it is dropped: also when the task is
/// cancelled (the runtime stopping after the grace period), which reports `end=aborted`.
struct Record<'a> {
    l: &'a Listener,
    spec: &'a Spec,
    client: Option<SocketAddr>,
    started: Instant,
    tally: Tally,
    end: Option<End>,
    error: Option<String>,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let error = match &self.error {
            Some(e) => format!(" error=\"{e}\""),
            None => String::new(),
        };
        let (bytes_in, bytes_out) = self.tally.get();
        info!(
            target: "anygate::streams",
            "stream={} client={} instance={} upstream={} result=accepted end={} duration={:.3}s bytes_in={bytes_in} bytes_out={bytes_out}{error}",
            self.l.name,
            Addr(self.client),
            self.spec.instance,
            self.spec.upstream,
            self.end.map_or("aborted", End::label),
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// The Pingora app of one stream listener.
pub struct StreamApp(pub Arc<Listener>);

#[async_trait]
impl ServerApp for StreamApp {
    async fn process_new(
        self: &Arc<Self>,
        mut io: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let l = &*self.0;
        let started = Instant::now();
        let digest = io.get_socket_digest();
        let client = digest
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .copied();
        let local = digest
            .as_ref()
            .and_then(|d| d.local_addr())
            .and_then(|a| a.as_inet())
            .copied()
            .unwrap_or(l.listen);
        // One snapshot for the whole admission; only the stream's own settings are kept after.
        let (spec, grace) = {
            let snap = l.store.load();
            // Re-checked: a reload may have landed since the accept-time filter.
            if !l.admits(&snap, client) {
                l.refuse(client, Admission::Denied, "not in allow");
                return None;
            }
            (l.spec(&snap)?.clone(), snap.server.grace_period)
        };
        let Some(_slot) = Slot::take(l, spec.max_connections) else {
            l.refuse(client, Admission::Limited, "max_connections reached");
            return None;
        };
        let mut upstream = match connect(&spec, client, local).await {
            Ok(s) => s,
            Err(why) => {
                l.refuse(
                    client,
                    Admission::UpstreamFailed,
                    &format!("{}: {why}", spec.upstream),
                );
                return None;
            }
        };
        l.metrics.count(Admission::Accepted);
        let mut record = Record {
            l,
            spec: &spec,
            client,
            started,
            tally: Tally::default(),
            end: None,
            error: None,
        };
        let stop = async {
            tokio::select! {
                () = revoked(l, client) => End::Revoked,
                () = drained(shutdown.clone(), grace) => End::Shutdown,
            }
        };
        let out = pipe::relay(
            &mut io,
            &mut upstream,
            &record.tally,
            &l.metrics.bytes_in,
            &l.metrics.bytes_out,
            spec.idle_timeout,
            stop,
        )
        .await;
        record.end = Some(out.end);
        record.error = out.error.map(|e| e.to_string());
        None
    }
}

/// Connects to the instance within the connect timeout, and sends the PROXY header if asked.
async fn connect(
    spec: &Spec,
    client: Option<SocketAddr>,
    local: SocketAddr,
) -> Result<TcpStream, String> {
    let mut s =
        match tokio::time::timeout(spec.connect_timeout, TcpStream::connect(spec.upstream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "connect timed out after {:?}",
                    spec.connect_timeout
                ))
            }
        };
    let _ = s.set_nodelay(true);
    if spec.proxy_protocol {
        let Some(client) = client else {
            return Err("no client address for the PROXY header".into());
        };
        s.write_all(&proxy_v2::header(client, local))
            .await
            .map_err(|e| format!("writing the PROXY header: {e}"))?;
    }
    Ok(s)
}

/// Resolves when a reload no longer admits this client here: it left `allow`, or the stream
/// was removed. Other changes (instance, port, limits, timeouts) wait for new connections.
async fn revoked(l: &Listener, client: Option<SocketAddr>) {
    let mut changes = l.store.subscribe();
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !l.admits(&l.store.load(), client) {
            return;
        }
    }
}

/// Pingora stops the runtimes `grace_period` (rounded up to whole seconds) after it starts
/// shutting down; open streams are closed this much earlier, so they end (and are logged)
/// by themselves rather than being dropped with the runtime.
const BEFORE_GRACE_ENDS: Duration = Duration::from_millis(250);

/// Resolves shortly before the grace period of a stopping server (graceful stop or upgrade)
/// runs out.
async fn drained(mut shutdown: ShutdownWatch, grace: Duration) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
    tokio::time::sleep(grace.saturating_sub(BEFORE_GRACE_ENDS)).await;
}
