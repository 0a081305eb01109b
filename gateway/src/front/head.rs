//! Reading one request header whole: the keep-alive timeout before its first byte, the header
//! timeout from its first byte to its end, and a size limit.

use super::idle::IdleDeadline;
use bytes::BytesMut;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::{timeout_at, Instant};

/// Bytes read while waiting for a request: most request headers fit in one such read. They
/// live in the connection's task while it waits, so this is also most of a waiting
/// connection's own memory.
const FIRST_READ: usize = 1024;

/// How waiting for a request header ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A whole header, ending at `end` (and whatever followed it in the same reads).
    Ready { buf: BytesMut, end: usize },
    /// The client closed or reset the connection, or the server is stopping.
    Closed,
    /// No request within the keep-alive timeout.
    Idle,
    /// The header did not arrive whole within the header timeout.
    Slow,
    /// The header grew past the limit before it ended.
    TooLarge,
}

/// Where the header in `buf` ends (just past its empty line), searching from `from`.
/// Line ends may be CRLF or a bare LF, as Pingora's parser accepts; empty lines before the
/// request line are skipped (RFC 9112 §2.2).
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut i = from.max(start);
    // memchr looks for line ends many bytes at a time: a byte-by-byte scan cost 1,200
    // instructions per request on the benchmark's header (callgrind), more on longer ones.
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
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
pub async fn read_head(
    stream: &mut Stream,
    idle: Duration,
    header: Duration,
    max: usize,
    shutdown: &ShutdownWatch,
) -> Head {
    // Not zeroed first: the read fills what it writes (`ReadBuf::uninit`), and only that is
    // copied out. Zeroing the 1 KB on every keep-alive wait wrote 16 cache lines of a task that
    // 500 busy connections had pushed out of the cache: 16 misses per request (callgrind's
    // cache simulation, bench/profile.md). The `ReadBuf` lives within one poll: kept in the
    // task across the wait, it grew every waiting connection by a quarter of a KB (its task
    // went past one of the allocator's size classes).
    let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    let read = poll_fn(|cx| {
        let mut filled = ReadBuf::uninit(&mut first);
        match Pin::new(&mut *stream).poll_read(cx, &mut filled) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(BytesMut::from(filled.filled()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    });
    // The keep-alive deadline is a slot in the worker's idle table (`idle.rs`), not a timer: a
    // keep-alive wait starts after every response. A tokio timer registered while the
    // runtime's wheel is empty also woke the runtime's own driver (an eventfd write and an
    // extra `epoll_wait` per request). `biased`: the read is polled first, and the deadline
    // is only registered when no request is there yet. The header deadline below is rare and
    // stays on tokio's timer.
    let mut buf = tokio::select! {
        biased;
        r = read => match r {
            Ok(buf) if !buf.is_empty() => buf,
            _ => return Head::Closed,
        },
        // Also ready when the server shuts down (the sweeper watches for it).
        _ = IdleDeadline::new(idle, shutdown) => return Head::Idle,
    };
    if let Some(end) = head_end(&buf, 0) {
        return Head::Ready { buf, end };
    }
    // The header's deadline counts from its first bytes; read the clock only for a header
    // that did not come whole in the first read.
    let deadline = Instant::now() + header;
    let n = buf.len();
    buf.reserve((2 * n).max(4096).min(max + 1).saturating_sub(n));
    loop {
        if buf.len() > max {
            return Head::TooLarge;
        }
        let searched = buf.len().saturating_sub(2);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(buf.len().max(1024));
        }
        match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) => return Head::Slow,
        }
        if let Some(end) = head_end(&buf, searched) {
            if end > max {
                return Head::TooLarge;
            }
            return Head::Ready { buf, end };
        }
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
