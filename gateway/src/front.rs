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

use crate::proxy::Gateway;
use crate::snapshot::Store;
use async_trait::async_trait;
use bytes::BytesMut;
use log::debug;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{timeout, timeout_at, Instant};

/// Bytes read while waiting for a request: most request headers fit in one such read.
const FIRST_READ: usize = 1024;

/// How client connections wait for their requests (SPEC-silent; nginx's `keepalive_timeout`
/// and `client_header_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontSettings {
    /// An idle keep-alive connection is closed after this long without a request.
    pub keepalive: Duration,
    /// A request header must arrive whole within this long of its first byte.
    pub client_header: Duration,
    /// The largest request header read (Pingora's own limit).
    pub max_header: usize,
}

impl Default for FrontSettings {
    fn default() -> Self {
        FrontSettings {
            keepalive: Duration::from_secs(60),
            client_header: Duration::from_secs(10),
            max_header: 1 << 20,
        }
    }
}

/// The proxy service's application: the front loop around Pingora's `HttpProxy`.
pub struct Front {
    proxy: Arc<HttpProxy<Gateway>>,
    store: Arc<Store>,
}

impl Front {
    pub fn new(proxy: HttpProxy<Gateway>, store: Arc<Store>) -> Front {
        Front {
            proxy: Arc::new(proxy),
            store,
        }
    }
}

/// How waiting for a request header ended.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A whole header (and whatever followed it in the same reads).
    Ready { buf: BytesMut, end: usize },
    /// The client closed or reset the connection, or the server is stopping.
    Closed,
    /// No request within the keep-alive timeout.
    Idle,
    /// The header did not arrive whole within the header timeout.
    Slow,
    /// The header grew past the limit before it ended.
    TooLarge(BytesMut),
}

/// Where the header in `buf` ends (just past its empty line), searching from `from`.
/// Line ends may be CRLF or a bare LF, as Pingora's parser accepts; empty lines before the
/// request line are skipped (RFC 9112 §2.2).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut i = from.max(start);
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Waits for the next request header on `stream`.
async fn read_head(
    stream: &mut Stream,
    idle: Duration,
    header: Duration,
    max: usize,
    shutdown: &mut ShutdownWatch,
) -> Head {
    let mut first = [0u8; FIRST_READ];
    let n = tokio::select! {
        r = timeout(idle, stream.read(&mut first)) => match r {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(n)) => n,
            Err(_) => return Head::Idle,
        },
        _ = shutdown.changed() => return Head::Closed,
    };
    let deadline = Instant::now() + header;
    if let Some(end) = head_end(&first[..n], 0) {
        return Head::Ready {
            buf: BytesMut::from(&first[..n]),
            end,
        };
    }
    let mut buf = BytesMut::with_capacity((2 * n).max(4096));
    buf.extend_from_slice(&first[..n]);
    loop {
        if buf.len() > max {
            return Head::TooLarge(buf);
        }
        let searched = buf.len().saturating_sub(2);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(buf.len());
        }
        match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) => return Head::Slow,
        }
        if let Some(end) = head_end(&buf, searched) {
            return Head::Ready { buf, end };
        }
    }
}

/// Gives `extra` (bytes read past the header) back to a plain TCP stream, so that Pingora
/// reads them as the body or as the next pipelined request; a TLS stream cannot take them
/// back, so they stay in the header's buffer, after the header.
fn give_back(stream: Stream, buf: &mut BytesMut, end: usize) -> Option<Stream> {
    if end == buf.len() || !stream.as_any().is::<L4Stream>() {
        return Some(stream);
    }
    let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
        return None; // unreachable: the type was checked above
    };
    l4.rewind(&buf[end..]);
    buf.truncate(end);
    Some(l4)
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut shutdown = shutdown.clone();
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
                &mut shutdown,
            )
            .await;
            let mut buf = match head {
                Head::Ready { mut buf, end } => {
                    stream = give_back(stream, &mut buf, end)?;
                    buf
                }
                // Pingora answers an oversized header itself (400) and closes.
                Head::TooLarge(buf) => buf,
                other => {
                    debug!("connection closed while waiting for a request: {other:?}");
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            session.set_keepalive(if *shutdown.borrow() {
                None
            } else {
                Some(t.keepalive.as_secs().max(1))
            });
            session.set_pipelined_prefix(std::mem::take(&mut buf));
            let reused = self.proxy.process_new_http(session, &shutdown).await?;
            stream = reused.consume().0;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::head_end;

    #[test]
    fn finds_the_end_of_a_header() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\nx", 0), Some(26));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        // Empty lines before the request line are not the end of a header.
        assert_eq!(head_end(b"\r\n\r\n", 0), None);
        assert_eq!(head_end(b"\r\nGET / HTTP/1.1\r\n\r\n", 0), Some(20));
        // A search resumed past the start still finds an end split across reads.
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 23), Some(27));
    }
}
