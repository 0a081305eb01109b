//! Active health checks: a background service that sends `GET <path>` to every instance with
//! a `health_check`, each on its own interval, and hands the results to [`super::Health`].
//! A probe succeeds when the instance answers 2xx or 3xx within `timeout`.

use super::{Check, CheckSettings};
use crate::snapshot::Store;
use async_trait::async_trait;
use http::HeaderValue;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How often the service looks for new or changed checks when none is due sooner.
const RESCAN: Duration = Duration::from_secs(1);
/// The most of an answer read to find its status line.
const MAX_HEAD: usize = 4096;

/// `5s`, `500ms`, `1.5s`.
pub fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::HostUnreachable => "no route to host".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string(),
    }
}

/// The request a probe sends.
fn request(path: &str, addr: SocketAddr, secret: Option<&HeaderValue>) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: anygate-health-check\r\nConnection: close\r\n"
    )
    .into_bytes();
    if let Some(s) = secret {
        r.extend_from_slice(b"X-AnyService-Authorization: ");
        r.extend_from_slice(s.as_bytes());
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r
}

/// The status of `HTTP/1.x NNN ...`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Sends one probe to `addr`.
pub async fn probe(addr: SocketAddr, c: &CheckSettings, secret: Option<&HeaderValue>) -> Check {
    let started = Instant::now();
    let took = || Some((started.elapsed().as_micros() as f64 / 1000.0 * 1000.0).round() / 1000.0);
    let fail = |msg: String| Check::now(false, None, Some(msg), took());
    let deadline = tokio::time::Instant::now() + c.timeout;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => return fail(format!("timed out connecting after {}", human(c.timeout))),
        Ok(Err(e)) => return fail(io_text(&e)),
        Ok(Ok(s)) => s,
    };
    let exchange = async {
        stream.write_all(&request(&c.path, addr, secret)).await?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, io::Error>(head)
    };
    let head = match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => return fail(format!("no answer within {}", human(c.timeout))),
        Ok(Err(e)) => return fail(io_text(&e)),
        Ok(Ok(h)) => h,
    };
    if head.is_empty() {
        return fail("closed the connection without answering".into());
    }
    match status_of(&head) {
        Some(s) if (200..400).contains(&s) => Check::now(true, Some(s), None, took()),
        Some(s) => Check::now(false, Some(s), Some(format!("answered {s}")), took()),
        None => fail("answered something that is not HTTP".into()),
    }
}

/// The background service.
pub struct ProbeService {
    store: Arc<Store>,
}

impl ProbeService {
    pub fn new(store: Arc<Store>) -> ProbeService {
        ProbeService { store }
    }
}

#[async_trait]
impl BackgroundService for ProbeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: HashMap<String, Instant> = HashMap::new();
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        loop {
            let snap = self.store.load();
            let now = Instant::now();
            let mut next = now + RESCAN;
            due.retain(|id, _| snap.health_checks.contains_key(id));
            for (id, check) in &snap.health_checks {
                let Some(instance) = snap.routes.instance(id) else {
                    continue;
                };
                let at = *due.entry(id.clone()).or_insert(now);
                if at > now {
                    next = next.min(at);
                    continue;
                }
                due.insert(id.clone(), now + check.interval);
                next = next.min(now + check.interval);
                // A probe still running (its timeout is at most the interval) is not doubled.
                if !busy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone())
                {
                    continue;
                }
                let (id, check, addr) = (id.clone(), check.clone(), instance.addr);
                let secret = instance.origin_secret.clone();
                let (store, busy) = (self.store.clone(), busy.clone());
                tokio::spawn(async move {
                    let result = probe(addr, &check, secret.as_ref()).await;
                    store.monitor.health.probed(&id, &check, addr, result);
                    busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                });
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(status_of(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status_of(b"this is not http\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 2x0 OK"), None);
    }

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn the_probe_carries_the_origin_secret() {
        let r = request(
            "/healthz",
            "10.0.0.5:80".parse().unwrap(),
            Some(&HeaderValue::from_static("s3")),
        );
        let r = String::from_utf8(r).unwrap();
        assert!(
            r.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:80\r\n"),
            "{r}"
        );
        assert!(r.contains("\r\nX-AnyService-Authorization: s3\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
