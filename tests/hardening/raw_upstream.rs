//! A deliberately broken upstream: it reads a request header, answers `100 Continue`, then
//! closes or goes silent. The connections it holds are closed when it is dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum After100 {
    /// Close the connection right after the interim response.
    Close,
    /// Keep the connection open and say nothing more.
    Silent,
}

pub struct RawUpstream {
    addr: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
    pub accepted: Arc<AtomicUsize>,
}

impl RawUpstream {
    pub fn start(mode: After100) -> RawUpstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let held = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (h, a) = (held.clone(), accepted.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    if !read_header(&mut stream) {
                        return;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    let _ = stream.flush();
                    match mode {
                        After100::Close => {
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                        After100::Silent => h.lock().unwrap().push(stream),
                    }
                });
            }
        });
        RawUpstream {
            addr,
            held,
            accepted,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Reads up to the end of a request header; false on EOF or timeout.
pub fn read_header(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
        if buf.len() > 64 * 1024 {
            return false;
        }
    }
    true
}

/// A listener on loopback that runs `handle` for each connection in a thread of its own.
pub fn serve_each<F>(handle: F) -> std::net::SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let handle = handle.clone();
            thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                handle(conn)
            });
        }
    });
    addr
}
