//! Relaying bytes both ways between a client and an instance: bounded buffers (a side is read
//! only when what was read from it has been written to the other), half-close passed on, both
//! sides closed when either fails, when the connection stays silent for the idle timeout, or
//! when `stop` says so.

use prometheus::IntCounter;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Per direction. The relay holds at most two of these per connection: memory stays bounded
/// however fast one side sends and however slow the other reads.
pub const BUFFER: usize = 16 * 1024;

/// How a relayed connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides finished their sending (each end-of-stream passed on to the other).
    Closed,
    /// Reading from or writing to the client failed (reset, broken pipe).
    ClientError,
    /// Reading from or writing to the instance failed.
    InstanceError,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout,
    /// A reload took the client out of `allow` (or removed the stream).
    Revoked,
    /// The process stopped and the grace period ran out.
    Shutdown,
}

impl End {
    pub fn label(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::ClientError => "client_error",
            End::InstanceError => "instance_error",
            End::IdleTimeout => "idle_timeout",
            End::Revoked => "revoked",
            End::Shutdown => "shutdown",
        }
    }
}

const NO_FAILURE: u8 = 0;
const CLIENT: u8 = 1;
const INSTANCE: u8 = 2;

/// Shared by both directions and the idle timer: when bytes last moved, who failed first.
struct Meter {
    started: Instant,
    /// Milliseconds from `started` to the last read or write that moved bytes.
    last: AtomicU64,
    failed: AtomicU8,
}

impl Meter {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn fail(&self, side: u8) {
        let _ =
            self.failed
                .compare_exchange(NO_FAILURE, side, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Bytes delivered so far, readable while the relay runs (and after it was cancelled).
#[derive(Debug, Default)]
pub struct Tally {
    pub to_instance: AtomicU64,
    pub to_client: AtomicU64,
}

impl Tally {
    pub fn get(&self) -> (u64, u64) {
        (
            self.to_instance.load(Ordering::Relaxed),
            self.to_client.load(Ordering::Relaxed),
        )
    }
}

/// One side of the connection, counting what is written to it.
struct Metered<'a, S> {
    io: &'a mut S,
    meter: &'a Meter,
    side: u8,
    written: &'a AtomicU64,
    counter: &'a IntCounter,
}

impl<S> Metered<'_, S> {
    fn note<T>(&self, r: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(_)) = r {
            self.meter.fail(self.side);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.meter.touch();
        }
        self.note(&r);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.written.fetch_add(n as u64, Ordering::Relaxed);
                self.counter.inc_by(n as u64);
                self.meter.touch();
            }
        }
        self.note(&r);
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.io).poll_flush(cx);
        self.note(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut *self.io).poll_shutdown(cx);
        self.note(&r);
        r
    }
}

/// How the relay ended (the bytes are in the [`Tally`]).
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    /// The I/O error that ended it, if one did.
    pub error: Option<io::Error>,
}

/// Relays until both sides are done, one fails, the connection idles for `idle`, or `stop`
/// resolves (with its reason), counting into `tally` and the two counters. The caller closes
/// both sockets by dropping them.
pub async fn relay<C, U>(
    client: &mut C,
    instance: &mut U,
    tally: &Tally,
    to_instance: &IntCounter,
    to_client: &IntCounter,
    idle: Duration,
    stop: impl Future<Output = End>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let meter = Meter {
        started: Instant::now(),
        last: AtomicU64::new(0),
        failed: AtomicU8::new(NO_FAILURE),
    };
    let mut c = Metered {
        io: client,
        meter: &meter,
        side: CLIENT,
        written: &tally.to_client,
        counter: to_client,
    };
    let mut u = Metered {
        io: instance,
        meter: &meter,
        side: INSTANCE,
        written: &tally.to_instance,
        counter: to_instance,
    };
    let mut error = None;
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, BUFFER, BUFFER) => match r {
            Ok(_) => End::Closed,
            Err(e) => {
                error = Some(e);
                match meter.failed.load(Ordering::Relaxed) {
                    INSTANCE => End::InstanceError,
                    _ => End::ClientError,
                }
            }
        },
        () = meter.idle(idle) => End::IdleTimeout,
        end = stop => end,
    };
    Outcome { end, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn counter() -> IntCounter {
        IntCounter::new("t", "t").unwrap()
    }

    #[tokio::test]
    async fn half_close_passes_through_and_the_answer_still_arrives() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut instance_end, mut instance) = tokio::io::duplex(64);
        let (cin, cout) = (counter(), counter());
        let relay = tokio::spawn(async move {
            let tally = Tally::default();
            let out = relay(
                &mut client_end,
                &mut instance_end,
                &tally,
                &cin,
                &cout,
                Duration::from_secs(30),
                std::future::pending(),
            )
            .await;
            (out, tally.get())
        });
        // The instance answers only after the request is complete (its end of stream).
        let server = tokio::spawn(async move {
            let mut req = Vec::new();
            instance.read_to_end(&mut req).await.unwrap();
            let answer = vec![7u8; 100_000];
            instance.write_all(&answer).await.unwrap();
            instance.shutdown().await.unwrap();
            req
        });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.len(), 100_000);
        assert_eq!(server.await.unwrap(), b"request");
        let (out, bytes) = relay.await.unwrap();
        assert_eq!(out.end, End::Closed);
        assert_eq!(bytes, (7, 100_000));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_it_and_traffic_keeps_it() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut instance_end, _instance) = tokio::io::duplex(64);
        let (cin, cout) = (counter(), counter());
        let relay = tokio::spawn(async move {
            let tally = Tally::default();
            let out = relay(
                &mut client_end,
                &mut instance_end,
                &tally,
                &cin,
                &cout,
                Duration::from_secs(10),
                std::future::pending(),
            )
            .await;
            (out, tally.get())
        });
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
        }
        assert!(
            !relay.is_finished(),
            "traffic every 6 s keeps a 10 s idle timeout away"
        );
        let (out, bytes) = relay.await.unwrap();
        assert_eq!(out.end, End::IdleTimeout);
        assert_eq!(bytes, (5, 0));
    }
}
