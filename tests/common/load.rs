//! A bounded load generator: a fixed number of keep-alive connections, each sending requests
//! until told to stop (or a hard cap on count and time), classifying every response.

use super::http::{Conn, Req, Response};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What happened to all the requests.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    /// Requests resent because a reused keep-alive connection was closed before any byte of
    /// the answer (what every HTTP client does for idempotent requests, RFC 9112 §9.3.1).
    pub retried: u64,
    /// Answers per classification key.
    pub by_kind: BTreeMap<String, u64>,
    /// Connection errors and unexpected answers.
    pub failures: Vec<String>,
}

impl LoadReport {
    fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.retried += other.retried;
        for (k, v) in other.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        self.failures.extend(other.failures);
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadReport>>,
}

/// Hard caps, whatever the test does.
const MAX_PER_CONN: u64 = 200_000;
const MAX_TIME: Duration = Duration::from_secs(120);

fn retriable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::BrokenPipe
            | ErrorKind::ConnectionAborted
    )
}

impl Load {
    /// Starts `conns` connections to `addr`. `req(i)` makes the i-th request of a connection;
    /// `classify` names a good answer or explains a bad one.
    pub fn start<R, C>(addr: SocketAddr, conns: usize, req: R, classify: C) -> Load
    where
        R: Fn(u64) -> Req + Send + Sync + 'static,
        C: Fn(&Response) -> Result<String, String> + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let req = Arc::new(req);
        let classify = Arc::new(classify);
        let threads = (0..conns)
            .map(|_| {
                let (stop, req, classify) = (stop.clone(), req.clone(), classify.clone());
                thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let started = Instant::now();
                    let mut conn: Option<(Conn, u64)> = None;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed)
                        && i < MAX_PER_CONN
                        && started.elapsed() < MAX_TIME
                    {
                        let r = req(i);
                        i += 1;
                        report.sent += 1;
                        let mut attempt = 0;
                        let resp = loop {
                            attempt += 1;
                            if conn.is_none() {
                                match Conn::connect(addr) {
                                    Ok(c) => conn = Some((c, 0)),
                                    Err(e) => break Err(format!("connect: {e}")),
                                }
                            }
                            let Some((c, served)) = conn.as_mut() else {
                                unreachable!()
                            };
                            match c.send(&r) {
                                Ok(resp) => {
                                    *served += 1;
                                    let close = resp
                                        .header("Connection")
                                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                                    if close {
                                        conn = None;
                                    }
                                    break Ok(resp);
                                }
                                Err(e) => {
                                    let reused = *served > 0;
                                    conn = None;
                                    if reused && retriable(&e) && attempt == 1 {
                                        report.retried += 1;
                                        continue;
                                    }
                                    break Err(format!("request {}: {e}", r.target()));
                                }
                            }
                        };
                        match resp.and_then(|resp| classify(&resp)) {
                            Ok(kind) => *report.by_kind.entry(kind).or_default() += 1,
                            Err(msg) => report.failures.push(msg),
                        }
                    }
                    report
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops every connection and sums up.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.threads {
            match t.join() {
                Ok(r) => total.merge(r),
                Err(_) => total.failures.push("a load thread panicked".into()),
            }
        }
        total
    }
}
