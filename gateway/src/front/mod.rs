//! The connection front: anygate's own loop over the HTTP/1 requests of a connection, in front
//! of Pingora's HTTP/1 session.
//!
//! Pingora keeps a whole request future (and its 4 KB header buffer) alive while a keep-alive
//! connection waits for its next request, and bounds a header only per read. Here a waiting
//! connection holds its socket and a small read buffer, nothing else: each request header is
//! read whole (the keep-alive timeout before its first byte, the header timeout from its first
//! byte to its end) and handed to Pingora as an already-read prefix, so Pingora parses it
//! without another read and the request future exists only while a request is in flight.
//! HTTP/2 connections go to Pingora's own loop.

mod conns;
mod head;
mod idle;

pub use conns::{Conns, Refusal};
pub use head::head_end;

use crate::proxy::Gateway;
use crate::snapshot::Store;
use anygate_plugins::net::canonical;
use anygate_plugins::{Ctx, ErrorCode, Served};
use async_trait::async_trait;
use head::{read_head, Head};
use log::debug;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How client connections wait for their requests, and how many may be open (SPEC-silent:
/// nginx's `keepalive_timeout`, `client_header_timeout`, `large_client_header_buffers` and
/// `limit_conn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontSettings {
    /// An idle keep-alive connection is closed after this long without a request.
    pub keepalive: Duration,
    /// A request header must arrive whole within this long of its first byte.
    pub client_header: Duration,
    /// The largest request header accepted, request line included.
    pub max_header: usize,
    /// Most client connections open at once (HTTP and HTTPS listeners together).
    pub max_connections: Option<u32>,
    /// Most client connections open at once from one address (the TCP peer).
    pub max_connections_per_ip: Option<u32>,
}

impl Default for FrontSettings {
    fn default() -> Self {
        FrontSettings {
            keepalive: Duration::from_secs(60),
            client_header: Duration::from_secs(10),
            max_header: 64 * 1024,
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

/// The proxy service's application: the front loop around Pingora's `HttpProxy`.
pub struct Front {
    proxy: Arc<HttpProxy<Gateway>>,
    store: Arc<Store>,
    conns: Arc<Conns>,
}

impl Front {
    pub fn new(proxy: HttpProxy<Gateway>, store: Arc<Store>) -> Front {
        Front {
            proxy: Arc::new(proxy),
            store,
            conns: Arc::default(),
        }
    }
}

/// Closes a connection whose client may still be sending: the write side first, then what
/// arrives is read and dropped for a moment, so the close does not reset the connection and
/// destroy the answer before the client read it (nginx's lingering close).
async fn linger(mut stream: Stream) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    // On the heap: an array here would be part of every connection's task, used or not.
    let mut sink = vec![0u8; 4096];
    let mut left = 4usize << 20;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

/// Gives freed memory back when a connection ends (see `crate::alloc`).
struct CollectOnClose;

impl Drop for CollectOnClose {
    fn drop(&mut self) {
        crate::alloc::connection_closed();
    }
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    let addr = digest.peer_addr()?.as_inet()?;
    Some(canonical(addr.ip()))
}

impl Front {
    /// Answers a request whose header is over `max_header` bytes (the SPEC's error body, logged
    /// like any request that could not be parsed), then lingers and closes.
    async fn refuse_too_large(&self, mut stream: Stream, max_header: usize) {
        let message = format!("the request header is larger than {max_header} bytes");
        let snap = self.store.load();
        let mut ctx = Ctx::new(snap.generation);
        ctx.peer_ip = peer_ip(&stream);
        let (wire, answer) =
            crate::reply::wire_error(&snap.chain, &mut ctx, ErrorCode::InvalidRequest, message);
        let sent = stream.write_all(&wire).await.is_ok() && stream.flush().await.is_ok();
        let served = if sent { answer } else { Served::unparsed(0, 0) };
        crate::proxy::log_unparsed(&self.store, &snap, ctx, &served);
        linger(stream).await;
    }
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let settings = self.store.front_settings();
        let telemetry = self.store.load().telemetry.clone();
        let (_conn, refusal) = self.conns.enter(
            peer_ip(&stream),
            settings.max_connections,
            settings.max_connections_per_ip,
        );
        let _open = telemetry.client_connection();
        let _collect = CollectOnClose;
        if let Some(r) = refusal {
            telemetry.client_closed(r.label());
        }
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2: Pingora's own loop; a refused connection is closed at once.
            if refusal.is_some() {
                return None;
            }
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut stream = stream;
        loop {
            if *shutdown.borrow() {
                return None;
            }
            let t = self.store.front_settings();
            let head = read_head(
                &mut stream,
                t.keepalive,
                t.client_header,
                t.max_header,
                shutdown,
            )
            .await;
            let mut buf = match head {
                // Bytes after the header (a body's start, or pipelined requests) stay in the
                // prefix: Pingora reads them as the body, and closes the connection after its
                // answer when they go past it (pipelining is not served: docs/hardening.md).
                Head::Ready { buf, .. } => buf,
                Head::TooLarge => {
                    telemetry.client_closed("header_too_large");
                    // In a box of its own: this path's locals (the chain's context among them,
                    // some 500 bytes) would otherwise be part of every connection's future, and
                    // of each idle connection's memory.
                    Box::pin(self.refuse_too_large(stream, t.max_header)).await;
                    return None;
                }
                Head::Slow => {
                    telemetry.client_closed("header_timeout");
                    debug!(
                        "closing a connection whose request header did not arrive within {:?}",
                        t.client_header
                    );
                    return None;
                }
                Head::Closed | Head::Idle => return None,
            };
            // Built in its box and handed over as one (Pingora moved it by value, then boxed it).
            let mut session = Box::new(ServerSession::new_http1(stream));
            let keepalive = !*shutdown.borrow() && refusal.is_none();
            session.set_keepalive(keepalive.then(|| t.keepalive.as_secs().max(1)));
            if let Some(r) = refusal {
                // Answered by the proxy's request phase (one place writes errors); see
                // `Gateway::on_connection_reuse`.
                session.set_connection_user_context(Some(Box::new(r)));
            }
            session.set_pipelined_prefix(std::mem::take(&mut buf));
            let reused = self.proxy.process_new_http_boxed(session, shutdown).await?;
            stream = reused.consume().0;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
