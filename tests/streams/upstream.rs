//! A TCP instance for stream tests: counts the connections it accepts, can read and parse a
//! PROXY v2 header first, then echoes, greets, or answers after the request's end.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Sends `greeting` first, then echoes everything.
    Echo { greeting: Option<&'static str> },
    /// Reads to the end of the request, then sends `size` bytes of a known pattern and closes.
    AnswerAfterEof { size: usize },
}

/// What a PROXY v2 header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    pub family: u8,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

pub struct Instance {
    pub addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    headers: Arc<Mutex<Vec<Result<ProxyHeader, String>>>>,
}

/// The byte at offset `i` of an `AnswerAfterEof` answer.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

impl Instance {
    pub fn start(mode: Mode, proxy_v2: bool) -> Instance {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind instance");
        let addr = l.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepts.clone(), headers.clone());
        thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                thread::spawn(move || {
                    if proxy_v2 {
                        let parsed = read_proxy_v2(&mut s);
                        let ok = parsed.is_ok();
                        h.lock().unwrap().push(parsed);
                        if !ok {
                            return;
                        }
                    }
                    serve(s, mode);
                });
            }
        });
        Instance {
            addr,
            accepts,
            headers,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    pub fn headers(&self) -> Vec<Result<ProxyHeader, String>> {
        self.headers.lock().unwrap().clone()
    }
}

fn serve(mut s: TcpStream, mode: Mode) {
    match mode {
        Mode::Echo { greeting } => {
            if let Some(g) = greeting {
                if s.write_all(g.as_bytes()).is_err() {
                    return;
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        Mode::AnswerAfterEof { size } => {
            let mut req = Vec::new();
            if s.read_to_end(&mut req).is_err() {
                return;
            }
            let answer: Vec<u8> = (0..size).map(pattern).collect();
            let _ = s.write_all(&answer);
            // Dropping closes the socket: the end of the answer.
        }
    }
}

/// Reads and checks a PROXY v2 header (haproxy's proxy-protocol.txt, 2.2), byte by byte.
fn read_proxy_v2(s: &mut TcpStream) -> Result<ProxyHeader, String> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head)
        .map_err(|e| format!("header: {e}"))?;
    if &head[..12] != b"\r\n\r\n\0\r\nQUIT\n" {
        return Err(format!("bad signature {:?}", &head[..12]));
    }
    if head[12] != 0x21 {
        return Err(format!("version/command {:#x}, want 0x21", head[12]));
    }
    let family = head[13];
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
    match (family, len) {
        (0x11, 12) => {
            let ip = |i: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[i],
                    body[i + 1],
                    body[i + 2],
                    body[i + 3],
                ))
            };
            Ok(ProxyHeader {
                family,
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (0x21, 36) => {
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[i..i + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Ok(ProxyHeader {
                family,
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => Err(format!("family {family:#x} with length {len}")),
    }
}
