//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Requests are built as raw bytes with [`Req`] (nothing is normalised, so
//! tests can send odd or malformed requests on purpose) and responses are read
//! with a small, strict parser that keeps header case and order.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Default connect, read and write timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest status, header or chunk-size line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// Most header lines accepted in one response head.
const MAX_HEADERS: usize = 1000;
/// Most interim (1xx) responses skipped before giving up.
const MAX_INTERIM: usize = 32;
/// Largest body accepted (any framing).
const MAX_BODY: u64 = 256 * 1024 * 1024;

/// One parsed HTTP response (the final one; interim 1xx responses are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: String,
    /// Header fields in received order, names in received case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_first(&self.headers, name)
    }

    /// All values of header `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    /// Whether header `name` is present (case-insensitive).
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the status and body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "response body is not JSON ({e}): status {} {}, headers {:?}, body: {:?}",
                self.status,
                self.reason,
                self.headers,
                self.text()
            ),
        }
    }
}

pub(crate) fn header_first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(crate) fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Whether the comma-separated header `name` carries `token` (case-insensitive).
pub(crate) fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_all(headers, name)
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the (last) transfer coding of these headers is `chunked`.
pub(crate) fn is_chunked(headers: &[(String, String)]) -> bool {
    header_all(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|t| !t.is_empty())
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
}

#[derive(Clone, Debug)]
enum ReqBody {
    Fixed(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

/// Builder for one raw HTTP/1.x request.
///
/// Layout of [`Req::to_bytes`]: request line, `Host` (unless `.no_host()`),
/// the `.header()` fields in call order, `Connection: close` (if `.close()`),
/// then `Content-Length` / `Transfer-Encoding: chunked` for a body — each of
/// those two is skipped if the same header was already given with `.header()`,
/// so a test can send a wrong length on purpose.
#[derive(Clone, Debug)]
pub struct Req {
    method: String,
    target: String,
    version: String,
    host: Option<String>,
    no_host: bool,
    headers: Vec<(String, String)>,
    body: Option<ReqBody>,
    close: bool,
}

impl Req {
    /// A request with this method and request target, HTTP/1.1.
    pub fn new(method: &str, target: &str) -> Req {
        Req {
            method: method.to_string(),
            target: target.to_string(),
            version: "HTTP/1.1".to_string(),
            host: None,
            no_host: false,
            headers: Vec::new(),
            body: None,
            close: false,
        }
    }

    pub fn get(target: &str) -> Req {
        Req::new("GET", target)
    }

    pub fn post(target: &str) -> Req {
        Req::new("POST", target)
    }

    pub fn head(target: &str) -> Req {
        Req::new("HEAD", target)
    }

    /// Sets the Host header (default `localhost`).
    pub fn host(mut self, h: &str) -> Req {
        self.host = Some(h.to_string());
        self.no_host = false;
        self
    }

    /// Sends no Host header at all.
    pub fn no_host(mut self) -> Req {
        self.no_host = true;
        self
    }

    /// Appends a header field, exact case kept, repeats allowed.
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    /// A body sent with `Content-Length`.
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Req {
        self.body = Some(ReqBody::Fixed(b.into()));
        self
    }

    /// A body sent with `Transfer-Encoding: chunked`, one chunk per element
    /// (empty elements are skipped, they would end the body early).
    pub fn chunked_body(mut self, chunks: Vec<Vec<u8>>) -> Req {
        self.body = Some(ReqBody::Chunked(chunks));
        self
    }

    /// The protocol version of the request line, e.g. `HTTP/1.0`.
    pub fn version(mut self, v: &str) -> Req {
        self.version = v.to_string();
        self
    }

    /// Adds `Connection: close`.
    pub fn close(mut self) -> Req {
        self.close = true;
        self
    }

    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// The raw bytes of this request.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.target, self.version);
        if !self.no_host {
            let host = self.host.as_deref().unwrap_or("localhost");
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        }
        let mut body = Vec::new();
        match &self.body {
            None => {}
            Some(ReqBody::Fixed(b)) => {
                if header_first(&self.headers, "content-length").is_none() {
                    head.push_str(&format!("Content-Length: {}\r\n", b.len()));
                }
                body.extend_from_slice(b);
            }
            Some(ReqBody::Chunked(chunks)) => {
                if header_first(&self.headers, "transfer-encoding").is_none() {
                    head.push_str("Transfer-Encoding: chunked\r\n");
                }
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    body.extend_from_slice(c);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n\r\n");
            }
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// One keep-alive TCP connection. The reader is buffered and kept, so bytes
/// of a following (e.g. pipelined) response are not lost.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects (10 s timeout) with read/write timeouts of 10 s.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        Conn::from_stream(stream)
    }

    /// Like [`Conn::connect`], with the client socket bound to `local`
    /// (port 0) first, e.g. `127.0.0.2` to look like another client.
    pub fn connect_from(local: IpAddr, addr: SocketAddr) -> io::Result<Conn> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(local, 0).into())?;
        socket.connect_timeout(&addr.into(), DEFAULT_TIMEOUT)?;
        Conn::from_stream(socket.into())
    }

    /// Wraps an already connected stream (timeouts set to 10 s).
    pub fn from_stream(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// Read and write timeout (a zero duration is treated as 1 ms).
    pub fn set_timeout(&mut self, d: Duration) {
        let d = d.max(Duration::from_millis(1));
        let s = self.reader.get_ref();
        s.set_read_timeout(Some(d)).expect("set_read_timeout");
        s.set_write_timeout(Some(d)).expect("set_write_timeout");
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().expect("local_addr")
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().peer_addr()
    }

    /// The underlying stream (e.g. to shut down one direction).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Sends `req` and reads one response.
    pub fn send(&mut self, req: &Req) -> io::Result<Response> {
        self.send_raw(&req.to_bytes(), req.is_head())
    }

    /// Writes `raw` as-is and reads one response (`head`: the request was HEAD,
    /// so the response has no body).
    pub fn send_raw(&mut self, raw: &[u8], head: bool) -> io::Result<Response> {
        self.write_raw(raw)?;
        self.read_response(head)
    }

    /// Writes bytes without reading anything.
    pub fn write_raw(&mut self, raw: &[u8]) -> io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(raw)?;
        s.flush()
    }

    /// Reads the next response (e.g. after pipelined writes).
    pub fn read_response(&mut self, head: bool) -> io::Result<Response> {
        read_response(&mut self.reader, head)
    }

    /// Waits until the peer closes the connection (EOF or reset) and returns
    /// the bytes received before that. Bounded by the read timeout.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match (&mut self.reader).take(MAX_BODY).read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(out),
            Err(e) => Err(e),
        }
    }
}

/// Sends `req` on a new connection and reads one response.
pub fn send(addr: SocketAddr, req: &Req) -> io::Result<Response> {
    Conn::connect(addr)?.send(req)
}

/// Writes `raw` on a new connection and reads one response (no body is read
/// if `raw` starts with `HEAD `).
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    Conn::connect(addr)?.send_raw(raw, raw.starts_with(b"HEAD "))
}

/// GET `target` with this Host on a new connection; panics on an io error.
pub fn get(addr: SocketAddr, host: &str, target: &str) -> Response {
    match send(addr, &Req::get(target).host(host)) {
        Ok(r) => r,
        Err(e) => panic!(
            "GET {target} (Host: {host}) to {addr} failed: {e} ({:?})",
            e.kind()
        ),
    }
}

/// Parses one response from bytes (handy to test the parser itself).
pub fn parse_response(bytes: &[u8], head: bool) -> io::Result<Response> {
    read_response(&mut BufReader::new(bytes), head)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one line (up to `\n`) of at most `MAX_LINE` bytes, without the line
/// ending. `Ok(None)` on EOF before any byte.
pub(crate) fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n as u64 >= MAX_LINE {
            return Err(invalid(format!("line longer than {MAX_LINE} bytes")));
        }
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "connection closed in the middle of a line: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        ));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Reads header lines up to and including the empty line.
pub(crate) fn read_headers<R: BufRead>(r: &mut R) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the header block",
            )
        })?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(invalid(format!("more than {MAX_HEADERS} header lines")));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line without a colon: {line:?}")))?;
        headers.push((k.to_string(), v.trim().to_string()));
    }
}

/// Decodes a chunked body (chunk extensions and trailers are ignored).
pub(crate) fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a chunk size",
            )
        })?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_str, 16)
            .map_err(|_| invalid(format!("bad chunk size line: {line:?}")))?;
        if size == 0 {
            // Trailer section, up to the empty line.
            read_headers(r)?;
            return Ok(body);
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(invalid(format!(
                "chunked body larger than {MAX_BODY} bytes"
            )));
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        r.read_exact(&mut body[start..])?;
        let end = read_line(r)?;
        if end.as_deref() != Some("") {
            return Err(invalid(format!("chunk not followed by CRLF: {end:?}")));
        }
    }
}

/// Reads one final response from `r`, skipping 1xx interim responses
/// (except 101, which is final).
pub fn read_response<R: BufRead>(r: &mut R, head: bool) -> io::Result<Response> {
    for _ in 0..MAX_INTERIM {
        let line = read_line(r)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before any response byte",
            )
        })?;
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("").to_string();
        if !version.starts_with("HTTP/") || code.len() != 3 {
            return Err(invalid(format!("not an HTTP status line: {line:?}")));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| invalid(format!("bad status code in {line:?}")))?;
        let headers = read_headers(r)?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if head || status == 204 || status == 304 || status == 101 {
            Vec::new()
        } else if is_chunked(&headers) {
            read_chunked(r)?
        } else if let Some(cl) = header_first(&headers, "content-length") {
            let len: u64 = cl
                .trim()
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length: {cl:?}")))?;
            if len > MAX_BODY {
                return Err(invalid(format!("Content-Length {len} too large")));
            }
            let mut body = vec![0; len as usize];
            r.read_exact(&mut body)?;
            body
        } else {
            let mut body = Vec::new();
            r.take(MAX_BODY).read_to_end(&mut body)?;
            body
        };
        return Ok(Response {
            status,
            reason,
            version,
            headers,
            body,
        });
    }
    Err(invalid(format!(
        "more than {MAX_INTERIM} interim responses"
    )))
}
