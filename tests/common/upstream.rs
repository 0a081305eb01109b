//! An in-process fake upstream HTTP/1.1 server (std threads, one per connection).
//!
//! Every request is recorded before its response is written, so a test can
//! look at what the gateway forwarded with [`Upstream::last`] /
//! [`Upstream::wait_requests`].

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http::{
    has_token, header_all, header_first, is_chunked, read_chunked, read_headers, read_line,
};

/// Largest request body accepted.
const MAX_BODY: u64 = 64 * 1024 * 1024;
/// A connection idle (or stuck mid-request) this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the upstream answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with a JSON description of the request (see [`echo_json`]).
    Echo,
    /// That status with body `{"status": N}` (no body for 204/304).
    Status(u16),
    /// Sleep, then Echo.
    Delay(Duration),
    /// Echo plus these extra response headers (added verbatim).
    Headers(Vec<(String, String)>),
    /// Read the request, then close the socket without answering.
    Close,
    /// Read the request, answer `this is not http\r\n\r\n` and close.
    Garbage,
    /// 200 with a chunked body made of these chunks.
    Chunked(Vec<Vec<u8>>),
    /// The status and JSON body this function picks for the request (e.g. a fake WeChat
    /// jscode2session answering by `js_code`).
    Answer(fn(&Received) -> (u16, String)),
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The raw request target.
    pub target: String,
    /// The target up to `?`.
    pub path: String,
    /// The target after the first `?`, if any.
    pub query: Option<String>,
    pub version: String,
    /// Header fields in received order, names in received case.
    pub headers: Vec<(String, String)>,
    /// The decoded body (de-chunked if it was chunked).
    pub body: Vec<u8>,
    /// The client (normally the gateway) side of the connection.
    pub peer: SocketAddr,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_first(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The Echo body for a request: `{"method", "target", "path", "query",
/// "version", "headers": [[name, value], ...], "body", "peer"}`.
pub fn echo_json(r: &Received) -> serde_json::Value {
    serde_json::json!({
        "method": r.method,
        "target": r.target,
        "path": r.path,
        "query": r.query,
        "version": r.version,
        "headers": r.headers.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&r.body),
        "peer": r.peer.to_string(),
    })
}

struct Shared {
    behavior: Mutex<Behavior>,
    requests: Mutex<Vec<Received>>,
    arrived: Condvar,
    stop: AtomicBool,
    /// Clones of the open connections (by id), shut down on drop.
    conns: Mutex<Vec<(u64, TcpStream)>>,
}

/// Locks, ignoring poisoning (a panicking test thread must not hide the data).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts on 127.0.0.1 with a free port.
    pub fn start(b: Behavior) -> Upstream {
        Upstream::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), b)
    }

    /// Starts on `ip` with a free port; panics if it can't bind.
    pub fn start_on(ip: IpAddr, b: Behavior) -> Upstream {
        Upstream::try_start_on(SocketAddr::new(ip, 0), b)
            .unwrap_or_else(|e| panic!("upstream: cannot bind {ip}:0: {e}"))
    }

    /// Starts on exactly `addr` (port 0 = any free port).
    pub fn try_start_on(addr: SocketAddr, b: Behavior) -> io::Result<Upstream> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behavior: Mutex::new(b),
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("upstream-accept-{addr}"))
            .spawn(move || accept_loop(listener, sh))?;
        Ok(Upstream {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the behaviour for requests read from now on.
    pub fn set_behavior(&self, b: Behavior) {
        *lock(&self.shared.behavior) = b;
    }

    /// All requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared.requests).clone()
    }

    /// The latest request; panics if none arrived.
    pub fn last(&self) -> Received {
        lock(&self.shared.requests)
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("upstream {} has received no request", self.addr))
    }

    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Waits until at least `n` requests arrived or `timeout` passed, and
    /// returns all received so far (possibly fewer than `n`).
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut reqs = lock(&self.shared.requests);
        while reqs.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            reqs = self
                .shared
                .arrived
                .wait_timeout(reqs, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        reqs.clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection to ourselves.
        let wake_ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let woke = TcpStream::connect_timeout(
            &SocketAddr::new(wake_ip, self.addr.port()),
            Duration::from_secs(2),
        )
        .is_ok();
        for (_, c) in lock(&self.shared.conns).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            if woke {
                let _ = h.join();
            }
        }
    }
}

/// An address on 127.0.0.1 where nothing listens (bind :0, read the port, drop).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut failures = 0;
    let mut next_id: u64 = 0;
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(x) => {
                failures = 0;
                x
            }
            Err(_) => {
                // e.g. EMFILE: back off a little, give up if it persists.
                failures += 1;
                if failures > 100 {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        if let Ok(c) = stream.try_clone() {
            lock(&shared.conns).push((id, c));
        }
        let sh = shared.clone();
        let _ = thread::Builder::new()
            .name(format!("upstream-conn-{peer}"))
            .spawn(move || {
                let _ = serve_conn(&stream, peer, &sh);
                // The clone kept in `conns` holds the socket open: close it
                // explicitly and forget it.
                let _ = stream.shutdown(Shutdown::Both);
                lock(&sh.conns).retain(|(i, _)| *i != id);
            });
    }
}

fn bad_request(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one request; `Ok(None)` on a clean EOF between requests.
fn read_request<R: io::BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
    peer: SocketAddr,
) -> io::Result<Option<Received>> {
    let line = match read_line(r)? {
        None => return Ok(None),
        Some(l) => l,
    };
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None)
            if !m.is_empty() && !t.is_empty() && v.starts_with("HTTP/") =>
        {
            (m.to_string(), t.to_string(), v.to_string())
        }
        _ => return Err(bad_request(format!("bad request line: {line:?}"))),
    };
    let headers = read_headers(r)?;
    if has_token(&headers, "expect", "100-continue") {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    let body = if is_chunked(&headers) {
        read_chunked(r)?
    } else if let Some(cl) = header_first(&headers, "content-length") {
        let len: u64 = cl
            .trim()
            .parse()
            .map_err(|_| bad_request(format!("bad Content-Length: {cl:?}")))?;
        if len > MAX_BODY {
            return Err(bad_request(format!("Content-Length {len} too large")));
        }
        let mut body = vec![0; len as usize];
        r.read_exact(&mut body)?;
        body
    } else {
        Vec::new()
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.clone(), None),
    };
    Ok(Some(Received {
        method,
        target,
        path,
        query,
        version,
        headers,
        body,
        peer,
    }))
}

/// Whether the connection may carry another request after this one.
fn keep_alive(r: &Received) -> bool {
    if has_token(&r.headers, "connection", "close") {
        return false;
    }
    if r.version == "HTTP/1.0" {
        return has_token(&r.headers, "connection", "keep-alive");
    }
    true
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes a response with Content-Length (none for 204/304, and no body
/// bytes for HEAD).
fn write_response(
    w: &mut impl Write,
    req: &Received,
    status: u16,
    content_type: &str,
    extra: &[(String, String)],
    body: &[u8],
    ka: bool,
) -> io::Result<()> {
    let no_body = status == 204 || status == 304;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if !no_body {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(connection_header(req, ka));
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !no_body && req.method != "HEAD" {
        out.extend_from_slice(body);
    }
    w.write_all(&out)?;
    w.flush()
}

fn connection_header(req: &Received, ka: bool) -> &'static str {
    match (ka, req.version == "HTTP/1.0") {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    }
}

fn serve_conn(stream: &TcpStream, peer: SocketAddr, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let req = match read_request(&mut r, &mut w, peer) {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = w.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = w.shutdown(Shutdown::Both);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        // Record before answering, and pick the behaviour at that moment.
        let behavior = lock(&shared.behavior).clone();
        {
            lock(&shared.requests).push(req.clone());
            shared.arrived.notify_all();
        }
        let ka = keep_alive(&req);
        match behavior {
            Behavior::Echo => echo(&mut w, &req, &[], ka)?,
            Behavior::Headers(extra) => echo(&mut w, &req, &extra, ka)?,
            Behavior::Delay(d) => {
                thread::sleep(d);
                echo(&mut w, &req, &[], ka)?
            }
            Behavior::Status(s) => {
                let body = serde_json::json!({ "status": s }).to_string();
                write_response(
                    &mut w,
                    &req,
                    s,
                    "application/json",
                    &[],
                    body.as_bytes(),
                    ka,
                )?
            }
            Behavior::Answer(f) => {
                let (status, body) = f(&req);
                write_response(
                    &mut w,
                    &req,
                    status,
                    "application/json",
                    &[],
                    body.as_bytes(),
                    ka,
                )?
            }
            Behavior::Close => {
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            Behavior::Garbage => {
                let _ = w.write_all(b"this is not http\r\n\r\n");
                let _ = w.flush();
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            Behavior::Chunked(chunks) => {
                let mut head = String::from(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n",
                );
                head.push_str(connection_header(&req, ka));
                head.push_str("\r\n");
                w.write_all(head.as_bytes())?;
                if req.method != "HEAD" {
                    for c in chunks.iter().filter(|c| !c.is_empty()) {
                        let mut out = format!("{:x}\r\n", c.len()).into_bytes();
                        out.extend_from_slice(c);
                        out.extend_from_slice(b"\r\n");
                        w.write_all(&out)?;
                        w.flush()?;
                    }
                    w.write_all(b"0\r\n\r\n")?;
                }
                w.flush()?;
            }
        }
        if !ka {
            let _ = w.shutdown(Shutdown::Write);
            // Let the client read everything before the socket is dropped
            // (avoids an RST racing the response), bounded by a short timeout.
            let deadline = Instant::now() + Duration::from_secs(2);
            let _ = r
                .get_ref()
                .set_read_timeout(Some(Duration::from_millis(200)));
            let mut sink = [0u8; 4096];
            while Instant::now() < deadline {
                match r.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            return Ok(());
        }
    }
}

fn echo(
    w: &mut impl Write,
    req: &Received,
    extra: &[(String, String)],
    ka: bool,
) -> io::Result<()> {
    let body = echo_json(req).to_string();
    write_response(w, req, 200, "application/json", extra, body.as_bytes(), ka)
}
